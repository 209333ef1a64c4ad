import type { Db } from './client.js';
import { ASK_SQL, QueueOrder } from './queue-order.js';

/** Where a prediction stands in the admission queue, and when it can expect to start and end. */
export interface Estimate {
  /** 1-based place in the queue; null once submitted (or final). */
  queuePosition: number | null;
  estimatedStartAt: Date | null;
  estimatedCompletionAt: Date | null;
}

/**
 * A prediction is queued while it has no upstream task and no submission under way: CREATED, no
 * `upstream_id`, no `submit_started_at`. The queue is fair: oldest first within each owner (an API
 * key, or open mode), and owners take turns — each prediction gets a turn at creation (its
 * owner's last waiting turn + 1, never before the queue's head: see PredictionStore.insert), and the
 * queue is ordered by (turn, seq). Plain SQL through better-sqlite3: row values and partial indexes
 * say this in one statement each. The conditions are written exactly as the partial indexes in
 * db/schema.ts have them, which is what lets SQLite use those indexes.
 */
export const QUEUED = `status = 'CREATED' AND upstream_id IS NULL AND submit_started_at IS NULL`;
/** Has (or may have) a task upstream and is not final: what counts against the account's concurrency. */
const UPSTREAM = `status IN ('CREATED', 'PROCESSING') AND (upstream_id IS NOT NULL OR submit_started_at IS NOT NULL)`;


/** Ids passed as one JSON array parameter. */
const NOT_IN = `id NOT IN (SELECT value FROM json_each(?))`;

export class QueueStore {
  private readonly dueStmt;
  private readonly positionStmt;
  private readonly upstreamStmt;
  private readonly submittedSinceStmt;
  private readonly oldestSubmissionSinceStmt;
  private readonly pastDeadlineStmt;
  private readonly nextDeadlineStmt;
  private readonly runMsStmt;
  private readonly upstreamTimesStmt;
  private readonly nextQueuedStmt;
  private readonly order;

  constructor(db: Db) {
    const c = db.$client;
    this.order = QueueOrder.of(c, QUEUED);
    // INDEXED BY: without statistics the planner reads `upstream_id IS NULL` off the unique index on
    // upstream_id, a scan of every waiting row; naming the partial index keeps each pass O(result).
    this.dueStmt = c
      .prepare(`SELECT id FROM predictions INDEXED BY predictions_queue WHERE ${QUEUED} AND next_poll_at <= ? AND ${NOT_IN} ORDER BY queue_turn, seq LIMIT ?`)
      .pluck();
    this.positionStmt = c
      .prepare(
        `SELECT (SELECT count(*) FROM predictions INDEXED BY predictions_queue WHERE ${QUEUED} AND (queue_turn, seq) < (me.queue_turn, me.seq)) + 1 FROM predictions AS me WHERE me.id = ? AND me.status = 'CREATED' AND me.upstream_id IS NULL AND me.submit_started_at IS NULL`,
      )
      .pluck();
    this.upstreamTimesStmt = c
      .prepare(`SELECT coalesce(submitted_at, submit_started_at) AS at FROM predictions INDEXED BY predictions_upstream_live WHERE ${UPSTREAM} ORDER BY at LIMIT ?`)
      .pluck();
    this.nextQueuedStmt = c
      .prepare(`SELECT next_poll_at FROM predictions INDEXED BY predictions_queue_due WHERE ${QUEUED} AND ${NOT_IN} ORDER BY next_poll_at LIMIT 1`)
      .pluck();
    this.upstreamStmt = c.prepare(`SELECT count(*) FROM predictions INDEXED BY predictions_upstream_live WHERE ${UPSTREAM} AND ${NOT_IN}`).pluck();
    this.submittedSinceStmt = c
      // A row's latest submission is its submit_started_at while one is under way, else its
      // submitted_at (accepting clears the former): either in the window counts the row once.
      .prepare(`SELECT count(*) FROM predictions WHERE (submit_started_at >= ? OR submitted_at >= ?) AND ${NOT_IN}`)
      .pluck();
    this.oldestSubmissionSinceStmt = c
      .prepare(`SELECT min(coalesce(submit_started_at, submitted_at)) FROM predictions WHERE (submit_started_at >= ? OR submitted_at >= ?)`)
      .pluck();
    this.pastDeadlineStmt = c
      .prepare(
        `SELECT id FROM predictions INDEXED BY predictions_deadline_live WHERE status IN ('CREATED', 'PROCESSING') AND deadline_at IS NOT NULL AND deadline_at <= ? ORDER BY deadline_at LIMIT ?`,
      )
      .pluck();
    this.nextDeadlineStmt = c
      .prepare(`SELECT min(deadline_at) FROM predictions INDEXED BY predictions_deadline_live WHERE status IN ('CREATED', 'PROCESSING') AND deadline_at IS NOT NULL`)
      .pluck();
    this.runMsStmt = c
      .prepare(
        `SELECT avg(completed_at - submitted_at) FROM (SELECT completed_at, submitted_at FROM predictions INDEXED BY predictions_completed_runs WHERE status = 'COMPLETED' AND submitted_at IS NOT NULL ORDER BY completed_at DESC LIMIT ?)`,
      )
      .pluck();
  }

