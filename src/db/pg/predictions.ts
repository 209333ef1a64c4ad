import { and, count, desc, eq, getTableColumns, inArray, isNotNull, isNull, lt, lte, or, type SQL, sql } from 'drizzle-orm';
import type { PredictionInsert, ListOptions, PredictionPatch } from '../predictions.js';
import { QUEUED } from '../queue.js';
import { liveStatuses, type PredictionRow } from '../schema.js';
import type { Predictions } from '../store.js';
import type { PgDb, PgTx } from './client.js';
import { predictions } from './schema.js';

/** Where a statement runs: the pool (one statement, its own transaction) or an open transaction. */
export type PgExec = PgDb | PgTx;

/**
 * Every column a reader gets: not the image (up to 27 MB of base64 no reader needs, as in SQLite),
 * and not the Postgres-only lease columns, so a row here is exactly SQLite's PredictionRow.
 */
const { image: imageColumn, lockedBy: _lockedBy, lockedUntil: _lockedUntil, pollRequestedAt: _pollRequestedAt, ...rowColumns } = getTableColumns(predictions);
export { rowColumns };

/** A time as a typed parameter: raw SQL compares it with timestamptz columns whatever the session's time zone. */
export const tsParam = (d: Date): SQL => sql`${d.toISOString()}::timestamptz`;

/** How a write is fenced by a lease (see recorder.ts): only while this instance holds it, and it renews it. */
export interface Fence {
  instanceId: string;
  /** The lease's new end. */
  leaseUntil: Date;
}

/**
 * The Postgres `Predictions`: the same answers as db/predictions.ts for the same rows. Built with the
 * query builder rather than prepared statements: a round trip to the server dwarfs the builder's
 * cost here, unlike in-process SQLite.
 */
export class PgPredictions implements Predictions {
  constructor(private readonly db: PgDb) {}

  /**
   * Inserts and returns the row as stored, with its fair queue turn computed as SQLite's insert does
   * (one after the owner's last waiting turn, never before the queue's head). Two inserts of one
   * owner at once could read the same last turn; the Creator serializes an owner's creations
   * (creator.ts), which is what keeps turns distinct. Other owners' inserts may interleave freely.
   */
  async insert(row: PredictionInsert, exec: PgExec = this.db): Promise<PredictionRow> {
    const owner = row.owner ?? null;
    const rows = await exec
      .insert(predictions)
      .values({
        id: row.id,
        model: row.model,
        status: row.status,
        prompt: row.prompt,
        image: row.image,
        hasImage: row.hasImage,
        enablePromptExpansion: row.enablePromptExpansion,
        createdAt: row.createdAt,
        updatedAt: row.updatedAt,
        nextPollAt: row.nextPollAt,
        owner,
        deadlineAt: row.deadlineAt ?? null,
        imageFile: row.imageFile ?? null,
        queueTurn: sql`(greatest(coalesce((SELECT max(queue_turn) FROM predictions WHERE owner IS NOT DISTINCT FROM ${owner}::text AND ${sql.raw(QUEUED)}), 0), coalesce((SELECT min(queue_turn) FROM predictions WHERE ${sql.raw(QUEUED)}), 1) - 1) + 1)`,
      })
      .returning(rowColumns);
    return exactlyOne(rows, 'insert');
  }

  async findById(id: string, exec: PgExec = this.db): Promise<PredictionRow | undefined> {
    const [row] = await exec.select(rowColumns).from(predictions).where(eq(predictions.id, id)).limit(1);
    return row;
  }

  async findByUpstreamId(upstreamId: string): Promise<PredictionRow | undefined> {
    const [row] = await this.db.select(rowColumns).from(predictions).where(eq(predictions.upstreamId, upstreamId)).limit(1);
    return row;
  }

  async imageOf(id: string): Promise<string | null> {
    const [row] = await this.db.select({ image: imageColumn }).from(predictions).where(eq(predictions.id, id)).limit(1);
    return row?.image ?? null;
  }

  async list({ first, beforeSeq, status, owner }: ListOptions): Promise<PredictionRow[]> {
    return this.db
      .select(rowColumns)
      .from(predictions)
      .where(
        and(
          beforeSeq === undefined ? undefined : lt(predictions.seq, beforeSeq),
          status === undefined ? undefined : eq(predictions.status, status),
          owner === undefined ? undefined : ownedBy(owner),
        ),
      )
      .orderBy(desc(predictions.seq))
      .limit(first);
  }

  async countUnfinished(owner: string | null, exec: PgExec = this.db): Promise<number> {
    const [row] = await exec
      .select({ n: count() })
      .from(predictions)
      .where(and(ownedBy(owner), inArray(predictions.status, [...liveStatuses])));
    return row?.n ?? 0;
  }

