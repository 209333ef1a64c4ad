import { sql } from 'drizzle-orm';
import type { CreateOutcome, CreateRequest, Creator } from '../store.js';
import type { PgDb } from './client.js';
import type { PgIdempotency } from './idempotency.js';
import type { PgPredictions } from './predictions.js';

/**
 * The first key of the advisory locks that serialize one owner's creations ('crea'); the second is
 * hashtext(owner). Two-key advisory locks are a key space of their own, apart from the one-bigint
 * key of the migration lock (client.ts), so the two can never meet.
 */
export const CREATE_LOCK_CLASS = 0x63726561;

/**
 * createVideo's transaction on Postgres, safe across instances. Under READ COMMITTED, two
 * transactions that each check "no such key yet" and "under the quota" would both pass and both
 * insert. So each first takes `pg_advisory_xact_lock(CREATE_LOCK_CLASS, hashtext(owner))`: one
 * owner's creations run one at a time across every instance, and each statement after the lock sees
 * what the previous holder committed (READ COMMITTED takes a fresh snapshot per statement). A twin
 * request is therefore replayed (or refused as a conflict), and the in-flight count is exact.
 *
 * Why an advisory lock rather than the alternatives: SERIALIZABLE would also be correct but fails
 * the loser with a serialization error to retry; a row lock needs a row per owner (open mode has
 * none, and an api_keys row is not always there); a unique index cannot express a quota. The lock is
 * per owner, so different callers never wait on each other (a hashtext collision only makes two
 * owners share a queue), and it ends with the transaction, so a crashed instance holds nothing.
 */
export class PgCreator implements Creator {
  constructor(
    private readonly db: PgDb,
    private readonly predictions: PgPredictions,
    private readonly idempotency: PgIdempotency,
  ) {}

  async create(request: CreateRequest, now: Date): Promise<CreateOutcome> {
    let afterCommit: (() => void) | undefined;
    const outcome = await this.db.transaction(async (tx): Promise<CreateOutcome> => {
      const owner = request.row.owner;
      await tx.execute(sql`SELECT pg_advisory_xact_lock(${CREATE_LOCK_CLASS}::int4, hashtext(${owner ?? ''}::text))`);
      if (request.idempotency) {
        const earlier = await this.idempotency.find(owner, request.idempotency.key, now, tx);
        if (earlier && earlier.inputHash !== request.idempotency.inputHash) return { kind: 'conflict' };
        const row = earlier && (await this.predictions.findById(earlier.predictionId, tx));
        if (row && row.owner === owner) return { kind: 'replayed', row };
      }
      if (request.maxInFlight !== undefined) {
        const unfinished = await this.predictions.countUnfinished(owner, tx);
        if (unfinished >= request.maxInFlight) return { kind: 'tooManyInFlight', unfinished, max: request.maxInFlight };
      }
      const row = await this.predictions.insert(request.row, tx);
      // The webhook subscription (and its CREATED message) commits with the row, or neither does.
      afterCommit = (await request.withRow?.(row, tx)) ?? undefined;
      if (request.idempotency) await this.idempotency.remember(tx, owner, request.idempotency.key, { predictionId: row.id, inputHash: request.idempotency.inputHash }, now);
      return { kind: 'created', row };
    });
    afterCommit?.();
    return outcome;
  }
}
