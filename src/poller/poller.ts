import type { PredictionStore } from '../db/predictions.js';
import { terminalStatuses, type PredictionRow } from '../db/schema.js';
import type { Logger } from '../log.js';
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
  /** Injected clock. @default () => new Date() */
  now?: () => Date;
  /** Longest sleep when nothing is due; a nudge wakes the poller sooner. @default 5000 */
  idleMs?: number;
}

/** First retry delay after a transient upstream failure; doubles per attempt up to the schedule's max. */
const RETRY_BASE_MS = 500;

/**
 * The one background scheduler: submits predictions that have no upstream id yet, then polls
 * in-flight ones when their `nextPollAt` comes. All state lives in SQLite, so a new process picks
 * up exactly where a dead one stopped.
 */
export class Poller {
  private readonly now: () => Date;
  private readonly inFlight = new Map<string, Promise<void>>();
  private running = false;
  private loopPromise?: Promise<void>;
  private wakeUp?: () => void;

  constructor(private readonly o: PollerOptions) {
    this.now = o.now ?? (() => new Date());
  }

  start(): void {
    if (this.running) return;
    this.running = true;
    this.loopPromise = this.loop();
  }

  /** Stops taking new work and waits for in-flight requests to be written. */
  async stop(): Promise<void> {
    this.running = false;
    this.nudge();
    await this.loopPromise;
    await Promise.allSettled(this.inFlight.values());
  }

  /** Something became due (a new prediction); look now instead of at the next timer. */
  nudge(): void {
    this.wakeUp?.();
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
    const next = this.o.store.nextDueAt();
    if (!next) return idle;
    const delay = next.getTime() - this.now().getTime();
    // Something is due but every slot is busy: a finishing request wakes us.
    if (delay <= 0) return this.inFlight.size >= this.o.concurrency || this.inFlight.size > 0 ? idle : 0;
    return Math.min(delay, idle);
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      function done() {
        clearTimeout(timer);
        resolve();
      }
      this.wakeUp = done;
    });
  }

  private startDue(): void {
    const free = this.o.concurrency - this.inFlight.size;
    if (free <= 0) return;
    const rows = this.o.store.due(this.now(), free + this.inFlight.size).filter((r) => !this.inFlight.has(r.id));
    for (const row of rows.slice(0, free)) {
      const work = (row.upstreamId ? this.pollOne(row) : this.submitOne(row))
        .catch((err) => this.o.log.error({ err, predictionId: row.id }, 'poller step failed'))
        .finally(() => {
          this.inFlight.delete(row.id);
          this.nudge();
        });
      this.inFlight.set(row.id, work);
    }
  }

  private async submitOne(row: PredictionRow): Promise<void> {
    const { client, recorder, log } = this.o;
    try {
      const up = await client.submit({
        prompt: row.prompt,
        image: row.image ?? undefined,
        enablePromptExpansion: row.enablePromptExpansion,
      });
      const now = this.now();
      const patch = patchFromUpstream(up) ?? {};
      recorder.record(row.id, {
        ...patch,
        upstreamId: up.id,
        submittedAt: now,
        image: null,
        attempts: 0,
        ...this.scheduleAfter(patch.status ?? row.status, now, 0),
      });
      log.info({ predictionId: row.id, upstreamId: up.id }, 'submitted upstream');
    } catch (err) {
      this.onUpstreamError(row, err, 'submission');
    }
  }

  private async pollOne(row: PredictionRow): Promise<void> {
    const { client, recorder, log } = this.o;
    try {
      const up = await client.getResult(row.upstreamId!);
      const now = this.now();
      const patch = patchFromUpstream(up);
      if (!patch) log.warn({ predictionId: row.id, status: up.status }, 'upstream sent an unknown status; polling on');
      const sinceSubmit = now.getTime() - (row.submittedAt ?? row.createdAt).getTime();
      const schedule = this.scheduleAfter(patch?.status ?? row.status, now, sinceSubmit);
      const bookkeeping = { attempts: 0, pollCount: row.pollCount + 1, ...schedule };
      if (patch && changesVisibleState(row, patch)) recorder.record(row.id, { ...patch, ...bookkeeping });
      else recorder.reschedule(row.id, bookkeeping);
    } catch (err) {
      this.onUpstreamError(row, err, 'poll');
    }
  }

  private scheduleAfter(status: PredictionRow['status'], now: Date, sinceSubmitMs: number) {
    if (terminalStatuses.has(status)) return { nextPollAt: null, completedAt: now };
    return { nextPollAt: new Date(now.getTime() + nextPollDelay(sinceSubmitMs, this.o.schedule)) };
  }

  private onUpstreamError(row: PredictionRow, err: unknown, during: 'submission' | 'poll'): void {
    const e = err instanceof UpstreamError ? err : new UpstreamError('protocol', String(err));
    const now = this.now();
    const lost = during === 'poll' && e.kind === 'http' && e.status === 404;
    if ((during === 'submission' && !e.transient) || lost) {
      const error = lost ? `upstream no longer has this prediction: ${e.message}` : `upstream rejected the submission: ${e.message}`;
      this.o.recorder.record(row.id, { status: 'FAILED', error, nextPollAt: null, completedAt: now, image: null });
      this.o.log.warn({ predictionId: row.id, err: e.message }, `${during} failed permanently`);
      return;
    }
    const attempts = row.attempts + 1;
    const delay = Math.max(e.retryAfterMs ?? 0, backoffDelay(attempts - 1, RETRY_BASE_MS, this.o.schedule.maxMs));
    this.o.recorder.reschedule(row.id, { attempts, nextPollAt: new Date(now.getTime() + delay) });
    this.o.log.warn({ predictionId: row.id, err: e.message, attempts, retryInMs: delay }, `${during} failed; will retry`);
  }
}
