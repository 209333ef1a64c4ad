import { and, eq, lte, sql } from 'drizzle-orm';
import type { Db } from './client.js';
import { idempotencyKeys } from './schema.js';
import { transact } from './transact.js';

/** How long a createVideo idempotency key is remembered. */
export const IDEMPOTENCY_TTL_MS = 24 * 60 * 60 * 1000;

export type Remembered = { predictionId: string; inputHash: string };

/** createVideo idempotency keys, per owner (a key's id, or open mode's ''), kept IDEMPOTENCY_TTL_MS. */
export class IdempotencyStore {
  // Prepared once: through the query builder SQLite compiled each statement on every call, and a
  // createVideo with an Idempotency-Key made four such calls (a find before its transaction, a find,
  // a delete and an upsert inside it): ~90 → ~15 µs each (issue 18, BENCHMARKS.md session 11).
  private readonly findStmt;
  private readonly forgetStmt;
  private readonly rememberStmt;

  constructor(private readonly db: Db) {
    this.findStmt = db
      .select({ predictionId: idempotencyKeys.predictionId, inputHash: idempotencyKeys.inputHash, createdAt: idempotencyKeys.createdAt })
      .from(idempotencyKeys)
      .where(and(eq(idempotencyKeys.owner, sql.placeholder('owner')), eq(idempotencyKeys.key, sql.placeholder('key'))))
      .prepare();
    // Timestamps as the column stores them (epoch ms): a placeholder skips the column's encoder.
    this.forgetStmt = db
      .delete(idempotencyKeys)
      .where(lte(idempotencyKeys.createdAt, sql.placeholder('beforeMs')))
      .prepare();
    // Typed by Drizzle (no cast): a misspelt key here fails the type check, where `set` would drop it silently.
    const value = {
      predictionId: sql`${sql.placeholder('predictionId')}`,
      inputHash: sql`${sql.placeholder('inputHash')}`,
      createdAt: sql`${sql.placeholder('nowMs')}`,
    };
    this.rememberStmt = db
      .insert(idempotencyKeys)
      .values({ owner: sql.placeholder('owner'), key: sql.placeholder('key'), ...value })
      .onConflictDoUpdate({ target: [idempotencyKeys.owner, idempotencyKeys.key], set: value })
      .prepare();
  }

  /** What this owner's key was last used for within the TTL, if anything. */
  find(owner: string | null, key: string, now: Date): Remembered | undefined {
    const row = this.findStmt.get({ owner: owner ?? '', key });
    return row && now.getTime() - row.createdAt.getTime() < IDEMPOTENCY_TTL_MS ? row : undefined;
  }

  /** Records the key's prediction, replacing an expired use of the same key, and forgets expired keys. */
  remember(owner: string | null, key: string, value: Remembered, now: Date): void {
    this.forgetStmt.run({ beforeMs: now.getTime() - IDEMPOTENCY_TTL_MS });
    this.rememberStmt.run({ owner: owner ?? '', key, predictionId: value.predictionId, inputHash: value.inputHash, nowMs: now.getTime() });
  }

  /**
   * Runs `fn` in one SQLite transaction. better-sqlite3 is synchronous, so nothing else in the
   * process interleaves: a check of a key and the insert it guards cannot be raced by a twin request.
   */
  atomically<T>(fn: () => T): T {
    // better-sqlite3's own transaction, not Drizzle's: inside an open one (a group commit) it nests as
    // a savepoint, where Drizzle's would send a second BEGIN.
    return transact(this.db.$client, fn);
  }
}
