import type pg from 'pg';
import { QUEUED } from '../queue.js';
import type { Queue } from '../store.js';
import type { PgDb } from './client.js';

/** Has (or may have) a task upstream and is not final, worded as db/queue.ts has it (and the partial index). */
export const UPSTREAM = `status IN ('CREATED', 'PROCESSING') AND (upstream_id IS NOT NULL OR submit_started_at IS NOT NULL)`;
export { QUEUED };

/** Ids to leave out, as one text[] parameter. */
const NOT_IN = (n: number) => `NOT (id = ANY($${n}::text[]))`;

/**
 * The Postgres admission queue: db/queue.ts's definitions and answers, in plain SQL through the
 * pool (node-postgres reads timestamptz as Date, counts are cast to int4 so they arrive as numbers).
 *
 * `position` is a SQL count over the fair order's index range before the row, O(place). SQLite
 * answers it from an in-process order-statistics tree (db/queue-order.ts), which only works because
 * one process sees every write; with N instances writing, each would have to follow the others'
 * writes, so Postgres counts.
 */
export class PgQueue implements Queue {
  constructor(private readonly db: PgDb) {}

  private async rows<T extends pg.QueryResultRow>(text: string, values: unknown[]): Promise<T[]> {
    return (await this.db.$client.query<T>(text, values)).rows;
  }

  private async one<T>(text: string, values: unknown[]): Promise<T | null> {
    const [row] = await this.rows<{ v: T | null }>(text, values);
    return row?.v ?? null;
  }

  async due(now: Date, limit: number, busy: Iterable<string> = []): Promise<string[]> {
    const rows = await this.rows<{ id: string }>(
      `SELECT id FROM predictions WHERE ${QUEUED} AND next_poll_at <= $1 AND ${NOT_IN(2)} ORDER BY queue_turn, seq LIMIT $3`,
      [now, [...busy], limit],
    );
    return rows.map((r) => r.id);
  }

  async position(id: string): Promise<number | undefined> {
    const place = await this.one<number>(
      `SELECT ((SELECT count(*) FROM predictions WHERE ${QUEUED} AND (queue_turn, seq) < (me.queue_turn, me.seq)) + 1)::int AS v FROM predictions AS me WHERE me.id = $1 AND me.status = 'CREATED' AND me.upstream_id IS NULL AND me.submit_started_at IS NULL`,
      [id],
    );
    return place ?? undefined;
  }

  async nextDue(busy: Iterable<string> = []): Promise<Date | undefined> {
    return (await this.one<Date>(`SELECT next_poll_at AS v FROM predictions WHERE ${QUEUED} AND next_poll_at IS NOT NULL AND ${NOT_IN(1)} ORDER BY next_poll_at LIMIT 1`, [[...busy]])) ?? undefined;
  }

  async upstreamSubmittedAt(limit: number): Promise<Date[]> {
    const rows = await this.rows<{ at: Date }>(`SELECT coalesce(submitted_at, submit_started_at) AS at FROM predictions WHERE ${UPSTREAM} ORDER BY at LIMIT $1`, [limit]);
    return rows.map((r) => r.at);
  }

  async upstreamInFlight(except: Iterable<string> = []): Promise<number> {
    return (await this.one<number>(`SELECT count(*)::int AS v FROM predictions WHERE ${UPSTREAM} AND ${NOT_IN(1)}`, [[...except]])) ?? 0;
  }

  async submittedSince(since: Date, except: Iterable<string> = []): Promise<number> {
    // Each row once: its latest submission is submit_started_at while one is under way, else submitted_at.
    return (await this.one<number>(`SELECT count(*)::int AS v FROM predictions WHERE (submit_started_at >= $1 OR submitted_at >= $1) AND ${NOT_IN(2)}`, [since, [...except]])) ?? 0;
  }

  async oldestSubmissionSince(since: Date): Promise<Date | undefined> {
    return (await this.one<Date>(`SELECT min(coalesce(submit_started_at, submitted_at)) AS v FROM predictions WHERE submit_started_at >= $1 OR submitted_at >= $1`, [since])) ?? undefined;
  }

  async pastDeadline(now: Date, limit: number): Promise<string[]> {
    const rows = await this.rows<{ id: string }>(
      `SELECT id FROM predictions WHERE status IN ('CREATED', 'PROCESSING') AND deadline_at IS NOT NULL AND deadline_at <= $1 ORDER BY deadline_at LIMIT $2`,
      [now, limit],
    );
    return rows.map((r) => r.id);
  }

  async nextDeadline(): Promise<Date | undefined> {
    return (await this.one<Date>(`SELECT min(deadline_at) AS v FROM predictions WHERE status IN ('CREATED', 'PROCESSING') AND deadline_at IS NOT NULL`, [])) ?? undefined;
  }

  async recentRunMs(n = 20): Promise<number | undefined> {
    // Milliseconds as float8: timestamps are stored to the millisecond, so the mean is SQLite's.
    const ms = await this.one<number>(
      `SELECT avg(extract(epoch FROM completed_at - submitted_at) * 1000)::float8 AS v FROM (SELECT completed_at, submitted_at FROM predictions WHERE status = 'COMPLETED' AND submitted_at IS NOT NULL ORDER BY completed_at DESC LIMIT $1) AS recent`,
      [n],
    );
    return ms === null ? undefined : Math.round(ms);
  }
}