  /** Queued predictions due for submission, in fair order, leaving out `busy` ones. */
  due(now: Date, limit: number, busy: Iterable<string> = []): string[] {
    return this.dueStmt.all(now.getTime(), JSON.stringify([...busy]), limit) as string[];
  }

  /**
   * 1-based place in the fair queue; undefined when the prediction is not queued. A rank in the
   * connection's QueueOrder, O(log n); SQL answers when that cannot tell (see db/queue-order.ts).
   */
  position(id: string): number | undefined {
    const place = this.order.position(id);
    return place === ASK_SQL ? this.positionBySql(id) : place;
  }

  /** The same place counted by SQL over the index range before it, O(place): the reference `position` is tested against. */
  positionBySql(id: string): number | undefined {
    return (this.positionStmt.get(id) as number | undefined) ?? undefined;
  }

  /** When the earliest queued prediction not in `busy` is due, if any. */
  nextDue(busy: Iterable<string> = []): Date | undefined {
    const at = this.nextQueuedStmt.get(JSON.stringify([...busy])) as number | null | undefined;
    return at == null ? undefined : new Date(at);
  }

  /** Submission times of the predictions that hold a task upstream, oldest first. */
  upstreamSubmittedAt(limit: number): Date[] {
    return (this.upstreamTimesStmt.all(limit) as number[]).map((ms) => new Date(ms));
  }

  /** Predictions with a task (possibly) upstream and not final, leaving out `except`. */
  upstreamInFlight(except: Iterable<string> = []): number {
    return this.upstreamStmt.get(JSON.stringify([...except])) as number;
  }

  /** Submissions started since `since`, leaving out `except`. */
  submittedSince(since: Date, except: Iterable<string> = []): number {
    return this.submittedSinceStmt.get(since.getTime(), since.getTime(), JSON.stringify([...except])) as number;
  }

  /** When the oldest submission since `since` started: the per-minute window frees a place a minute after it. */
  oldestSubmissionSince(since: Date): Date | undefined {
    const at = this.oldestSubmissionSinceStmt.get(since.getTime(), since.getTime()) as number | null;
    return at === null ? undefined : new Date(at);
  }

  /** Live predictions whose deadline has passed, earliest first. */
  pastDeadline(now: Date, limit: number): string[] {
    return this.pastDeadlineStmt.all(now.getTime(), limit) as string[];
  }

  nextDeadline(): Date | undefined {
    const at = this.nextDeadlineStmt.get() as number | null;
    return at === null ? undefined : new Date(at);
  }

  /** Mean time from submission to completion of the last `n` completed predictions; undefined before the first. */
  recentRunMs(n = 20): number | undefined {
    const ms = this.runMsStmt.get(n) as number | null;
    return ms === null ? undefined : Math.round(ms);
  }
}
