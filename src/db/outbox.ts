import { and, asc, desc, eq, isNotNull, lt, lte, sql } from 'drizzle-orm';
import type { Db } from './client.js';
import {
  predictionWebhooks,
  webhookAttempts,
  webhookMessages,
  webhookReceipts,
  type PredictionStatus,
  type WebhookAttemptRow,
  type WebhookMessageRow,
} from './schema.js';

export interface NewAttempt {
  id: string;
  messageId: string;
  predictionId: string;
  attemptedAt: Date;
  statusCode: number | null;
  latencyMs: number;
  error: string | null;
  manual: boolean;
}

/**
 * All SQL of webhooks both ways: the outgoing subscriptions, the outbox and its attempts, and the
 * ids of incoming deliveries already acted on. Synchronous (better-sqlite3), so `enqueue` can run
 * inside the transaction of the status write it reports.
 */
export class WebhookStore {
  private readonly subscriptionStmt;
  private readonly enqueueStmt;
  private readonly dueStmt;
  private readonly nextDueStmt;

  constructor(private readonly db: Db) {
    this.subscriptionStmt = db
      .select({ url: predictionWebhooks.url, events: predictionWebhooks.events })
      .from(predictionWebhooks)
      .where(eq(predictionWebhooks.predictionId, sql.placeholder('id')))
      .prepare();
    // One message per prediction and status: a status written twice (it cannot be, for a final one) is reported once.
    this.enqueueStmt = db.$client.prepare(
      'INSERT INTO webhook_messages (id, prediction_id, event, url, payload, created_at, attempts, next_attempt_at) VALUES (?, ?, ?, ?, ?, ?, 0, ?) ON CONFLICT DO NOTHING',
    );
    this.dueStmt = db
      .select()
      .from(webhookMessages)
      .where(and(isNotNull(webhookMessages.nextAttemptAt), lte(webhookMessages.nextAttemptAt, sql.placeholder('now'))))
      .orderBy(asc(webhookMessages.nextAttemptAt))
      .limit(sql.placeholder('limit'))
      .prepare();
    this.nextDueStmt = db
      .select({ at: webhookMessages.nextAttemptAt })
      .from(webhookMessages)
      .where(isNotNull(webhookMessages.nextAttemptAt))
      .orderBy(asc(webhookMessages.nextAttemptAt))
      .limit(1)
      .prepare();
  }

  /** Runs `write` in one transaction (nested calls become savepoints). */
  transaction<T>(write: () => T): T {
    return this.db.$client.transaction(write)();
  }

  subscribe(predictionId: string, url: string, events: PredictionStatus[]): void {
    this.db.insert(predictionWebhooks).values({ predictionId, url, events }).run();
  }

  subscriptionOf(predictionId: string): { url: string; events: PredictionStatus[] } | undefined {
    return this.subscriptionStmt.get({ id: predictionId });
  }

  /** Adds a message due at once, unless this prediction already has one for this status. True when added. */
  enqueue(m: { id: string; predictionId: string; event: PredictionStatus; url: string; payload: string; now: Date }): boolean {
    const at = m.now.getTime();
    return this.enqueueStmt.run(m.id, m.predictionId, m.event, m.url, m.payload, at, at).changes === 1;
  }

  due(now: Date, limit: number): WebhookMessageRow[] {
    return this.dueStmt.all({ now: now.getTime(), limit });
  }

  nextDueAt(): Date | undefined {
    return this.nextDueStmt.get()?.at ?? undefined;
  }

  message(id: string): WebhookMessageRow | undefined {
    return this.db.select().from(webhookMessages).where(eq(webhookMessages.id, id)).get();
  }

  /** Records one attempt and the message's next step (`nextAttemptAt` null: delivered or given up) in one transaction. */
  recordAttempt(attempt: NewAttempt, next: { attempts?: number; nextAttemptAt?: Date | null; deliveredAt?: Date }): void {
    this.transaction(() => {
      this.db.insert(webhookAttempts).values(attempt).run();
      if (Object.keys(next).length) this.db.update(webhookMessages).set(next).where(eq(webhookMessages.id, attempt.messageId)).run();
    });
  }

  /** A prediction's attempts, newest first. */
  attemptsOf(predictionId: string, limit: number): (WebhookAttemptRow & { event: PredictionStatus; url: string; webhookId: string })[] {
    return this.db
      .select({ ...attemptColumns, event: webhookMessages.event, url: webhookMessages.url, webhookId: webhookMessages.id })
      .from(webhookAttempts)
      .innerJoin(webhookMessages, eq(webhookMessages.id, webhookAttempts.messageId))
      .where(eq(webhookAttempts.predictionId, predictionId))
      .orderBy(desc(webhookAttempts.attemptedAt), desc(sql`${webhookAttempts}.rowid`))
      .limit(limit)
      .all();
  }

  attempt(id: string): WebhookAttemptRow | undefined {
    return this.db.select().from(webhookAttempts).where(eq(webhookAttempts.id, id)).get();
  }

  /**
   * Remembers an incoming delivery's id; false when it was already seen (a duplicate). Ids older
   * than `forgetBefore` are dropped first: their timestamps are past the tolerance and refused anyway.
   */
  rememberReceipt(webhookId: string, now: Date, forgetBefore: Date): boolean {
    return this.transaction(() => {
      this.db.delete(webhookReceipts).where(lt(webhookReceipts.receivedAt, forgetBefore)).run();
      const added = this.db.insert(webhookReceipts).values({ webhookId, receivedAt: now }).onConflictDoNothing().run();
      return added.changes === 1;
    });
  }
}

const attemptColumns = {
  id: webhookAttempts.id,
  messageId: webhookAttempts.messageId,
  predictionId: webhookAttempts.predictionId,
  attemptedAt: webhookAttempts.attemptedAt,
  statusCode: webhookAttempts.statusCode,
  latencyMs: webhookAttempts.latencyMs,
  error: webhookAttempts.error,
  manual: webhookAttempts.manual,
};
