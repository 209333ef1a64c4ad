import { randomBytes } from 'node:crypto';
import { systemClock, type Clock } from '../clock.js';
import type { PredictionPatch, PredictionStore } from '../db/predictions.js';
import { terminalStatuses, type PredictionRow, type PredictionStatus } from '../db/schema.js';
import type { Logger } from '../log.js';
import { MediaError, type MediaStore } from '../storage/media.js';
import { UpstreamError, type WaveSpeedClient } from '../upstream/wavespeed.js';
import { changesVisibleState, patchFromUpstream } from './mapping.js';
import type { Recorder } from './record.js';
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
  /** Builds the webhook URL handed to upstream; webhooks are off without it. */
  webhookUrl?: (predictionId: string, token: string) => string;
  /** Where completed outputs are copied; outputs are not kept without it. */
  media?: MediaStore;
  /** @default systemClock */
  clock?: Clock;
  /** Longest sleep when nothing is due; a nudge wakes the poller sooner. @default 5000 */
  idleMs?: number;
}

/** First retry delay after a transient failure; doubles per attempt up to the schedule's max. */
const RETRY_BASE_MS = 500;
/** Download attempts for a completed prediction's outputs before it completes without a kept copy. */
const KEEP_ATTEMPTS = 5;

/**
 * The one background scheduler: submits predictions that have no upstream id yet, then polls
 * in-flight ones when their `nextPollAt` comes. All state lives in SQLite, so a new process picks
 * up exactly where a dead one stopped.
 */
export class Poller {
  private readonly clock: Clock;
  private readonly inFlight = new Map<string, Promise<void>>();
  /** Webhook deliveries that arrived while their prediction was being polled: poll once more. */
  private readonly repoll = new Set<string>();
  /** After a 429 the whole poller holds off, not just the request that got it. */
  private pausedUntil = 0;
  private rateLimitStreak = 0;
  private running = false;
  private loopPromise?: Promise<void>;
  private wakeUp?: () => void;
  private wakePending = false;
  /** Cancels in-flight polls and downloads on stop, so shutdown waits for writes, not for timeouts (submissions are let finish). */
  private readonly shutdown = new AbortController();

