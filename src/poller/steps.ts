import { randomBytes } from 'node:crypto';
import type { Clock } from '../clock.js';
import { isStorageError } from '../db/errors.js';
import type { PredictionPatch } from '../db/predictions.js';
import { terminalStatuses, type PredictionRow, type PredictionStatus } from '../db/schema.js';
import { MediaError } from '../storage/media.js';
import type { UpstreamPrediction } from '../upstream/wavespeed.js';
import { classify, decideFailure, type Step } from './decide.js';
import type { PollerEvents } from './events.js';
import { capText, changesVisibleState, patchFromUpstream } from './mapping.js';
import type { PauseKind } from './pauses.js';
import type { PollerOptions } from './poller.js';
import { findSubmittedTask } from './reconcile.js';
import { backoffDelay, nextPollDelay } from './schedule.js';

/** First retry delay after a transient failure; doubles per attempt up to the schedule's max. */
const RETRY_BASE_MS = 500;
/** Download attempts for a completed prediction's outputs before it completes without a kept copy. */
const KEEP_ATTEMPTS = 5;

/** What the steps need: the poller's options, plus the loop's clock, shutdown signal, events and pauses. */
export interface StepDeps extends Omit<PollerOptions, 'concurrency' | 'idleMs' | 'clock' | 'queue' | 'admission'> {
  clock: Clock;
  /** Cancels polls and downloads on shutdown (submissions are let finish). */
  signal: AbortSignal;
  emit<K extends keyof PollerEvents>(event: K, ...args: PollerEvents[K]): void;
  /** Holds all upstream work off (rate limit, account); `waitMs` is upstream's capped Retry-After. */
  hold(kind: PauseKind, reason: string, err?: unknown, waitMs?: number): void;
  /** Ends a pause of `kind`, unless the proof (a step started at `startedAt`) predates its latest hold. */
  resume(kind: PauseKind, startedAt?: number): void;
  /** Best-effort removal of tasks upstream (canceled predictions). */
  deleteUpstream(upstreamIds: string[]): Promise<void>;
}

/**
 * The steps of one prediction's life, and what a failure of each leads to. The loop (poller.ts)
 * decides when and how many run; this decides what one step does. Every visible change goes
 * through the recorder (write, then publish).
 *
 * The money rule: a submission is sent only after its intent (`submitAttempts`, `submitStartedAt`)
 * has committed, and a submission that may have reached upstream is never sent again until
 * upstream's task list has been searched for it for `reconcileGraceMs`.
 */
export class PredictionSteps {
  constructor(private readonly d: StepDeps) {}

  /** Takes one prediction one step further: submit, reconcile or poll, and handles the outcome. */
  async run(id: string): Promise<void> {
    const row = await this.d.store.findById(id);
    if (!row || row.nextPollAt === null || terminalStatuses.has(row.status)) return;
    const step: Step = row.upstreamId ? 'poll' : row.submitStartedAt ? 'reconcile' : 'submission';
    if (step === 'submission' && this.expired(row)) {
      await this.finish(row, { status: 'FAILED', error: `${this.giveUp('could not submit upstream')}${row.error ? ` (last error: ${row.error})` : ''}` });
      return;
    }
    const startedAt = this.d.clock.now().getTime();
    try {
      if (step === 'poll' && row.upstreamId) await this.pollOne(row, row.upstreamId);
      else if (step === 'reconcile' && row.submitStartedAt) await this.reconcileOne(row, row.submitStartedAt);
      else await this.submitOne(row);
      // Upstream answered normally: a rate-limit pause is over, if this request went out after it began
      // (one sent before the 429 and answered after it says nothing about the Retry-After).
      this.d.resume('rate', startedAt);
    } catch (thrown) {
      // An upload failed before any submission: judged as an upload, never as an uncertain submission.
      const [failed, err] = thrown instanceof UploadFailed ? (['upload', thrown.cause] as const) : ([step, thrown] as const);
      if (isStorageError(err)) throw err;
      // A poll or download cancelled by stop(): not upstream's fault, so no attempt is spent; due
      // again at once on restart. (Submissions are never cancelled, so their errors count as usual.)
      if (this.d.signal.aborted && failed !== 'submission') await this.d.recorder.reschedule(row.id, { nextPollAt: this.d.clock.now() });
      else await this.onFailure(row, err, failed);
    }
  }

