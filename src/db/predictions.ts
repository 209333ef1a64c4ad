import { and, count, desc, eq, getTableColumns, gt, inArray, isNotNull, isNull, lt, sql } from 'drizzle-orm';
import type { Db } from './client.js';
import { QUEUED } from './queue.js';
import { liveStatuses, predictions, type NewPrediction, type PredictionRecord, type PredictionRow, type PredictionStatus } from './schema.js';

/** Fields the poller may change; `version` and `updatedAt` are maintained here. */
export type PredictionPatch = Partial<
  Omit<PredictionRecord, 'seq' | 'id' | 'version' | 'createdAt' | 'updatedAt' | 'prompt' | 'hasImage' | 'model'>
>;

/** What a new prediction is created with; everything else starts at its column default. */
const insertKeys = ['id', 'model', 'status', 'prompt', 'image', 'hasImage', 'enablePromptExpansion', 'createdAt', 'updatedAt', 'nextPollAt', 'owner', 'deadlineAt', 'imageFile'] as const;
/** `owner` is the creating key's id; absent or null for a prediction created in open mode. */
export type PredictionInsert = Omit<Pick<Required<NewPrediction>, (typeof insertKeys)[number]>, 'owner' | 'deadlineAt' | 'imageFile'> & {
  owner?: string | null;
  deadlineAt?: Date | null;
  imageFile?: string | null;
};

/** Every column but `image`: a waiting image-to-video row holds up to 27 MB of base64 that no reader needs. */
const { image: imageColumn, ...rowColumns } = getTableColumns(predictions);

export interface ListOptions {
  first: number;
  /** Only rows inserted before this one (list order is newest first). */
  beforeSeq?: number;
  status?: PredictionStatus;
  /** Only this owner's rows (null: open mode's); undefined: every owner's (tools and tests only). */
  owner?: string | null;
}

/** All SQL that touches predictions. Resolvers and the poller go through this, never through `db`. */
export class PredictionStore {
  private readonly byId;
  private readonly imageById;
  private readonly byUpstreamId;
  private readonly insertStmt;
  private readonly dueStmt;
  private readonly nextDueStmt;
  private readonly makeDueStmt;
  private readonly probeStmt;
  private readonly unfinishedOf;
  private readonly unfinishedOfNobody;
  /** Prepared list queries by the filters they take (see prepareList). */
  private readonly lists = new Map<string, ReturnType<PredictionStore['prepareList']>>();
  /** Prepared updates by patch shape: the poller writes a handful of shapes, millions of times. */
  private readonly updates = new Map<string, ReturnType<PredictionStore['prepareUpdate']>>();

  constructor(private readonly db: Db) {
    const byIdPlaceholder = eq(predictions.id, sql.placeholder('id'));
    this.byId = db.select(rowColumns).from(predictions).where(byIdPlaceholder).prepare();
    this.byUpstreamId = db.select(rowColumns).from(predictions).where(eq(predictions.upstreamId, sql.placeholder('upstreamId'))).prepare();
    this.imageById = db.select({ image: imageColumn }).from(predictions).where(byIdPlaceholder).prepare();
    this.insertStmt = db
      .insert(predictions)
      // A nullable timestamp goes in as raw epoch ms (or NULL): Drizzle runs placeholders through the
      // column's encoder, and a timestamp encoder cannot encode a null.
      .values(
        {
          ...Object.fromEntries(insertKeys.map((k) => [k, k === 'deadlineAt' ? sql`${sql.placeholder('deadlineAtMs')}` : sql.placeholder(k)])),
          // The admission queue's fair turn (db/queue.ts): one after the owner's last waiting
          // prediction, and never before the queue's head, so an owner that was away comes right
          // after the head rather than before everyone or after everyone.
          // Each lookup names its partial index (see db/queue.ts for why), so an insert stays O(log n).
          queueTurn: sql`(max(coalesce((SELECT max(queue_turn) FROM predictions INDEXED BY predictions_queue_owner WHERE owner IS ${sql.placeholder('owner')} AND ${sql.raw(QUEUED)}), 0), coalesce((SELECT min(queue_turn) FROM predictions INDEXED BY predictions_queue WHERE ${sql.raw(QUEUED)}), 1) - 1) + 1)`,
        } as unknown as NewPrediction,
      )
      .returning(rowColumns)
      .prepare();
    // Raw SQL naming the partial index of started rows: the planner, without statistics, would walk
    // the whole next_poll_at index past every queued row (100,000 in bench/queue.ts) on each pass.
    const STARTED = 'FROM predictions INDEXED BY predictions_started_due WHERE (upstream_id IS NOT NULL OR submit_started_at IS NOT NULL) AND next_poll_at IS NOT NULL';
    this.dueStmt = db.$client.prepare(`SELECT id ${STARTED} AND next_poll_at <= ? ORDER BY next_poll_at LIMIT ?`).pluck();
    this.nextDueStmt = db.$client.prepare(`SELECT id, next_poll_at AS at ${STARTED} ORDER BY next_poll_at LIMIT ?`);
    this.probeStmt = db.$client.prepare('UPDATE predictions SET version = version WHERE seq = (SELECT max(seq) FROM predictions)');
    // Prepared once: built by the query builder on every call, SQLite compiled the statement each
    // time, ~130 µs against ~14 µs (issue 18), and a createVideo under a key with an in-flight
    // quota counts twice.
    const unfinished = inArray(predictions.status, ['CREATED', 'PROCESSING']);
    this.unfinishedOf = db.select({ n: count() }).from(predictions).where(and(ownerIsBound, unfinished)).prepare();
    this.unfinishedOfNobody = db.select({ n: count() }).from(predictions).where(and(ownerIsNull, unfinished)).prepare();
    this.makeDueStmt = db
      .update(predictions)
      .set({ nextPollAt: sql.placeholder('now') as never })
      .where(and(byIdPlaceholder, isNotNull(predictions.nextPollAt), gt(predictions.nextPollAt, sql.placeholder('nowMs'))))
      .prepare();
  }