  constructor(private readonly o: PollerOptions) {
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

  /** A webhook said this prediction changed: read it from upstream as soon as possible (unless it is final). */
  pollNow(id: string): void {
    if (this.inFlight.has(id)) this.repoll.add(id);
    else this.o.store.makeDue(id, this.clock.now());
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
        this.startDue();
      } catch (err) {
        this.o.log.error({ err }, 'poller pass failed');
      }
      await this.sleep(this.delayUntilNextDue());
    }
  }

  private delayUntilNextDue(): number {
    const idle = this.o.idleMs ?? 5000;
    const now = this.clock.now().getTime();
    if (now < this.pausedUntil) return this.pausedUntil - now;
    const next = this.o.store.nextDueAt(this.inFlight);
    if (!next) return idle;
    const delay = next.getTime() - now;
    // Due but not started means every slot is busy: a finishing request wakes us.
    if (delay <= 0) return this.inFlight.size >= this.o.concurrency ? idle : 0;
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
    const now = this.clock.now();
    const free = this.o.concurrency - this.inFlight.size;
    if (free <= 0 || now.getTime() < this.pausedUntil) return;
    const ids = this.o.store.due(now, free + this.inFlight.size).filter((id) => !this.inFlight.has(id));
    for (const id of ids.slice(0, free)) {
      const work = this.step(id)
        .catch((err) => this.onStepCrash(id, err))
        .finally(() => {
          this.inFlight.delete(id);
          if (this.repoll.delete(id)) this.o.store.makeDue(id, this.clock.now());
          this.nudge();
        });
      this.inFlight.set(id, work);
    }
  }

  /**
   * Something outside the upstream error handling failed (a database write, say). Push the row
   * back so it cannot spin the loop; if even that fails, the next pass retries it.
   */
  private onStepCrash(id: string, err: unknown): void {
    this.o.log.error({ err, predictionId: id }, 'poller step failed');
    try {
      this.o.recorder.reschedule(id, { nextPollAt: new Date(this.clock.now().getTime() + this.o.schedule.maxMs) });
    } catch (again) {
      this.o.log.error({ err: again, predictionId: id }, 'could not reschedule after a failed step');
    }
  }

  private async step(id: string): Promise<void> {
    const row = this.o.store.findById(id);
    if (!row || row.nextPollAt === null || terminalStatuses.has(row.status)) return;
    if (!row.upstreamId && this.expired(row)) {
      this.finish(row, { status: 'FAILED', error: `${this.giveUp('could not submit upstream')}${row.error ? ` (last error: ${row.error})` : ''}` });
      return;
    }
    try {
      await (row.upstreamId ? this.pollOne(row) : this.submitOne(row));
      this.rateLimitStreak = 0;
    } catch (err) {
      // A poll or download cancelled by stop(): not upstream's fault, so no attempt is spent; due
      // again at once on restart. (Submissions are never cancelled, so their errors count as usual.)
      if (this.shutdown.signal.aborted && row.upstreamId) this.o.recorder.reschedule(row.id, { nextPollAt: this.clock.now() });
      else this.onFailure(row, err, row.upstreamId ? 'poll' : 'submission');
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
    // Not cancelled by stop(): an abandoned submission that upstream accepted would be submitted
    // again after restart. It is bounded by the request timeout instead.
    const up = await client.submit(
      { prompt: row.prompt, image: store.imageOf(row.id) ?? undefined, enablePromptExpansion: row.enablePromptExpansion },
      { webhook: webhookUrl && token ? webhookUrl(row.id, token) : undefined },
    );
    // Crash window: a kill between upstream accepting and this write means a second submission
    // after restart. It is one local SQLite write long; upstream offers no idempotency key to close it.
    const now = this.clock.now();
    const patch = patchFromUpstream(up) ?? {};
    // Already completed (a cached result, say): record the upstream id now and let the poll that
    // follows at once keep the outputs, so a failed download can never lead to a resubmission.
    const finishedAlready = patch.status === 'COMPLETED';
    recorder.record(row.id, {
      ...(finishedAlready ? {} : patch),
      upstreamId: up.id,
      submittedAt: now,
      image: null,
      attempts: 0,
      error: patch.error ?? null,
      ...(finishedAlready ? { nextPollAt: now } : this.nextStep(patch.status ?? row.status, Boolean(token), now, 0)),
    });
    log.info({ predictionId: row.id, upstreamId: up.id, webhook: Boolean(token) }, 'submitted upstream');
  }

  private async pollOne(row: PredictionRow): Promise<void> {
    const up = await this.o.client.getResult(row.upstreamId!, { signal: this.shutdown.signal });
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
    if (patch && changesVisibleState(row, patch)) this.o.recorder.record(row.id, { ...patch, ...bookkeeping });
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

  private finish(row: PredictionRow, patch: PredictionPatch): void {
    this.o.recorder.record(row.id, { ...patch, nextPollAt: null, completedAt: this.clock.now(), image: null });
  }

  private onFailure(row: PredictionRow, err: unknown, during: 'submission' | 'poll'): void {
    const { log, recorder, schedule } = this.o;
    const now = this.clock.now().getTime();
    // A failed download of outputs is retried like a failed poll; anything unexpected counts as transient.
    const e = err instanceof UpstreamError || err instanceof MediaError ? err : new UpstreamError('protocol', String(err));
    if (e instanceof UpstreamError) {
      const lost = during === 'poll' && e.kind === 'http' && e.status === 404;
      if ((during === 'submission' && !e.transient) || lost) {
        const error = lost ? `upstream no longer has this prediction: ${e.message}` : `upstream rejected the submission: ${e.message}`;
        this.finish(row, { status: 'FAILED', error });
        log.warn({ predictionId: row.id, err: e.message }, `${during} failed permanently`);
        return;
      }
      if (e.status === 429) {
        const pause = e.retryAfterMs ?? backoffDelay(this.rateLimitStreak, RETRY_BASE_MS, schedule.maxMs);
        this.rateLimitStreak++;
        this.pausedUntil = Math.max(this.pausedUntil, now + pause);
        log.warn({ pauseMs: pause }, 'upstream rate limit: pausing all upstream requests');
      }
    }
    const retryAfterMs = e instanceof UpstreamError ? (e.retryAfterMs ?? 0) : 0;
    const delay = Math.max(retryAfterMs, backoffDelay(row.attempts, RETRY_BASE_MS, schedule.maxMs));
    const retry = { attempts: row.attempts + 1, nextPollAt: new Date(now + delay) };
    // A waiting submission shows its last complaint in `error` (status stays CREATED).
    if (during === 'submission' && row.error !== e.message) recorder.record(row.id, { ...retry, error: e.message });
    else recorder.reschedule(row.id, retry);
    log.warn({ predictionId: row.id, err: e.message, attempts: retry.attempts, retryInMs: delay }, `${during} failed; will retry`);
  }
}
