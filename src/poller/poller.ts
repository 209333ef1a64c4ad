import { randomBytes } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { systemClock, type Clock } from '../clock.js';
import { isStorageError, storageErrorOf } from '../db/errors.js';
import type { PredictionPatch, PredictionStore } from '../db/predictions.js';
import { terminalStatuses, type PredictionRow, type PredictionStatus } from '../db/schema.js';
import type { Logger } from '../log.js';
import { MediaError, type MediaStore } from '../storage/media.js';
import type { UpstreamPrediction, WaveSpeedClient } from '../upstream/wavespeed.js';
import { classify, decideFailure, type Step } from './decide.js';
import { changesVisibleState, patchFromUpstream } from './mapping.js';
import { Pauses, type Pause, type PauseKind } from './pauses.js';
import type { Recorder } from './record.js';
import { findSubmittedTask } from './reconcile.js';
import { backoffDelay, nextPollDelay, type PollSchedule } from './schedule.js';

export interface PollerOptions {
  store: PredictionStore;
  client: WaveSpeedClient;
  recorder: Recorder;
  log: Logger;
  schedule: PollSchedule;
  /** Most upstream requests in flight at once. */
  concurrency: number;
  /** A prediction with no final status this long after creation is failed. */
  maxAgeMs: number;
  /** Poll interval for predictions whose updates come by webhook: a slow safety net. */
  webhookFallbackMs: number;
  /** Longest wait a Retry-After may impose; a larger one is cut to this. */
  retryAfterMaxMs: number;
  /** Submissions per prediction that may have reached upstream; past it, FAILED with SUBMISSION_UNCERTAIN. */
  maxSubmissions: number;
  /** How long a submission with no certain answer is looked for upstream before it may be sent again. */
  reconcileGraceMs: number;
  /** Builds the webhook URL handed to upstream; webhooks are off without it. */
  webhookUrl?: (predictionId: string, token: string) => string;
  /** Where completed outputs are copied; outputs are not kept without it. */
  media?: MediaStore;
  /** @default systemClock */
  clock?: Clock;
  /** Longest sleep when nothing is due; a nudge wakes the poller sooner. @default 5000 */
  idleMs?: number;
}

/** What the poller does, as typed events: tests await them instead of sleeping, and logs or metrics can follow. */
export interface PollerEvents {
  /** Upstream accepted (or reconciliation found) the task of this prediction. */
  submitted: [{ id: string; upstreamId: string; adopted: boolean }];
  /** A submission had no certain answer; the prediction now waits for reconciliation. */
  uncertain: [{ id: string; error: string }];
  /** One result read: the status as upstream reported it. */
  polled: [{ id: string; status: string }];
  /** A visible change was written and published. */
  recorded: [{ id: string; status: PredictionStatus }];
  /** The prediction ended FAILED. */
  failed: [{ id: string; error: string }];
  /** All upstream work is held off. */
  paused: [Pause];
  /** A pause ended by a success. */
  resumed: [{ kind: PauseKind }];
}

export interface PollerHealth {
  running: boolean;
  pauses: Pause[];
}

/** First retry delay after a transient failure; doubles per attempt up to the schedule's max. */
const RETRY_BASE_MS = 500;
/** Download attempts for a completed prediction's outputs before it completes without a kept copy. */
const KEEP_ATTEMPTS = 5;
/** Webhook deliveries force at most one re-poll of a prediction per this long. */
const FORCED_POLL_GAP_MS = 5000;
/** Longest backoff of a poller-wide pause (account probe, storage retry, crashed pass). */
const PAUSE_CAP_MS = 60_000;

/**
 * The one background scheduler: submits predictions that have no upstream id yet, reconciles
 * submissions whose outcome is unknown, then polls in-flight ones when their `nextPollAt` comes.
 * All state lives in SQLite, so a new process picks up exactly where a dead one stopped.
 *
 * The money rule: a submission is sent only after its intent (`submitAttempts`, `submitStartedAt`)
 * has committed, and a submission that may have reached upstream is never sent again until
 * upstream's task list has been searched for it for `reconcileGraceMs`.
 */