  /**
   * Inserts and returns the row as stored. `.all()`, never `.get()`: `.get()` steps a RETURNING
   * statement once and never sees the autocommit that follows, so a commit refused by a full disk
   * (SQLITE_FULL on the WAL append) went unnoticed and callers got ids of rows that do not exist.
   * `.all()` steps to SQLITE_DONE, where the commit happens, and throws its error.
   */
  insert(row: PredictionInsert): PredictionRow {
    return exactlyOne(this.insertStmt.all({ ...row, owner: row.owner ?? null, deadlineAtMs: row.deadlineAt?.getTime() ?? null, imageFile: row.imageFile ?? null }), 'insert');
  }

  /** The prediction that owns this upstream task, if any. */
  findByUpstreamId(upstreamId: string): PredictionRow | undefined {
    return this.byUpstreamId.get({ upstreamId });
  }

  findById(id: string): PredictionRow | undefined {
    return this.byId.get({ id });
  }

  /** The image a prediction was created with, until upstream has accepted it. */
  imageOf(id: string): string | null {
    return this.imageById.get({ id })?.image ?? null;
  }

  list({ first, beforeSeq, status, owner }: ListOptions): PredictionRow[] {
    const shape = `${beforeSeq === undefined ? '' : 'b'}${status === undefined ? '' : 's'}${owner === undefined ? '' : owner === null ? 'n' : 'o'}`;
    let stmt = this.lists.get(shape);
    if (!stmt) {
      stmt = this.prepareList(beforeSeq !== undefined, status !== undefined, owner);
      this.lists.set(shape, stmt);
    }
    return stmt.all({ first, beforeSeq, status, owner });
  }

  /**
   * The list's query for one combination of its filters, prepared once: built by the query builder
   * on every call, SQLite compiled it each time (issue 18, BENCHMARKS.md session 11). At most twelve.
   */
  private prepareList(before: boolean, byStatus: boolean, owner: string | null | undefined) {
    return this.db
      .select(rowColumns)
      .from(predictions)
      .where(
        and(
          before ? lt(predictions.seq, sql.placeholder('beforeSeq')) : undefined,
          byStatus ? eq(predictions.status, sql.placeholder('status')) : undefined,
          owner === undefined ? undefined : owner === null ? ownerIsNull : ownerIsBound,
        ),
      )
      .orderBy(desc(predictions.seq))
      .limit(sql.placeholder('first'))
      .prepare();
  }

  /** How many of this owner's predictions are not yet COMPLETED or FAILED (the in-flight quota). */
  countUnfinished(owner: string | null): number {
    return (owner === null ? this.unfinishedOfNobody.get() : this.unfinishedOf.get({ owner }))?.n ?? 0;
  }

  /** Ids of the submitted (or reconciling) rows whose next poll time has come, earliest first. */
  due(now: Date, limit: number): string[] {
    return this.dueStmt.all(now.getTime(), limit) as string[];
  }

