import type pg from 'pg';
import type { AdmissionLimits } from '../../poller/admission.js';
import type { Leases } from '../store.js';
import type { PgDb } from './client.js';
import { QUEUED, UPSTREAM } from './queue.js';

const MINUTE_MS = 60_000;

/**
 * Claimable now: `greatest(next_poll_at, locked_until) <= now` (schema.ts's `claimableAt`), for the
 * queue claim, where `predictions_queue` gives the fair order and the planner picks the index.
 */
const CLAIMABLE_BY = (n: number) => `next_poll_at IS NOT NULL AND greatest(next_poll_at, locked_until) <= $${n}::timestamptz`;
/**
 * Leased for submission: queued, under a lease that has not ended; counted as in flight by every
 * instance. `locked_by IS NOT NULL` lets the count read `predictions_locked_by` (few rows) instead of
 * every queued row.
 */
const LEASED_QUEUED = (n: number) => `${QUEUED} AND locked_by IS NOT NULL AND locked_until > $${n}::timestamptz`;

export interface PgLeasesOptions {
  /** Unique per process: what `locked_by` holds. */
  instanceId: string;
  /** How long a claim holds a row (LEASE_MS): longer than any upstream request. */
  leaseMs: number;
  limits: AdmissionLimits;
}

/**
 * Leases on Postgres. A claim is one statement (or, for the queue, one transaction): it picks rows
 * with FOR UPDATE SKIP LOCKED, so two instances claiming at once never pick the same row and never
 * wait on each other, and sets `locked_by`/`locked_until` before committing. From then on the row's
 * claimable time (`greatest(next_poll_at, locked_until)`) is the lease's end: nobody else claims it
 * until it is released or runs out, which is how an instance SIGKILLed mid-step has its work taken over.
 * A claim also clears `poll_requested_at`: the claimed step looks at upstream after any request made before it.
 */
export class PgLeases implements Leases {
  constructor(
    private readonly db: PgDb,
    private readonly o: PgLeasesOptions,
  ) {}

  /**
   * Started rows due now (polls, reconciliations), soonest first. Written as the same condition as
   * `claimableAt` split in two (next_poll_at <= now, and no live lease) rather than through
   * `predictions_claimable`: that index also holds every queued row, whose next_poll_at is past while
   * it waits for admission, so a claim walking it from the oldest entry stepped over the whole
   * backlog (measured: 100,000 rows read, 85 ms, at 100,000 queued). `predictions_started_due` holds
   * started rows only; the rows it visits beyond those returned are the ones under a live lease,
   * i.e. being stepped right now by some instance.
   */
  async claimDue(now: Date, limit: number, busy: readonly string[] = []): Promise<string[]> {
    if (limit <= 0) return [];
    const { rows } = await this.db.$client.query<{ id: string; at: Date; seq: string }>(
      `WITH picked AS (
         SELECT id, next_poll_at AS at, seq FROM predictions
         WHERE (upstream_id IS NOT NULL OR submit_started_at IS NOT NULL) AND next_poll_at <= $1::timestamptz
           AND (locked_until IS NULL OR locked_until <= $1::timestamptz) AND NOT (id = ANY($5::text[]))
         ORDER BY next_poll_at LIMIT $2 FOR UPDATE SKIP LOCKED)
       UPDATE predictions AS p SET locked_by = $3, locked_until = $4::timestamptz, poll_requested_at = NULL
       FROM picked WHERE p.id = picked.id
       RETURNING p.id, picked.at, picked.seq`,
      [now.toISOString(), limit, this.o.instanceId, this.leaseEnd(now), [...busy]],
    );
    // RETURNING has no order of its own.
    return rows.sort((a, b) => a.at.getTime() - b.at.getTime() || Number(a.seq) - Number(b.seq)).map((r) => r.id);
  }

