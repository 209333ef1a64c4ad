import type { Estimate } from '../db/queue.js';
import type { Queue } from '../db/store.js';
import type { PredictionRow } from '../db/schema.js';

export interface AdmissionLimits {
  /** Most predictions with a task upstream at once (the account tier's concurrency); undefined: no limit. */
  maxConcurrent?: number;
  /** Most submissions started in any 60 s; undefined: no limit. */
  maxPerMinute?: number;
}

export type { Estimate } from '../db/queue.js';

const MINUTE_MS = 60_000;
/** Past this place the start is extrapolated instead of simulated slot by slot. */
const SIMULATED_PLACES = 10_000;

/**
 * The admission queue's rules: how many queued predictions may be submitted now without going over
 * the account's tier (WaveSpeed Bronze: 2 concurrent video tasks, 2 a minute), and when a queued one
 * can expect to start. Counts come from the database, so they hold across restarts (and, on a shared
 * database, across processes); `submitting` are this process's submissions not yet (or just) written.
 */
export class Admission {
  constructor(
    private readonly queue: Queue,
    readonly limits: AdmissionLimits,
  ) {}

  /** How many queued predictions may be submitted now. */
  async allowance(now: Date, submitting: ReadonlySet<string>): Promise<number> {
    let n = Number.POSITIVE_INFINITY;
    const { maxConcurrent, maxPerMinute } = this.limits;
    if (maxConcurrent !== undefined) n = Math.min(n, maxConcurrent - (await this.queue.upstreamInFlight(submitting)) - submitting.size);
    if (maxPerMinute !== undefined) {
      n = Math.min(n, maxPerMinute - (await this.queue.submittedSince(new Date(now.getTime() - MINUTE_MS), submitting)) - submitting.size);
    }
    return Math.max(0, n);
  }

  /**
   * When the next queued prediction may be admitted: now, the moment the per-minute window frees a
   * place, or undefined when it waits for a task to end (which wakes the poller by itself).
   */
  async nextAdmissionAt(now: Date, submitting: ReadonlySet<string>): Promise<Date | undefined> {
    if ((await this.allowance(now, submitting)) > 0) return now;
    const { maxConcurrent, maxPerMinute } = this.limits;
    if (maxConcurrent !== undefined && maxConcurrent - (await this.queue.upstreamInFlight(submitting)) - submitting.size <= 0) return undefined;
    if (maxPerMinute === undefined) return undefined;
    const oldest = await this.queue.oldestSubmissionSince(new Date(now.getTime() - MINUTE_MS));
    // No recorded submission in the window: the budget is held by this process's own submissions
    // still under way (an upload, say), and the end of each wakes the poller.
    return oldest ? new Date(oldest.getTime() + MINUTE_MS + 1) : undefined;
  }

  /**
   * Queue place and expected start and completion of one prediction, from the mean run time of
   * recent completed predictions (null until one has completed). Slots are simulated: each task
   * upstream frees its slot a mean run after its submission, and each queued prediction takes the
   * first slot free, within the per-minute budget.
   */
  async estimate(row: PredictionRow, now: Date, inFlightSubmittedAt: () => Promise<Date[]>): Promise<Estimate> {
    const live = row.status === 'CREATED' || row.status === 'PROCESSING';
    if (!live) return { queuePosition: null, estimatedStartAt: null, estimatedCompletionAt: null };
    const queued = !row.upstreamId && !row.submitStartedAt;
    const position = queued ? ((await this.queue.position(row.id)) ?? null) : null;
    const runMs = await this.queue.recentRunMs();
    if (runMs === undefined) return { queuePosition: position, estimatedStartAt: null, estimatedCompletionAt: null };
    const started = row.submittedAt ?? row.submitStartedAt;
    if (!queued || position === null) {
      const start = started ?? now;
      return { queuePosition: null, estimatedStartAt: start, estimatedCompletionAt: new Date(Math.max(now.getTime(), start.getTime() + runMs)) };
    }
    // Upstream's tasks are read only when a concurrency limit makes them matter.
    const slotStart = this.limits.maxConcurrent === undefined ? now.getTime() : this.slotStart(position, now, runMs, await inFlightSubmittedAt());
    const start = new Date(Math.max(slotStart, await this.budgetStart(position, now)));
    return { queuePosition: position, estimatedStartAt: start, estimatedCompletionAt: new Date(start.getTime() + runMs) };
  }

  private slotStart(position: number, now: Date, runMs: number, inFlightSubmittedAt: Date[]): number {
    const slots = this.limits.maxConcurrent;
    if (slots === undefined) return now.getTime();
    const t = now.getTime();
    // When each slot frees: tasks upstream end a mean run after their submission; free slots now.
    const free = inFlightSubmittedAt
      .map((at) => Math.max(t, at.getTime() + runMs))
      .slice(0, slots);
    while (free.length < slots) free.push(t);
    free.sort((a, b) => a - b);
    const [soonest = t] = free;
    if (position > SIMULATED_PLACES) return soonest + Math.ceil((position - 1) / slots) * runMs;
    let start = t;
    for (let i = 0; i < position; i++) {
      start = free.shift() ?? start;
      insertSorted(free, start + runMs);
    }
    return start;
  }

  private async budgetStart(position: number, now: Date): Promise<number> {
    const perMinute = this.limits.maxPerMinute;
    if (perMinute === undefined) return now.getTime();
    const used = await this.queue.submittedSince(new Date(now.getTime() - MINUTE_MS));
    const ahead = used + position; // submissions in the window, counting this one
    if (ahead <= perMinute) return now.getTime();
    return now.getTime() + Math.ceil((ahead - perMinute) / perMinute) * MINUTE_MS;
  }
}

function insertSorted(xs: number[], x: number): void {
  const after = xs.findIndex((y) => y > x);
  xs.splice(after === -1 ? xs.length : after, 0, x);
}