  /**
   * The earliest scheduled poll of a row not in `busy` (rows being worked on keep their past
   * `nextPollAt` until the work ends, and must not make the poller spin or sleep long).
   */
  nextDueAt(busy: ReadonlySet<string> | ReadonlyMap<string, unknown>): Date | undefined {
    const next = (this.nextDueStmt.all(busy.size + 1) as { id: string; at: number }[]).find((r) => !busy.has(r.id));
    return next ? new Date(next.at) : undefined;
  }

  /** Pulls a non-terminal prediction's next poll forward to `now` (never later); a terminal one is left alone. */
  makeDue(id: string, now: Date): void {
    this.makeDueStmt.run({ id, now, nowMs: now.getTime() });
  }

  /**
   * Applies a patch and returns the row as stored. With `now`, a visible change: `version` and
   * `updatedAt` move. Without, bookkeeping only (schedule, attempts), invisible to clients.
   * Built once per patch shape and reused: a query-builder update costs ~4× a prepared one
   * (../shared/PERFORMANCE.md), and this is the poller's hot path. Nulls are part of the shape
   * (written as SQL NULL), since column encoders such as timestamps cannot encode a null.
   */
  update(id: string, patch: PredictionPatch, now?: Date): PredictionRow | undefined {
    checkDates(patch);
    const keys = (Object.keys(patch) as (keyof PredictionPatch)[]).filter((k) => patch[k] !== undefined).sort();
    const shape = `${now ? 'visible' : 'quiet'}:${keys.map((k) => (patch[k] === null ? `${k}=null` : k)).join(',')}`;
    let statement = this.updates.get(shape);
    if (!statement) {
      statement = this.prepareUpdate(keys, patch, Boolean(now));
      this.updates.set(shape, statement);
    }
    const values: Record<string, unknown> = { id };
    if (now) values.updatedAt = now;
    for (const k of keys) if (patch[k] !== null) values[k] = patch[k];
    // `.all()` for the same reason as in insert(): the commit's error must reach the caller.
    const rows = statement.all(values);
    return rows.length ? exactlyOne(rows, 'update') : undefined;
  }

  private prepareUpdate(keys: (keyof PredictionPatch)[], patch: PredictionPatch, visible: boolean) {
    const set: Record<string, unknown> = visible ? { updatedAt: sql.placeholder('updatedAt'), version: sql`${predictions.version} + 1` } : {};
    for (const k of keys) set[k] = patch[k] === null ? sql`null` : sql.placeholder(k);
    return this.db
      .update(predictions)
      .set(set as PredictionPatch)
      // A final prediction never changes again: a poll, a submission's answer or a retry that lands
      // after a cancel (or any other end) writes nothing.
      .where(and(eq(predictions.id, sql.placeholder('id')), inArray(predictions.status, [...liveStatuses])))
      .returning(rowColumns)
      .prepare();
  }

  /**
   * Whether the store takes a write now: rewrites the newest row unchanged (a real page write, so a
   * full disk or a read-only file fails it). Throws what the write throws.
   */
  probeWrite(): void {
    this.probeStmt.run();
  }

  /** Rows that exist, for tests and checks of what was reported done. */
  count(): number {
    return this.db.select({ n: count() }).from(predictions).get()?.n ?? 0;
  }
}

/**
 * Prepared statements' owner filters: open mode's NULL owner, or the owner bound to the placeholder
 * `owner`. A statement for each rather than one `IS ?`, so each keeps its use of the owner indexes.
 */
const ownerIsNull = isNull(predictions.owner);
const ownerIsBound = eq(predictions.owner, sql.placeholder('owner'));

/** A write that did not produce exactly one row is a bug or a broken store, never a success. */
function exactlyOne<T>(rows: T[], what: string): T {
  const [row] = rows;
  if (rows.length !== 1 || row === undefined) throw new Error(`${what} affected ${rows.length} rows, expected 1`);
  return row;
}

/**
 * An invalid Date would be stored as NULL, and a NULL `nextPollAt` means "final, never look
 * again": a computed time is checked before it can silently end a prediction's life.
 */
function checkDates(patch: PredictionPatch): void {
  for (const [k, v] of Object.entries(patch)) {
    if (v instanceof Date && !Number.isFinite(v.getTime())) throw new RangeError(`refusing to store an invalid date in ${k}`);
  }
}