  /**
   * Queued rows this instance may submit now, in the fair order (queue_turn, seq). The account's
   * limits are judged inside one transaction that first locks the `account_state` row (SELECT … FOR
   * UPDATE): every instance's queue claim waits for the previous one to commit, then counts what it
   * left behind. In flight: rows with a task (or a submission under way) upstream, plus rows another
   * claim leased for submission whose lease is live (the claimer has not written its
   * `submit_started_at` yet, or is about to). The same leased rows count against the per-minute
   * window too. An account pause in force (SharedPause) admits nothing: the row is already locked.
   */
  async claimQueued(now: Date, limit: number, busy: readonly string[] = []): Promise<string[]> {
    if (limit <= 0) return [];
    return this.transaction(async (c) => {
      const at = now.toISOString();
      let state = await c.query<{ paused: boolean }>('SELECT coalesce(paused_until > $1::timestamptz, false) AS paused FROM account_state WHERE id = 1 FOR UPDATE', [at]);
      if (state.rows.length === 0) {
        // First use of this database: the row is made here, once (ON CONFLICT: another instance may make it now too).
        await c.query('INSERT INTO account_state (id) VALUES (1) ON CONFLICT (id) DO NOTHING');
        state = await c.query('SELECT coalesce(paused_until > $1::timestamptz, false) AS paused FROM account_state WHERE id = 1 FOR UPDATE', [at]);
      }
      if (state.rows[0]?.paused) return [];
      let n = limit;
      const { maxConcurrent, maxPerMinute } = this.o.limits;
      if (maxConcurrent !== undefined) {
        // Two counts, each over its own partial index, rather than one OR that reads every row.
        const { rows } = await c.query<{ n: number }>(
          `SELECT ((SELECT count(*) FROM predictions WHERE ${UPSTREAM}) + (SELECT count(*) FROM predictions WHERE ${LEASED_QUEUED(1)}))::int AS n`,
          [at],
        );
        n = Math.min(n, maxConcurrent - (rows[0]?.n ?? 0));
      }
      if (maxPerMinute !== undefined) {
        const since = new Date(now.getTime() - MINUTE_MS).toISOString();
        const { rows } = await c.query<{ n: number }>(
          // A leased row whose earlier submission is already in the window is counted once.
          `SELECT ((SELECT count(*) FROM predictions WHERE submit_started_at >= $2::timestamptz OR submitted_at >= $2::timestamptz)
             + (SELECT count(*) FROM predictions WHERE ${LEASED_QUEUED(1)} AND NOT coalesce(submitted_at >= $2::timestamptz, false)))::int AS n`,
          [at, since],
        );
        n = Math.min(n, maxPerMinute - (rows[0]?.n ?? 0));
      }
      if (n <= 0) return [];
      const { rows } = await c.query<{ id: string; queue_turn: number; seq: string }>(
        `WITH picked AS (
           SELECT id, queue_turn, seq FROM predictions
           WHERE ${QUEUED} AND ${CLAIMABLE_BY(1)} AND NOT (id = ANY($5::text[]))
           ORDER BY queue_turn, seq LIMIT $2 FOR UPDATE SKIP LOCKED)
         UPDATE predictions AS p SET locked_by = $3, locked_until = $4::timestamptz, poll_requested_at = NULL
         FROM picked WHERE p.id = picked.id
         RETURNING p.id, picked.queue_turn, picked.seq`,
        [at, n, this.o.instanceId, this.leaseEnd(now), [...busy]],
      );
      return rows.sort((a, b) => a.queue_turn - b.queue_turn || Number(a.seq) - Number(b.seq)).map((r) => r.id);
    });
  }

  /**
   * Ends this instance's leases (all, or these). A poll requested while the row was held
   * (`poll_requested_at`) is folded into `next_poll_at` here too, for a step that ended without
   * writing its schedule; a final row (next_poll_at null) stays final.
   */
  async release(ids?: readonly string[]): Promise<void> {
    if (ids && ids.length === 0) return;
    await this.db.$client.query(
      `UPDATE predictions SET locked_by = NULL, locked_until = NULL, poll_requested_at = NULL,
         next_poll_at = CASE WHEN next_poll_at IS NULL THEN NULL ELSE least(next_poll_at, poll_requested_at) END
       WHERE locked_by = $1 ${ids ? 'AND id = ANY($2::text[])' : ''}`,
      ids ? [this.o.instanceId, [...ids]] : [this.o.instanceId],
    );
  }

  /** Pushes out the end of this instance's own leases on these rows (a lease another instance took is left alone). */
  async renew(ids: readonly string[], now: Date): Promise<void> {
    if (!ids.length) return;
    await this.db.$client.query('UPDATE predictions SET locked_until = $3::timestamptz WHERE locked_by = $1 AND id = ANY($2::text[])', [
      this.o.instanceId,
      [...ids],
      this.leaseEnd(now),
    ]);
  }

  private leaseEnd(now: Date): string {
    return new Date(now.getTime() + this.o.leaseMs).toISOString();
  }

  private async transaction<T>(fn: (c: pg.PoolClient) => Promise<T>): Promise<T> {
    const c = await this.db.$client.connect();
    let broken = false;
    try {
      await c.query('BEGIN');
      const out = await fn(c);
      await c.query('COMMIT');
      return out;
    } catch (err) {
      await c.query('ROLLBACK').catch(() => {
        broken = true;
      });
      throw err;
    } finally {
      // A connection whose ROLLBACK failed is in an unknown state: closed, not pooled.
      c.release(broken);
    }
  }
}