export class Poller extends EventEmitter<PollerEvents> {
  private readonly clock: Clock;
  private readonly inFlight = new Map<string, Promise<void>>();
  /** Webhook deliveries that arrived while their prediction was being polled: poll once more, at this time. */
  private readonly repoll = new Map<string, number>();
  /** When each prediction was last forced due by a webhook (a future time: a forced poll is already scheduled). */
  private readonly forcedAt = new Map<string, number>();
  /** Predictions whose step crashed and whose reschedule may not have committed: not before this. */
  private readonly cooldown = new Map<string, number>();
  private readonly pauses = new Pauses(1000, PAUSE_CAP_MS);
  private probing = false;
  private running = false;
  private loopPromise?: Promise<void>;
  private wakeUp?: () => void;
  private wakePending = false;
  /** Cancels in-flight polls and downloads on stop, so shutdown waits for writes, not for timeouts (submissions are let finish). */
  private readonly shutdown = new AbortController();

  constructor(private readonly o: PollerOptions) {
    super();
    this.clock = o.clock ?? systemClock;
  }

  start(): void {
    if (this.running) return;
    this.running = true;
    this.loopPromise = this.loop();
  }

  /** Stops taking new work, cancels in-flight polls and downloads, and waits until every outcome is written. */
  async stop(): Promise<void> {
    this.running = false;
    this.shutdown.abort();
    this.wakeUp?.();
    await this.loopPromise;
    await Promise.allSettled(this.inFlight.values());
  }

  /** For /readyz: whether the loop runs and what holds it off. */
  health(): PollerHealth {
    return { running: this.running, pauses: this.pauses.list() };
  }

  /**
   * Something became due (a new prediction); look soon instead of at the next timer. Nudges in
   * one turn of the event loop share one pass: under a burst of createVideo calls, a pass (and its
   * due-query) per request cost ~100 µs each (bench/throughput.ts).
   */
  nudge(): void {
    if (this.wakePending) return;
    this.wakePending = true;
    setImmediate(() => {
      this.wakePending = false;
      this.wakeUp?.();
    });
  }

  /**
   * A webhook said this prediction changed: read it from upstream soon (unless it is final). At
   * most one forced read per prediction per 5 s, so a flood of deliveries cannot become a flood of
   * GETs; a delivery inside that gap is not dropped but moves the read to the gap's end.
   */
  pollNow(id: string): void {
    const now = this.clock.now().getTime();
    const last = this.forcedAt.get(id) ?? -Infinity;
    if (last > now) return; // a forced read is already scheduled
    const at = Math.max(now, last + FORCED_POLL_GAP_MS);
    if (this.forcedAt.size > 10_000) for (const [k, t] of this.forcedAt) if (now - t >= FORCED_POLL_GAP_MS) this.forcedAt.delete(k);
    this.forcedAt.set(id, at);
    if (this.inFlight.has(id)) this.repoll.set(id, at);
    else this.o.store.makeDue(id, new Date(at));
    this.nudge();
  }

  /** One pass: start everything due (within the concurrency bound) and wait for it. For tests. */
  async runOnce(): Promise<void> {
    this.startDue();
    await Promise.allSettled(this.inFlight.values());
  }

  private async loop(): Promise<void> {
    while (this.running) {
      try {
        await this.probeAccountIfDue();
        this.startDue();
        if (this.pauses.clear('crash')) this.emit('resumed', { kind: 'crash' });
      } catch (err) {
        // Whatever broke (a corrupted index page under the due-query, say) is logged once and
        // retried with backoff; the loop itself never dies of it.
        this.hold(isStorageError(err) ? 'storage' : 'crash', `poller pass failed: ${(err as Error).message}`, err);
      }
      await this.sleep(this.delayUntilNextDue());
    }
  }

