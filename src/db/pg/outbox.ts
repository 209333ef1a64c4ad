import { and, desc, eq, isNull, sql } from 'drizzle-orm';
import type { Delivery, MessageStep, NewAttempt, Outbox, Subscription } from '../outbox.js';
import type { PredictionStatus, WebhookAttemptRow, WebhookMessageRow } from '../schema.js';
import type { PgDb, PgTx } from './client.js';
import { predictionWebhooks, webhookAttempts, webhookMessages } from './schema.js';

/**
 * When a message can next be claimed, and the condition that must come with it, written exactly as
 * the `webhook_messages_claimable` index has them (schema.ts: an expression index is matched by
 * expression; the null test keeps delivered and given-up messages out).
 */
const CLAIMABLE = 'greatest(next_attempt_at, locked_until)';

/** The columns SQLite's outbox has, as the claim returns them: the lease columns are this file's business. */
const RETURNED = `m.id, m.prediction_id AS "predictionId", m.event, m.url, m.payload, m.created_at AS "createdAt", m.attempts,
  m.next_attempt_at AS "nextAttemptAt", m.delivered_at AS "deliveredAt"`;
const messageColumns = {
  id: webhookMessages.id,
  predictionId: webhookMessages.predictionId,
  event: webhookMessages.event,
  url: webhookMessages.url,
  payload: webhookMessages.payload,
  createdAt: webhookMessages.createdAt,
  attempts: webhookMessages.attempts,
  nextAttemptAt: webhookMessages.nextAttemptAt,
  deliveredAt: webhookMessages.deliveredAt,
};

export interface PgOutboxOptions {
  /** Unique per process: what `locked_by` holds. */
  instanceId: string;
  /** How long a claim holds a message: longer than one attempt can take (the POST's timeout and then some). */
  leaseMs: number;
}

/**
 * The webhook outbox on Postgres, for N gateway instances on one database (issue 16).
 *
 * Each instance's dispatcher claims due messages in one statement: `SELECT … FOR UPDATE SKIP LOCKED`
 * picks them (two instances claiming at once never pick the same row, nor wait on each other) and the
 * same statement sets `locked_by`/`locked_until`, so from its commit until the lease ends the
 * message's claimable time (`greatest(next_attempt_at, locked_until)`) is in the future and no other
 * instance takes it: one message is never POSTed by two instances at once. Recording the attempt
 * ends the claim in the attempt's transaction. An instance SIGKILLed mid-POST records nothing; its
 * message becomes claimable when the lease ends, and another instance sends it (receivers drop the
 * duplicate by `webhook-id`, if the first POST did arrive).
 *
 * The writes that report a status change or a new prediction (`subscribe`, `enqueue`) take the
 * transaction of that write, so the message commits or rolls back with it.
 */
export class PgOutbox implements Outbox {
  constructor(
    private readonly db: PgDb,
    private readonly o: PgOutboxOptions,
  ) {}

  async subscribe(tx: PgTx, predictionId: string, url: string, events: PredictionStatus[]): Promise<void> {
    await tx.insert(predictionWebhooks).values({ predictionId, url, events });
  }

  async subscriptionOf(predictionId: string, tx: PgDb | PgTx = this.db): Promise<Subscription | undefined> {
    const [sub] = await tx
      .select({ url: predictionWebhooks.url, events: predictionWebhooks.events })
      .from(predictionWebhooks)
      .where(eq(predictionWebhooks.predictionId, predictionId));
    return sub;
  }

  /** Adds a message due at once, unless this prediction already has one for this status. True when added. */
  async enqueue(tx: PgTx, m: { id: string; predictionId: string; event: PredictionStatus; url: string; payload: string; now: Date }): Promise<boolean> {
    const added = await tx
      .insert(webhookMessages)
      .values({ id: m.id, predictionId: m.predictionId, event: m.event, url: m.url, payload: m.payload, createdAt: m.now, attempts: 0, nextAttemptAt: m.now })
      .onConflictDoNothing()
      .returning({ id: webhookMessages.id });
    return added.length === 1;
  }

