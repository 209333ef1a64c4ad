import { and, eq, lte } from 'drizzle-orm';
import type { Db } from './client.js';
import { idempotencyKeys } from './schema.js';
import { transact } from './transact.js';

/** How long a createVideo idempotency key is remembered. */
export const IDEMPOTENCY_TTL_MS = 24 * 60 * 60 * 1000;

export type Remembered = { predictionId: string; inputHash: string };

/** createVideo idempotency keys, per owner (a key's id, or open mode's ''), kept IDEMPOTENCY_TTL_MS. */
export class IdempotencyStore {
  constructor(private readonly db: Db) {}

  /** What this owner's key was last used for within the TTL, if anything. */
  find(owner: string | null, key: string, now: Date): Remembered | undefined {
    const row = this.db
      .select({ predictionId: idempotencyKeys.predictionId, inputHash: idempotencyKeys.inputHash, createdAt: idempotencyKeys.createdAt })
      .from(idempotencyKeys)
      .where(and(eq(idempotencyKeys.owner, owner ?? ''), eq(idempotencyKeys.key, key)))
      .get();
    return row && now.getTime() - row.createdAt.getTime() < IDEMPOTENCY_TTL_MS ? row : undefined;
  }

  /** Records the key's prediction, replacing an expired use of the same key, and forgets expired keys. */
  remember(owner: string | null, key: string, value: Remembered, now: Date): void {
    this.db.delete(idempotencyKeys).where(lte(idempotencyKeys.createdAt, new Date(now.getTime() - IDEMPOTENCY_TTL_MS))).run();
    this.db
      .insert(idempotencyKeys)
      .values({ owner: owner ?? '', key, ...value, createdAt: now })
      .onConflictDoUpdate({ target: [idempotencyKeys.owner, idempotencyKeys.key], set: { ...value, createdAt: now } })
      .run();
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