  async due(now: Date, limit: number): Promise<string[]> {
    const rows = await this.db
      .select({ id: predictions.id })
      .from(predictions)
      .where(and(started, isNotNull(predictions.nextPollAt), lte(predictions.nextPollAt, now)))
      .orderBy(predictions.nextPollAt)
      .limit(limit);
    return rows.map((r) => r.id);
  }

  async nextDueAt(busy: ReadonlySet<string> | ReadonlyMap<string, unknown>): Promise<Date | undefined> {
    // As in SQLite: the earliest busy.size + 1 rows hold at least one that is not busy.
    const rows = await this.db
      .select({ id: predictions.id, at: predictions.nextPollAt })
      .from(predictions)
      .where(and(started, isNotNull(predictions.nextPollAt)))
      .orderBy(predictions.nextPollAt)
      .limit(busy.size + 1);
    return rows.find((r) => !busy.has(r.id))?.at ?? undefined;
  }

  /**
   * Pulls a live prediction's next poll forward to `now` (never later), as SQLite's does. A row
   * under a lease also keeps the request in `poll_requested_at` (the earliest one): its holder is
   * mid-step, its `next_poll_at` is already past, and the holder's next write of `next_poll_at` takes
   * the earlier of its own schedule and this (recorder.ts), so the webhook's poll is not lost.
   */
  async makeDue(id: string, now: Date): Promise<void> {
    const at = tsParam(now);
    await this.db
      .update(predictions)
      .set({
        nextPollAt: sql`CASE WHEN next_poll_at > ${at} THEN ${at} ELSE next_poll_at END`,
        pollRequestedAt: sql`CASE WHEN locked_by IS NOT NULL THEN least(poll_requested_at, ${at}) ELSE poll_requested_at END`,
      })
      .where(and(eq(predictions.id, id), isNotNull(predictions.nextPollAt)));
  }

  /** A real write that changes nothing: rewrites the newest row's version; fails as any write would. */
  async probeWrite(): Promise<void> {
    await this.db.execute(sql`UPDATE predictions SET version = version WHERE seq = (SELECT max(seq) FROM predictions)`);
  }

  /**
   * Applies a patch to a live row and returns it as stored, or undefined when no live row (or, with
   * `fence`, none this instance holds) matched. With `visibleAt`, a visible change: version and
   * updatedAt move, as in SQLite. With `fence`, the write also requires `locked_by = instanceId`,
   * renews the lease, and takes the earlier of its `next_poll_at` and a poll requested meanwhile.
   */
  async update(exec: PgExec, id: string, patch: PredictionPatch, opts: { visibleAt?: Date; fence?: Fence } = {}): Promise<PredictionRow | undefined> {
    checkDates(patch);
    const set: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(patch)) if (v !== undefined) set[k] = v;
    const { visibleAt, fence } = opts;
    if (visibleAt) {
      set.updatedAt = visibleAt;
      set.version = sql`${predictions.version} + 1`;
    }
    if (fence) {
      set.lockedUntil = fence.leaseUntil;
      if (patch.nextPollAt) set.nextPollAt = sql`least(${tsParam(patch.nextPollAt)}, ${predictions.pollRequestedAt})`;
    }
    // A patch with nothing to write still answers whether a live row matched.
    if (Object.keys(set).length === 0) set.version = sql`${predictions.version}`;
    const rows = await exec
      .update(predictions)
      .set(set as PredictionPatch)
      // A final prediction never changes again (see db/predictions.ts); a fenced write also needs the lease.
      .where(and(eq(predictions.id, id), inArray(predictions.status, [...liveStatuses]), fence ? eq(predictions.lockedBy, fence.instanceId) : undefined))
      .returning(rowColumns);
    return rows.length ? exactlyOne(rows, 'update') : undefined;
  }
}

/** Has (or may have) a task upstream: what the poller polls or reconciles (db/predictions.ts's STARTED). */
export const started = or(isNotNull(predictions.upstreamId), isNotNull(predictions.submitStartedAt));

const ownedBy = (owner: string | null) => (owner === null ? isNull(predictions.owner) : eq(predictions.owner, owner));

/** A write that did not produce exactly one row is a bug or a broken store, never a success. */
export function exactlyOne<T>(rows: T[], what: string): T {
  const [row] = rows;
  if (rows.length !== 1 || row === undefined) throw new Error(`${what} affected ${rows.length} rows, expected 1`);
  return row;
}

/** As in db/predictions.ts: a NULL `nextPollAt` means final, so an invalid computed date is refused, not stored. */
function checkDates(patch: PredictionPatch): void {
  for (const [k, v] of Object.entries(patch)) {
    if (v instanceof Date && !Number.isFinite(v.getTime())) throw new RangeError(`refusing to store an invalid date in ${k}`);
  }
}