  /**
   * The image a submission carries: a URL the client gave, or for a data-URI image kept as a file,
   * the URL upstream's media upload gave it. Uploaded once: the URL is stored before it is used.
   */
  private async imageToSend(row: PredictionRow): Promise<string | undefined> {
    if (!row.imageFile) return (await this.d.store.imageOf(row.id)) ?? undefined;
    if (row.imageUploadUrl) return row.imageUploadUrl;
    const images = this.d.images;
    if (!images) throw new Error('an image file with no image store configured');
    const url = await this.d.client.uploadMedia(images.read(row.imageFile), row.imageFile, images.contentType(row.imageFile), { signal: this.d.signal });
    await this.d.recorder.reschedule(row.id, { imageUploadUrl: url });
    this.d.emit('uploaded', { id: row.id, url });
    return url;
  }

  private expired(row: PredictionRow): boolean {
    return this.d.clock.now().getTime() - row.createdAt.getTime() > this.d.maxAgeMs;
  }

  private giveUp(what: string): string {
    return `gave up: ${what} within ${Math.round(this.d.maxAgeMs / 1000)} s`;
  }

  private async submitOne(row: PredictionRow): Promise<void> {
    const { client, recorder, webhookUrl } = this.d;
    // The token is stored before the URL leaves the process, so a crash cannot orphan a webhook.
    let token = row.webhookToken;
    if (webhookUrl && !token) {
      token = randomBytes(32).toString('base64url');
      await recorder.reschedule(row.id, { webhookToken: token });
    }
    let image: string | undefined;
    try {
      image = await this.imageToSend(row);
    } catch (err) {
      throw new UploadFailed(err);
    }
    // The intent, durably, before a byte leaves: if this write fails, nothing is sent; if the
    // process dies after it, the next one reconciles instead of sending again.
    const startedAt = this.d.clock.now();
    if (!(await recorder.reschedule(row.id, { submitAttempts: row.submitAttempts + 1, submitStartedAt: startedAt }))) return;
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
      if (cls !== 'uncertain') await recorder.reschedule(row.id, { submitAttempts: row.submitAttempts, submitStartedAt: null });
      throw err;
    }
    await this.accept(row, up, false, token);
  }

  /** Records the upstream task of a prediction: from a submission's answer, or found by reconciliation. */
  private async accept(row: PredictionRow, up: UpstreamPrediction, adopted: boolean, token: string | null): Promise<void> {
    const now = this.d.clock.now();
    const patch = patchFromUpstream(up) ?? {};
    // Already completed (a cached result, say): record the upstream id now and let the poll that
    // follows at once keep the outputs, so a failed download can never lead to a resubmission.
    const finishedAlready = patch.status === 'COMPLETED';
    const stored = await this.d.recorder.record(row.id, {
      ...(finishedAlready ? {} : patch),
      upstreamId: up.id,
      submittedAt: row.submitStartedAt ?? now,
      submitStartedAt: null,
      image: null,
      attempts: 0,
      error: patch.error ?? null,
      ...(finishedAlready ? { nextPollAt: now } : this.nextStep(patch.status ?? row.status, Boolean(token), now, 0)),
    });
    if (!stored) {
      // Not written because this instance lost the row's lease (it stalled past LEASE_MS): the task is
      // wanted, and the instance holding the row now finds it upstream and adopts it. Never delete it then.
      const current = await this.d.store.findById(row.id);
      if (current && !terminalStatuses.has(current.status)) {
        this.d.log.warn({ predictionId: row.id, upstreamId: up.id }, 'lost the lease while submitting; the instance that holds the prediction now adopts its task');
        return;
      }
      // Canceled (or otherwise ended) while the submission was under way: its task is not wanted.
      this.d.log.info({ predictionId: row.id, upstreamId: up.id }, 'a task arrived for a prediction already final; deleting it upstream');
      void this.d.deleteUpstream([up.id]);
      return;
    }
    this.d.log.info({ predictionId: row.id, upstreamId: up.id, webhook: Boolean(token), adopted }, adopted ? 'found the submitted task upstream' : 'submitted upstream');
    this.d.emit('submitted', { id: row.id, upstreamId: up.id, adopted });
    this.emitRecorded(stored);
  }

  /**
   * A submission of this prediction may have reached upstream. Look for its task in upstream's
   * list; adopt it when found. Only when none has appeared after the grace period is it sent again,
   * and never more than `maxSubmissions` times in all.
   */
  private async reconcileOne(row: PredictionRow, startedAt: Date): Promise<void> {
    const { client, store, recorder } = this.d;
    const found = await findSubmittedTask(client, {
      prompt: row.prompt,
      image: row.hasImage ? (row.imageUploadUrl ?? (await store.imageOf(row.id))) : null,
      since: startedAt,
      isTaken: async (upstreamId) => (await store.findByUpstreamId(upstreamId)) !== undefined,
    });
    if (typeof found === 'object') return await this.accept(row, found, true, row.webhookToken);
    const now = this.d.clock.now();
    const waited = now.getTime() - startedAt.getTime();
    // 'unknown': the list holds more tasks since the submission than one look reads, so absence
    // proves nothing; keep looking (until the age limit) rather than ever resend on it.
    if ((waited < this.d.reconcileGraceMs || found === 'unknown') && !this.expired(row)) {
      await recorder.reschedule(row.id, { attempts: 0, nextPollAt: new Date(now.getTime() + this.reconcileGapMs()) });
      return;
    }
    if (row.submitAttempts >= this.d.maxSubmissions || this.expired(row)) {
      const why = row.submitAttempts >= this.d.maxSubmissions ? `${row.submitAttempts} submissions` : 'the age limit';
      await this.finish(row, {
        status: 'FAILED',
        error: `SUBMISSION_UNCERTAIN: upstream never confirmed a task for this prediction after ${why}; it may still run and be billed upstream${row.error ? ` (last error: ${row.error})` : ''}`,
      });
      return;
    }
    // No task appeared in the grace period: the submission did not take. Sending again is now safe.
    await recorder.reschedule(row.id, { submitStartedAt: null, attempts: 0, nextPollAt: now });
  }

  private reconcileGapMs(): number {
    return Math.max(100, Math.min(5000, Math.round(this.d.reconcileGraceMs / 4)));
  }

  private async pollOne(row: PredictionRow, upstreamId: string): Promise<void> {
    const up = await this.d.client.getResult(upstreamId, { signal: this.d.signal });
    this.d.emit('polled', { id: row.id, status: up.status });
    let patch = patchFromUpstream(up);
    if (!patch) this.d.log.warn({ predictionId: row.id, status: up.status }, 'upstream sent an unknown status; polling on');
    // The outputs as stored (at most MAX_OUTPUTS usable URLs), not every URL upstream listed.
    if (patch?.status === 'COMPLETED') patch.keptOutputs = await this.keepOutputs(row, patch.outputs ?? []);
    // The age limit is judged after this last look, so a task that just finished is not failed.
    if (this.expired(row) && !terminalStatuses.has(patch?.status ?? row.status)) {
      patch = { ...patch, status: 'FAILED', error: this.giveUp('no final status from upstream') };
    }
    const now = this.d.clock.now();
    const sinceSubmit = now.getTime() - (row.submittedAt ?? row.createdAt).getTime();
    const bookkeeping = { attempts: 0, pollCount: row.pollCount + 1, ...this.nextStep(patch?.status ?? row.status, Boolean(row.webhookToken), now, sinceSubmit) };
    if (patch && changesVisibleState(row, patch)) await this.record(row.id, { ...patch, ...bookkeeping });
    else await this.d.recorder.reschedule(row.id, bookkeeping);
  }

  /**
   * Copies completed outputs into gateway storage before COMPLETED is published, so a subscriber's
   * last event already carries them. A transient failure retries the whole poll; once this
   * prediction has failed KEEP_ATTEMPTS times in a row (upstream or download alike), or on a
   * permanent failure, it completes with upstream URLs only.
   */
  private async keepOutputs(row: PredictionRow, outputs: string[]): Promise<string[]> {
    if (!this.d.media || !outputs.length) return [];
    try {
      const names = [];
      for (const url of outputs) names.push(`/media/${await this.d.media.keep(url, this.d.signal)}`);
      return names;
    } catch (err) {
      if (err instanceof MediaError && (this.d.signal.aborted || (err.transient && row.attempts + 1 < KEEP_ATTEMPTS))) throw err;
      this.d.log.warn({ predictionId: row.id, err: (err as Error).message }, 'could not keep outputs; completing with upstream URLs only');
      return [];
    }
  }

  private nextStep(status: PredictionStatus, viaWebhook: boolean, now: Date, sinceSubmitMs: number): PredictionPatch {
    if (terminalStatuses.has(status)) return { nextPollAt: null, completedAt: now };
    const delay = viaWebhook ? this.d.webhookFallbackMs : nextPollDelay(sinceSubmitMs, this.d.schedule);
    return { nextPollAt: new Date(now.getTime() + delay) };
  }

  private async record(id: string, patch: PredictionPatch): Promise<void> {
    const row = await this.d.recorder.record(id, patch);
    if (row) this.emitRecorded(row);
  }

  private emitRecorded(row: PredictionRow): void {
    this.d.emit('recorded', { id: row.id, status: row.status });
    if (row.status === 'FAILED') this.d.emit('failed', { id: row.id, error: row.error ?? '' });
  }

  private finish(row: PredictionRow, patch: PredictionPatch): Promise<void> {
    return this.record(row.id, { ...patch, nextPollAt: null, completedAt: this.d.clock.now(), image: null, submitStartedAt: null });
  }

  private async onFailure(row: PredictionRow, err: unknown, step: Step): Promise<void> {
    const { log, recorder, schedule } = this.d;
    const now = this.d.clock.now().getTime();
    // Upstream's words can be as long as its 1 MiB body: capped like a record's error before any is stored.
    const message = capText(err instanceof Error ? err.message : String(err));
    const cls = classify(err);
    const decided = decideFailure(step, cls, message, this.expired(row), (what) => this.giveUp(what));
    // The error as stored, its prefix ("upstream rejected the submission: ") included, is capped too.
    const decision = decided.action === 'fail' ? { ...decided, error: capText(decided.error) } : decided;
    const retryAfterMs = Math.min((err as { retryAfterMs?: number }).retryAfterMs ?? 0, this.d.retryAfterMaxMs);
    switch (decision.action) {
      case 'fail':
        await this.finish(row, { status: 'FAILED', error: decision.error });
        log.warn({ predictionId: row.id, err: message }, `${step} failed permanently`);
        return;
      case 'pauseAccount':
        this.d.hold('account', `upstream refused the account: ${message}`, undefined);
        // The prediction stays as it is, due again once the account works; `error` says why it waits.
        if (row.error !== message) await recorder.record(row.id, { error: message });
        return;
      case 'reconcile':
        await recorder.record(row.id, { error: capText(`submission outcome unknown, looking for it upstream: ${message}`), attempts: 0, nextPollAt: new Date(now + this.reconcileGapMs()) });
        log.warn({ predictionId: row.id, err: message }, 'submission may have reached upstream; reconciling instead of resending');
        this.d.emit('uncertain', { id: row.id, error: message });
        return;
      case 'retry': {
        if (decision.rateLimit) this.d.hold('rate', `upstream rate limit: pausing all upstream requests`, undefined, retryAfterMs);
        const delay = Math.max(retryAfterMs, backoffDelay(row.attempts, RETRY_BASE_MS, schedule.maxMs));
        const retry = { attempts: row.attempts + 1, nextPollAt: new Date(now + delay) };
        // A waiting submission shows its last complaint in `error` (status stays CREATED).
        if (step !== 'poll' && row.error !== message) await recorder.record(row.id, { ...retry, error: message });
        else await recorder.reschedule(row.id, retry);
        log.warn({ predictionId: row.id, err: message, attempts: retry.attempts, retryInMs: delay }, `${step} failed; will retry`);
      }
    }
  }
}

/** Marks a failure of the media upload that precedes a submission (see run()). */
class UploadFailed extends Error {
  constructor(override readonly cause: unknown) {
    super(cause instanceof Error ? cause.message : String(cause));
  }
}