  /** Due messages not under another claim, soonest first, leased to this instance. `busy` needs no filter: this instance's own POSTs hold their claims. */
  async claimDue(now: Date, limit: number): Promise<WebhookMessageRow[]> {
    if (limit <= 0) return [];
    const { rows } = await this.db.$client.query<WebhookMessageRow & { at: Date }>(
      `WITH picked AS (
         SELECT id, ${CLAIMABLE} AS at FROM webhook_messages
         WHERE next_attempt_at IS NOT NULL AND ${CLAIMABLE} <= $1::timestamptz
         ORDER BY ${CLAIMABLE} LIMIT $2 FOR UPDATE SKIP LOCKED)
       UPDATE webhook_messages AS m SET locked_by = $3, locked_until = $4::timestamptz
       FROM picked WHERE m.id = picked.id
       RETURNING ${RETURNED}, picked.at`,
      [now.toISOString(), limit, this.o.instanceId, new Date(now.getTime() + this.o.leaseMs).toISOString()],
    );
    // RETURNING has no order of its own.
    return rows.sort((a, b) => a.at.getTime() - b.at.getTime() || a.createdAt.getTime() - b.createdAt.getTime()).map(({ at: _, ...m }) => m);
  }

  async nextDueAt(): Promise<Date | undefined> {
    const { rows } = await this.db.$client.query<{ at: Date }>(
      `SELECT ${CLAIMABLE} AS at FROM webhook_messages WHERE next_attempt_at IS NOT NULL ORDER BY ${CLAIMABLE} LIMIT 1`,
    );
    return rows[0]?.at;
  }

  async message(id: string): Promise<WebhookMessageRow | undefined> {
    const [row] = await this.db.select(messageColumns).from(webhookMessages).where(eq(webhookMessages.id, id));
    return row;
  }

  /**
   * Records one attempt and the message's next step in one transaction, and ends this instance's
   * claim. The attempt is always logged (it happened). Of the next step:
   * - a success marks the message delivered unless it already is, whoever holds it: it is a fact, and
   *   a holder's later failure then changes nothing (every update requires `delivered_at IS NULL`);
   * - a scheduled failure's retry is fenced by the claim (`locked_by` = this instance): an instance
   *   that outlived its lease, and whose message another instance claimed meanwhile, leaves the
   *   schedule to that one;
   * - a manual attempt (redeliverWebhook) claims nothing, so it releases nothing.
   */
  async recordAttempt(attempt: NewAttempt, next: MessageStep): Promise<void> {
    const m = webhookMessages;
    await this.db.transaction(async (tx) => {
      await tx.insert(webhookAttempts).values(attempt);
      const released = { lockedBy: null, lockedUntil: null };
      if (next.deliveredAt) {
        const { attempts, ...rest } = next;
        await tx
          .update(m)
          .set({ ...rest, ...released, ...(attempts === undefined ? {} : { attempts: sql`greatest(${m.attempts}, ${attempts})` }) })
          .where(and(eq(m.id, attempt.messageId), isNull(m.deliveredAt)));
      } else if (!attempt.manual) {
        await tx
          .update(m)
          .set({ ...next, ...released })
          .where(and(eq(m.id, attempt.messageId), eq(m.lockedBy, this.o.instanceId), isNull(m.deliveredAt)));
      }
    });
  }

  async release(ids: readonly string[]): Promise<void> {
    if (ids.length === 0) return;
    await this.db.$client.query('UPDATE webhook_messages SET locked_by = NULL, locked_until = NULL WHERE locked_by = $1 AND id = ANY($2::text[])', [
      this.o.instanceId,
      [...ids],
    ]);
  }

  /** A prediction's attempts, newest first (ties, within a millisecond, by id: Postgres has no rowid). */
  async attemptsOf(predictionId: string, limit: number): Promise<Delivery[]> {
    const a = webhookAttempts;
    return this.db
      .select({
        id: a.id,
        messageId: a.messageId,
        predictionId: a.predictionId,
        attemptedAt: a.attemptedAt,
        statusCode: a.statusCode,
        latencyMs: a.latencyMs,
        error: a.error,
        manual: a.manual,
        event: webhookMessages.event,
        url: webhookMessages.url,
        webhookId: webhookMessages.id,
      })
      .from(a)
      .innerJoin(webhookMessages, eq(webhookMessages.id, a.messageId))
      .where(eq(a.predictionId, predictionId))
      .orderBy(desc(a.attemptedAt), desc(a.id))
      .limit(limit);
  }

  async attempt(id: string): Promise<WebhookAttemptRow | undefined> {
    const [row] = await this.db.select().from(webhookAttempts).where(eq(webhookAttempts.id, id));
    return row;
  }
}