  private hold(kind: PauseKind, reason: string, err?: unknown, waitMs?: number): void {
    const { pause, isNew } = this.pauses.hold(kind, reason, this.clock.now().getTime(), waitMs);
    if (isNew) {
      this.o.log.warn({ err, pause: { kind, until: new Date(pause.until).toISOString() } }, reason);
      this.emit('paused', pause);
    }
  }

  private resume(kind: PauseKind): void {
    if (!this.pauses.clear(kind)) return;
    this.o.log.info({ kind }, 'pause over: upstream work resumes');
    this.emit('resumed', { kind });
    this.nudge();
  }

  /**
   * While the account is unusable nothing is sent; once its backoff has run out, one free request
   * (the first page of the task list) tells whether the key works again.
   */
  private async probeAccountIfDue(): Promise<void> {
    const pause = this.pauses.get('account');
    if (!pause || this.probing || this.clock.now().getTime() < pause.until) return;
    this.probing = true;
    try {
      await this.o.client.listPredictions(1, 1, { signal: this.shutdown.signal });
      this.resume('account');
    } catch (err) {
      if (!this.shutdown.signal.aborted) this.hold('account', pause.reason, undefined);
    } finally {
      this.probing = false;
    }
  }

  private delayUntilNextDue(): number {
    const idle = this.o.idleMs ?? 5000;
    const now = this.clock.now().getTime();
    const pausedUntil = this.pauses.until();
    if (now < pausedUntil) return pausedUntil - now;
    const next = this.o.store.nextDueAt(this.inFlight);
    if (!next) return idle;
    const delay = next.getTime() - now;
    // Due but not started means every slot is busy (a finishing request wakes us) or the row cools down.
    if (delay <= 0) return this.inFlight.size >= this.o.concurrency || this.cooldown.size ? Math.min(idle, 1000) : 0;
    return Math.min(delay, idle);
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = this.clock.setTimeout(done, ms);
      function done() {
        timer.clear();
        resolve();
      }
      this.wakeUp = done;
    });
  }

  private startDue(): void {
    const now = this.clock.now().getTime();
    const free = this.o.concurrency - this.inFlight.size;
    if (free <= 0 || now < this.pauses.until()) return;
    for (const [id, until] of this.cooldown) if (until <= now) this.cooldown.delete(id);
    const ids = this.o.store
      .due(new Date(now), free + this.inFlight.size + this.cooldown.size)
      .filter((id) => !this.inFlight.has(id) && !this.cooldown.has(id));
    for (const id of ids.slice(0, free)) {
      const work = this.step(id)
        // The step's writes committed (a storage error would have thrown): storage works again.
        .then(() => this.resume('storage'))
        .catch((err) => this.onStepCrash(id, err))
        .finally(() => {
          this.inFlight.delete(id);
          const repollAt = this.repoll.get(id);
          if (repollAt !== undefined) {
            this.repoll.delete(id);
            try {
              this.o.store.makeDue(id, new Date(repollAt));
            } catch {} // the safety-net poll still comes
          }
          this.nudge();
        });
      this.inFlight.set(id, work);
    }
  }

  /**
   * Something outside the upstream error handling failed (a database write, say). The row is held
   * back in memory, whether or not the write pushing it back commits, so it cannot spin the loop;
   * a storage failure pauses all work until writes succeed again.
   */
  private onStepCrash(id: string, err: unknown): void {
    const now = this.clock.now().getTime();
    this.cooldown.set(id, now + this.o.schedule.maxMs);
    const storage = storageErrorOf(err);
    if (storage) return this.hold('storage', `storage unavailable: ${storage.code}: ${storage.message}`, storage);
    this.o.log.error({ err, predictionId: id }, 'poller step failed');
    try {
      this.o.recorder.reschedule(id, { nextPollAt: new Date(now + this.o.schedule.maxMs) });
    } catch (again) {
      const storageAgain = storageErrorOf(again);
      if (storageAgain) this.hold('storage', `storage unavailable: ${storageAgain.code}: ${storageAgain.message}`, storageAgain);
    }
  }

  private async step(id: string): Promise<void> {
    const row = this.o.store.findById(id);
    if (!row || row.nextPollAt === null || terminalStatuses.has(row.status)) return;
    const step: Step = row.upstreamId ? 'poll' : row.submitStartedAt ? 'reconcile' : 'submission';
    if (step === 'submission' && this.expired(row)) {
      this.finish(row, { status: 'FAILED', error: `${this.giveUp('could not submit upstream')}${row.error ? ` (last error: ${row.error})` : ''}` });
      return;
    }
    try {
      if (step === 'poll') await this.pollOne(row);
      else if (step === 'reconcile') await this.reconcileOne(row);
      else await this.submitOne(row);
      this.resume('rate'); // upstream answered normally: a rate-limit pause is over
    } catch (err) {
      if (isStorageError(err)) throw err;
      // A poll or download cancelled by stop(): not upstream's fault, so no attempt is spent; due
      // again at once on restart. (Submissions are never cancelled, so their errors count as usual.)
      if (this.shutdown.signal.aborted && step !== 'submission') this.o.recorder.reschedule(row.id, { nextPollAt: this.clock.now() });
      else this.onFailure(row, err, step);
    }
  }

  private expired(row: PredictionRow): boolean {
    return this.clock.now().getTime() - row.createdAt.getTime() > this.o.maxAgeMs;
  }

  private giveUp(what: string): string {
    return `gave up: ${what} within ${Math.round(this.o.maxAgeMs / 1000)} s`;
  }

  private async submitOne(row: PredictionRow): Promise<void> {
    const { client, recorder, log, webhookUrl, store } = this.o;
    // The token is stored before the URL leaves the process, so a crash cannot orphan a webhook.
    let token = row.webhookToken;
    if (webhookUrl && !token) {
      token = randomBytes(32).toString('base64url');
      recorder.reschedule(row.id, { webhookToken: token });
    }
    const image = store.imageOf(row.id) ?? undefined;
    // The intent, durably, before a byte leaves: if this write fails, nothing is sent; if the
    // process dies after it, the next one reconciles instead of sending again.
    const startedAt = this.clock.now();
    if (!recorder.reschedule(row.id, { submitAttempts: row.submitAttempts + 1, submitStartedAt: startedAt })) return;
    let up: UpstreamPrediction;
    try {
      // Not cancelled by stop(): an abandoned submission that upstream accepted would have to be
      // reconciled after restart. It is bounded by the request timeout instead.
      up = await client.submit(
        { prompt: row.prompt, image, enablePromptExpansion: row.enablePromptExpansion },
        { webhook: webhookUrl && token ? webhookUrl(row.id, token) : undefined },
      );
    } catch (err) {
      // Certainly not received: the intent is withdrawn, so this attempt costs nothing against the cap.
      const cls = classify(err);
      if (cls !== 'uncertain') recorder.reschedule(row.id, { submitAttempts: row.submitAttempts, submitStartedAt: null });
      throw err;
    }
    this.accept(row, up, false, token);
  }

  /** Records the upstream task of a prediction: from a submission's answer, or found by reconciliation. */
  private accept(row: PredictionRow, up: UpstreamPrediction, adopted: boolean, token: string | null): void {
    const now = this.clock.now();
    const patch = patchFromUpstream(up) ?? {};
    // Already completed (a cached result, say): record the upstream id now and let the poll that
    // follows at once keep the outputs, so a failed download can never lead to a resubmission.
    const finishedAlready = patch.status === 'COMPLETED';
    const stored = this.o.recorder.record(row.id, {
      ...(finishedAlready ? {} : patch),
      upstreamId: up.id,
      submittedAt: row.submitStartedAt ?? now,
      submitStartedAt: null,
      image: null,
      attempts: 0,
      error: patch.error ?? null,
      ...(finishedAlready ? { nextPollAt: now } : this.nextStep(patch.status ?? row.status, Boolean(token), now, 0)),
    });
    this.o.log.info({ predictionId: row.id, upstreamId: up.id, webhook: Boolean(token), adopted }, adopted ? 'found the submitted task upstream' : 'submitted upstream');
    this.emit('submitted', { id: row.id, upstreamId: up.id, adopted });
    if (stored) this.emitRecorded(stored);
  }

  /**
   * A submission of this prediction may have reached upstream. Look for its task in upstream's
   * list; adopt it when found. Only when none has appeared after the grace period is it sent again,
   * and never more than `maxSubmissions` times in all.
   */
  private async reconcileOne(row: PredictionRow): Promise<void> {
    const { client, store, recorder } = this.o;
    const startedAt = row.submitStartedAt!;
    const found = await findSubmittedTask(client, {
      prompt: row.prompt,
      image: row.hasImage ? store.imageOf(row.id) : null,
      since: startedAt,
      isTaken: (upstreamId) => store.findByUpstreamId(upstreamId) !== undefined,
    });
    if (found) return this.accept(row, found, true, row.webhookToken);
    const now = this.clock.now();
    const waited = now.getTime() - startedAt.getTime();
    if (waited < this.o.reconcileGraceMs && !this.expired(row)) {
      recorder.reschedule(row.id, { attempts: 0, nextPollAt: new Date(now.getTime() + this.reconcileGapMs()) });
      return;
    }
    if (row.submitAttempts >= this.o.maxSubmissions || this.expired(row)) {
      const why = row.submitAttempts >= this.o.maxSubmissions ? `${row.submitAttempts} submissions` : 'the age limit';
      this.finish(row, {
        status: 'FAILED',
        error: `SUBMISSION_UNCERTAIN: upstream never confirmed a task for this prediction after ${why}; it may still run and be billed upstream${row.error ? ` (last error: ${row.error})` : ''}`,
      });
      return;
    }
    // No task appeared in the grace period: the submission did not take. Sending again is now safe.
    recorder.reschedule(row.id, { submitStartedAt: null, attempts: 0, nextPollAt: now });
  }

  private reconcileGapMs(): number {
    return Math.max(100, Math.min(5000, Math.round(this.o.reconcileGraceMs / 4)));
  }

  private async pollOne(row: PredictionRow): Promise<void> {
    const up = await this.o.client.getResult(row.upstreamId!, { signal: this.shutdown.signal });
    this.emit('polled', { id: row.id, status: up.status });
    let patch = patchFromUpstream(up);
    if (!patch) this.o.log.warn({ predictionId: row.id, status: up.status }, 'upstream sent an unknown status; polling on');
    if (patch?.status === 'COMPLETED') patch.keptOutputs = await this.keepOutputs(row, up.outputs);
    // The age limit is judged after this last look, so a task that just finished is not failed.
    if (this.expired(row) && !terminalStatuses.has(patch?.status ?? row.status)) {
      patch = { ...patch, status: 'FAILED', error: this.giveUp('no final status from upstream') };
    }
    const now = this.clock.now();
    const sinceSubmit = now.getTime() - (row.submittedAt ?? row.createdAt).getTime();
    const bookkeeping = { attempts: 0, pollCount: row.pollCount + 1, ...this.nextStep(patch?.status ?? row.status, Boolean(row.webhookToken), now, sinceSubmit) };
    if (patch && changesVisibleState(row, patch)) this.record(row.id, { ...patch, ...bookkeeping });
    else this.o.recorder.reschedule(row.id, bookkeeping);
  }

  /**
   * Copies completed outputs into gateway storage before COMPLETED is published, so a subscriber's
   * last event already carries them. A transient failure retries the whole poll; once this
   * prediction has failed KEEP_ATTEMPTS times in a row (upstream or download alike), or on a
   * permanent failure, it completes with upstream URLs only.
   */
  private async keepOutputs(row: PredictionRow, outputs: string[]): Promise<string[]> {
    if (!this.o.media || !outputs.length) return [];
    try {
      const names = [];
      for (const url of outputs) names.push(`/media/${await this.o.media.keep(url, this.shutdown.signal)}`);
      return names;
    } catch (err) {
      if (err instanceof MediaError && (this.shutdown.signal.aborted || (err.transient && row.attempts + 1 < KEEP_ATTEMPTS))) throw err;
      this.o.log.warn({ predictionId: row.id, err: (err as Error).message }, 'could not keep outputs; completing with upstream URLs only');
      return [];
    }
  }

  private nextStep(status: PredictionStatus, viaWebhook: boolean, now: Date, sinceSubmitMs: number): PredictionPatch {
    if (terminalStatuses.has(status)) return { nextPollAt: null, completedAt: now };
    const delay = viaWebhook ? this.o.webhookFallbackMs : nextPollDelay(sinceSubmitMs, this.o.schedule);
    return { nextPollAt: new Date(now.getTime() + delay) };
  }

  private record(id: string, patch: PredictionPatch): void {
    const row = this.o.recorder.record(id, patch);
    if (row) this.emitRecorded(row);
  }

  private emitRecorded(row: PredictionRow): void {
    this.emit('recorded', { id: row.id, status: row.status });
    if (row.status === 'FAILED') this.emit('failed', { id: row.id, error: row.error ?? '' });
  }

  private finish(row: PredictionRow, patch: PredictionPatch): void {
    this.record(row.id, { ...patch, nextPollAt: null, completedAt: this.clock.now(), image: null, submitStartedAt: null });
  }

  private onFailure(row: PredictionRow, err: unknown, step: Step): void {
    const { log, recorder, schedule } = this.o;
    const now = this.clock.now().getTime();
    const message = err instanceof Error ? err.message : String(err);
    const cls = classify(err);
    const decision = decideFailure(step, cls, message, this.expired(row), (what) => this.giveUp(what));
    const retryAfterMs = Math.min((err as { retryAfterMs?: number }).retryAfterMs ?? 0, this.o.retryAfterMaxMs);
    switch (decision.action) {
      case 'fail':
        this.finish(row, { status: 'FAILED', error: decision.error });
        log.warn({ predictionId: row.id, err: message }, `${step} failed permanently`);
        return;
      case 'pauseAccount':
        this.hold('account', `upstream refused the account: ${message}`, undefined);
        // The prediction stays as it is, due again once the account works; `error` says why it waits.
        if (row.error !== message) recorder.record(row.id, { error: message });
        return;
      case 'reconcile':
        recorder.record(row.id, { error: `submission outcome unknown, looking for it upstream: ${message}`, attempts: 0, nextPollAt: new Date(now + this.reconcileGapMs()) });
        log.warn({ predictionId: row.id, err: message }, 'submission may have reached upstream; reconciling instead of resending');
        this.emit('uncertain', { id: row.id, error: message });
        return;
      case 'retry': {
        if (decision.rateLimit) this.hold('rate', `upstream rate limit: pausing all upstream requests`, undefined, retryAfterMs);
        const delay = Math.max(retryAfterMs, backoffDelay(row.attempts, RETRY_BASE_MS, schedule.maxMs));
        const retry = { attempts: row.attempts + 1, nextPollAt: new Date(now + delay) };
        // A waiting submission shows its last complaint in `error` (status stays CREATED).
        if (step !== 'poll' && row.error !== message) recorder.record(row.id, { ...retry, error: message });
        else recorder.reschedule(row.id, retry);
        log.warn({ predictionId: row.id, err: message, attempts: retry.attempts, retryInMs: delay }, `${step} failed; will retry`);
      }
    }
  }
}
