import { and, eq, lte } from 'drizzle-orm';
import { IDEMPOTENCY_TTL_MS, type Remembered } from '../idempotency.js';
import type { Idempotency } from '../store.js';
import type { PgDb } from './client.js';
import type { PgExec } from './predictions.js';
import { idempotencyKeys } from './schema.js';

/** createVideo idempotency keys on Postgres, as db/idempotency.ts keeps them: per owner ('' in open mode), IDEMPOTENCY_TTL_MS. */
export class PgIdempotency implements Idempotency {
  constructor(private readonly db: PgDb) {}

  async find(owner: string | null, key: string, now: Date, exec: PgExec = this.db): Promise<Remembered | undefined> {
    const [row] = await exec
      .select({ predictionId: idempotencyKeys.predictionId, inputHash: idempotencyKeys.inputHash, createdAt: idempotencyKeys.createdAt })
      .from(idempotencyKeys)
      .where(and(eq(idempotencyKeys.owner, owner ?? ''), eq(idempotencyKeys.key, key)))
      .limit(1);
    return row && now.getTime() - row.createdAt.getTime() < IDEMPOTENCY_TTL_MS ? row : undefined;
  }

  /** Records the key's prediction, replacing an expired use of the same key, and forgets expired keys. */
  async remember(exec: PgExec, owner: string | null, key: string, value: Remembered, now: Date): Promise<void> {
    await exec.delete(idempotencyKeys).where(lte(idempotencyKeys.createdAt, new Date(now.getTime() - IDEMPOTENCY_TTL_MS)));
    await exec
      .insert(idempotencyKeys)
      .values({ owner: owner ?? '', key, ...value, createdAt: now })
      .onConflictDoUpdate({ target: [idempotencyKeys.owner, idempotencyKeys.key], set: { ...value, createdAt: now } });
  }
}
