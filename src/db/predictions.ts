import { and, asc, count, desc, eq, isNotNull, lt, lte, min, sql } from 'drizzle-orm';
import type { Db } from './client.js';
import { predictions, type NewPrediction, type PredictionRow, type PredictionStatus } from './schema.js';

/** Fields the poller may change; `version` and `updatedAt` are maintained here. */
export type PredictionPatch = Partial<
  Omit<PredictionRow, 'seq' | 'id' | 'version' | 'createdAt' | 'updatedAt' | 'prompt' | 'hasImage' | 'model'>
>;

/** What a new prediction is created with; everything else starts at its column default. */
const insertKeys = ['id', 'model', 'status', 'prompt', 'image', 'hasImage', 'enablePromptExpansion', 'createdAt', 'updatedAt', 'nextPollAt'] as const;
export type PredictionInsert = Pick<Required<NewPrediction>, (typeof insertKeys)[number]>;

export interface ListOptions {
  first: number;
  /** Only rows inserted before this one (list order is newest first). */
  beforeSeq?: number;
  status?: PredictionStatus;
}

/** All SQL that touches predictions. Resolvers and the poller go through this, never through `db`. */
export class PredictionStore {
  private readonly byId;
  private readonly insertStmt;
  private readonly dueStmt;
  private readonly nextDueStmt;
  /** Prepared updates by patch shape: the poller writes a handful of shapes, millions of times. */
  private readonly updates = new Map<string, ReturnType<PredictionStore['prepareUpdate']>>();

  constructor(private readonly db: Db) {
    this.byId = db
      .select()
      .from(predictions)
      .where(eq(predictions.id, sql.placeholder('id')))
      .prepare();
    this.insertStmt = db
      .insert(predictions)
      .values(Object.fromEntries(insertKeys.map((k) => [k, sql.placeholder(k)])) as unknown as NewPrediction)
      .returning()
      .prepare();
    // Ids only: full rows can carry a 27 MB image, and 64 of them cost ~500 µs even without one.
    this.dueStmt = db
      .select({ id: predictions.id })
      .from(predictions)
      .where(and(isNotNull(predictions.nextPollAt), lte(predictions.nextPollAt, sql.placeholder('now'))))
      .orderBy(asc(predictions.nextPollAt))
      .limit(sql.placeholder('limit'))
      .prepare();
    this.nextDueStmt = db.select({ at: min(predictions.nextPollAt) }).from(predictions).prepare();
  }

  insert(row: PredictionInsert): PredictionRow {
    return this.insertStmt.get(row)!;
  }

  findById(id: string): PredictionRow | undefined {
    return this.byId.get({ id });
  }

  list({ first, beforeSeq, status }: ListOptions): PredictionRow[] {
    return this.db
      .select()
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

  /** The earliest scheduled poll, so the poller can sleep exactly until then. */
  nextDueAt(): Date | undefined {
    return this.nextDueStmt.get()?.at ?? undefined;
  }

  /**
   * Applies a patch, bumping `version` and `updatedAt`, and returns the row as stored.
   * Built once per patch shape and reused: a query-builder update costs ~4× a prepared one
   * (../shared/PERFORMANCE.md), and this is the poller's hot path. Nulls are part of the shape
   * (written as SQL NULL), since column encoders such as timestamps cannot encode a null.
   */
  update(id: string, patch: PredictionPatch, now: Date): PredictionRow | undefined {
    const keys = (Object.keys(patch) as (keyof PredictionPatch)[]).filter((k) => patch[k] !== undefined).sort();
    const shape = keys.map((k) => (patch[k] === null ? `${k}=null` : k)).join(',');
    let statement = this.updates.get(shape);
    if (!statement) this.updates.set(shape, (statement = this.prepareUpdate(keys, patch)));
    const values: Record<string, unknown> = { id, updatedAt: now };
    for (const k of keys) if (patch[k] !== null) values[k] = patch[k];
    return statement.get(values);
  }

  private prepareUpdate(keys: (keyof PredictionPatch)[], patch: PredictionPatch) {
    const set: Record<string, unknown> = { updatedAt: sql.placeholder('updatedAt'), version: sql`${predictions.version} + 1` };
    for (const k of keys) set[k] = patch[k] === null ? sql`null` : sql.placeholder(k);
    return this.db
      .update(predictions)
      .set(set as PredictionPatch)
      .where(eq(predictions.id, sql.placeholder('id')))
      .returning()
      .prepare();
  }

  count(): number {
    return this.db.select({ n: count() }).from(predictions).get()?.n ?? 0;
  }
}
