import { and, asc, count, desc, eq, isNotNull, lt, lte, min, sql } from 'drizzle-orm';
import type { Db } from './client.js';
import { predictions, type NewPrediction, type PredictionRow, type PredictionStatus } from './schema.js';

/** Fields the poller may change; `version` and `updatedAt` are maintained here. */
export type PredictionPatch = Partial<
  Omit<PredictionRow, 'seq' | 'id' | 'version' | 'createdAt' | 'updatedAt' | 'prompt' | 'hasImage' | 'model'>
>;

export interface ListOptions {
  first: number;
  /** Only rows inserted before this one (list order is newest first). */
  beforeSeq?: number;
  status?: PredictionStatus;
}

/** All SQL that touches predictions. Resolvers and the poller go through this, never through `db`. */
export class PredictionStore {
  private readonly byId;
  private readonly dueStmt;

  constructor(private readonly db: Db) {
    this.byId = db
      .select()
      .from(predictions)
      .where(eq(predictions.id, sql.placeholder('id')))
      .prepare();
    this.dueStmt = db
      .select()
      .from(predictions)
      .where(and(isNotNull(predictions.nextPollAt), lte(predictions.nextPollAt, sql.placeholder('now'))))
      .orderBy(asc(predictions.nextPollAt))
      .limit(sql.placeholder('limit'))
      .prepare();
  }

  insert(row: NewPrediction): PredictionRow {
    return this.db.insert(predictions).values(row).returning().get();
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

  /** Rows whose next poll time has come, earliest first. */
  due(now: Date, limit: number): PredictionRow[] {
    return this.dueStmt.all({ now: now.getTime(), limit });
  }

  /** The earliest scheduled poll, so the poller can sleep exactly until then. */
  nextDueAt(): Date | undefined {
    const row = this.db.select({ at: min(predictions.nextPollAt) }).from(predictions).get();
    return row?.at ?? undefined;
  }

  update(id: string, patch: PredictionPatch, now: Date): PredictionRow | undefined {
    return this.db
      .update(predictions)
      .set({ ...patch, updatedAt: now, version: sql`${predictions.version} + 1` })
      .where(eq(predictions.id, id))
      .returning()
      .get();
  }

  count(): number {
    return this.db.select({ n: count() }).from(predictions).get()?.n ?? 0;
  }
}
