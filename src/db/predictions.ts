import { and, asc, count, desc, eq, getTableColumns, isNotNull, lt, lte, sql } from 'drizzle-orm';
import type { Db } from './client.js';
import { predictions, type NewPrediction, type PredictionRecord, type PredictionRow, type PredictionStatus } from './schema.js';

/** Fields the poller may change; `version` and `updatedAt` are maintained here. */
export type PredictionPatch = Partial<
  Omit<PredictionRecord, 'seq' | 'id' | 'version' | 'createdAt' | 'updatedAt' | 'prompt' | 'hasImage' | 'model'>
>;

/** What a new prediction is created with; everything else starts at its column default. */
const insertKeys = ['id', 'model', 'status', 'prompt', 'image', 'hasImage', 'enablePromptExpansion', 'createdAt', 'updatedAt', 'nextPollAt'] as const;
export type PredictionInsert = Pick<Required<NewPrediction>, (typeof insertKeys)[number]>;

/** Every column but `image`: a waiting image-to-video row holds up to 27 MB of base64 that no reader needs. */
const { image: imageColumn, ...rowColumns } = getTableColumns(predictions);

export interface ListOptions {
  first: number;
  /** Only rows inserted before this one (list order is newest first). */
  beforeSeq?: number;
  status?: PredictionStatus;
}

/** All SQL that touches predictions. Resolvers and the poller go through this, never through `db`. */
export class PredictionStore {
  private readonly byId;
  private readonly imageById;
  private readonly insertStmt;
  private readonly dueStmt;
  private readonly nextDueStmt;
  private readonly makeDueStmt;
  /** Prepared updates by patch shape: the poller writes a handful of shapes, millions of times. */
  private readonly updates = new Map<string, ReturnType<PredictionStore['prepareUpdate']>>();

  constructor(private readonly db: Db) {
    const byIdPlaceholder = eq(predictions.id, sql.placeholder('id'));
    this.byId = db.select(rowColumns).from(predictions).where(byIdPlaceholder).prepare();
    this.imageById = db.select({ image: imageColumn }).from(predictions).where(byIdPlaceholder).prepare();
    this.insertStmt = db
      .insert(predictions)
      .values(Object.fromEntries(insertKeys.map((k) => [k, sql.placeholder(k)])) as unknown as NewPrediction)
      .returning(rowColumns)
      .prepare();
    this.dueStmt = db
      .select({ id: predictions.id })
      .from(predictions)
      .where(and(isNotNull(predictions.nextPollAt), lte(predictions.nextPollAt, sql.placeholder('now'))))
      .orderBy(asc(predictions.nextPollAt))
      .limit(sql.placeholder('limit'))
      .prepare();
    this.nextDueStmt = db
      .select({ id: predictions.id, at: predictions.nextPollAt })
      .from(predictions)
      .where(isNotNull(predictions.nextPollAt))
      .orderBy(asc(predictions.nextPollAt))
      .limit(sql.placeholder('limit'))
      .prepare();
    this.makeDueStmt = db
      .update(predictions)
      .set({ nextPollAt: sql.placeholder('now') as never })
      .where(and(byIdPlaceholder, isNotNull(predictions.nextPollAt)))
      .prepare();
  }

  insert(row: PredictionInsert): PredictionRow {
    return this.insertStmt.get(row)!;
  }

  findById(id: string): PredictionRow | undefined {
    return this.byId.get({ id });
  }

  /** The image a prediction was created with, until upstream has accepted it. */
  imageOf(id: string): string | null {
    return this.imageById.get({ id })?.image ?? null;
  }

  list({ first, beforeSeq, status }: ListOptions): PredictionRow[] {
    return this.db
      .select(rowColumns)
      .from(predictions)
      .where(
        and(
          beforeSeq === undefined ? undefined : lt(predictions.seq, beforeSeq),
          status === undefined ? undefined : eq(predictions.status, status),
        ),
      )
      .orderBy(desc(predictions.seq))
      .limit(first)
      .all();
  }

  /** Ids of the rows whose next poll time has come, earliest first. */
  due(now: Date, limit: number): string[] {
    return this.dueStmt.all({ now: now.getTime(), limit }).map((r) => r.id);
  }

  /**
   * The earliest scheduled poll of a row not in `busy` (rows being worked on keep their past
   * `nextPollAt` until the work ends, and must not make the poller spin or sleep long).
   */
  nextDueAt(busy: ReadonlySet<string> | ReadonlyMap<string, unknown>): Date | undefined {
    return this.nextDueStmt.all({ limit: busy.size + 1 }).find((r) => !busy.has(r.id))?.at ?? undefined;
  }

  /** Pulls a non-terminal prediction's next poll to `now`; a terminal one is left alone. */
  makeDue(id: string, now: Date): void {
    this.makeDueStmt.run({ id, now });
  }

  /**
   * Applies a patch and returns the row as stored. With `now`, a visible change: `version` and
   * `updatedAt` move. Without, bookkeeping only (schedule, attempts), invisible to clients.
   * Built once per patch shape and reused: a query-builder update costs ~4× a prepared one
   * (../shared/PERFORMANCE.md), and this is the poller's hot path. Nulls are part of the shape
   * (written as SQL NULL), since column encoders such as timestamps cannot encode a null.
   */
  update(id: string, patch: PredictionPatch, now?: Date): PredictionRow | undefined {
    const keys = (Object.keys(patch) as (keyof PredictionPatch)[]).filter((k) => patch[k] !== undefined).sort();
    const shape = `${now ? 'visible' : 'quiet'}:${keys.map((k) => (patch[k] === null ? `${k}=null` : k)).join(',')}`;
    let statement = this.updates.get(shape);
    if (!statement) this.updates.set(shape, (statement = this.prepareUpdate(keys, patch, Boolean(now))));
    const values: Record<string, unknown> = { id };
    if (now) values.updatedAt = now;
    for (const k of keys) if (patch[k] !== null) values[k] = patch[k];
    return statement.get(values);
  }

  private prepareUpdate(keys: (keyof PredictionPatch)[], patch: PredictionPatch, visible: boolean) {
    const set: Record<string, unknown> = visible ? { updatedAt: sql.placeholder('updatedAt'), version: sql`${predictions.version} + 1` } : {};
    for (const k of keys) set[k] = patch[k] === null ? sql`null` : sql.placeholder(k);
    return this.db
      .update(predictions)
      .set(set as PredictionPatch)
      .where(eq(predictions.id, sql.placeholder('id')))
      .returning(rowColumns)
      .prepare();
  }

  count(): number {
    return this.db.select({ n: count() }).from(predictions).get()?.n ?? 0;
  }
}
