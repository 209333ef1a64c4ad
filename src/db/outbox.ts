import { and, asc, desc, eq, isNotNull, lte, sql } from 'drizzle-orm';
import type { Db } from './client.js';
import {
  predictionWebhooks,
  webhookAttempts,
  webhookMessages,
  type PredictionStatus,
  type WebhookAttemptRow,
  type WebhookMessageRow,
} from './schema.js';
import { transact } from './transact.js';

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

/** A prediction's outgoing webhook: where to POST and which statuses. */
export interface Subscription {
  url: string;
  events: PredictionStatus[];
}

/** One attempt as Prediction.webhookDeliveries lists it: with its message's event, URL and id. */
export type Delivery = WebhookAttemptRow & { event: PredictionStatus; url: string; webhookId: string };

/** A message's next step after an attempt (`nextAttemptAt` null: delivered or given up). */
export interface MessageStep {
  attempts?: number;
  nextAttemptAt?: Date | null;
  deliveredAt?: Date;
}

/**
 * The outbox as the dispatcher and the resolvers see it: every method async, so SQLite (WebhookStore
 * underneath; each call resolves at once) and Postgres (db/pg/outbox.ts, N instances on one database)
 * serve one interface. The writes that must commit with a status change or a new prediction
 * (subscribe, enqueue) are each backend's own, since they join that backend's transaction: SQLite's
 * synchronously inside better-sqlite3's, Postgres' with the transaction handed to them (see
 * webhooks/outgoing.ts).
 */
export interface Outbox {
  subscriptionOf(predictionId: string): Promise<Subscription | undefined>;
  /**
   * Messages due at `now` for this process to send, at most `limit`, none of `busy` (its own POSTs in
   * flight). On Postgres they are claimed: leased to this instance, so no other one sends them until
   * the attempt is recorded or the lease ends.
   */
  claimDue(now: Date, limit: number, busy: ReadonlySet<string> | ReadonlyMap<string, unknown>): Promise<WebhookMessageRow[]>;
  /** When a message can next be claimed (the earliest retry, or the end of another instance's claim). */
  nextDueAt(): Promise<Date | undefined>;
  message(id: string): Promise<WebhookMessageRow | undefined>;
  /** Records one attempt and its message's next step in one transaction. */
  recordAttempt(attempt: NewAttempt, next: MessageStep): Promise<void>;
  /** Gives up this process's claim of these messages unsent (an attempt cut off by stop()): another may send them now. */
  release(ids: readonly string[]): Promise<void>;
  /** A prediction's attempts, newest first. */
  attemptsOf(predictionId: string, limit: number): Promise<Delivery[]>;
  attempt(id: string): Promise<WebhookAttemptRow | undefined>;
}

/**
 * SQLite's outbox behind the async interface. One process sends (the DATA_DIR lock), so a claim is
 * what `due` returns, less what is in flight, and there is nothing to release.
 */
export function sqliteOutbox(store: WebhookStore): Outbox {
  // A call that throws rejects its promise, as an async store's would.
  const wrap =
    <A extends unknown[], R>(fn: (...args: A) => R) =>
    async (...args: A): Promise<R> =>
      fn(...args);
  return {
    subscriptionOf: wrap((id: string) => store.subscriptionOf(id)),
    claimDue: wrap((now: Date, limit: number, busy: ReadonlySet<string> | ReadonlyMap<string, unknown>) =>
      store
        .due(now, limit + busy.size)
        .filter((m) => !busy.has(m.id))
        .slice(0, limit),
    ),
    nextDueAt: wrap(() => store.nextDueAt()),
    message: wrap((id: string) => store.message(id)),
    recordAttempt: wrap((attempt: NewAttempt, next: MessageStep) => store.recordAttempt(attempt, next)),
    release: async () => {},
    attemptsOf: wrap((id: string, limit: number) => store.attemptsOf(id, limit)),
    attempt: wrap((id: string) => store.attempt(id)),
  };
}

/**
 * All SQL of webhooks both ways: the outgoing subscriptions, the outbox and its attempts, and the
 * ids of incoming deliveries already acted on. Synchronous (better-sqlite3), so `enqueue` can run
 * inside the transaction of the status write it reports.
 */
export class WebhookStore {
  private readonly subscriptionStmt;
  private readonly subscribeStmt;
  private readonly messageStmt;
  private readonly attemptStmt;
  private readonly attemptsOfStmt;
  private readonly forgetReceiptsStmt;
  private readonly receiptStmt;
  private readonly enqueueStmt;
  private readonly dueStmt;
  private readonly nextDueStmt;

  constructor(private readonly db: Db) {
    this.subscriptionStmt = db
      .select({ url: predictionWebhooks.url, events: predictionWebhooks.events })
      .from(predictionWebhooks)
      .where(eq(predictionWebhooks.predictionId, sql.placeholder('id')))
      .prepare();
    // Prepared once, as createVideo with a webhook runs it (the query builder compiled it each time).
    // The events go in as their JSON text, written here, so no column encoder is relied on for a placeholder.
    this.subscribeStmt = db.$client.prepare('INSERT INTO prediction_webhooks (prediction_id, url, events) VALUES (?, ?, ?)');
    // Prepared once, like the rest of this class (the query builder compiled each call again).
    this.messageStmt = db.select().from(webhookMessages).where(eq(webhookMessages.id, sql.placeholder('id'))).prepare();
    this.attemptStmt = db.select().from(webhookAttempts).where(eq(webhookAttempts.id, sql.placeholder('id'))).prepare();
    this.attemptsOfStmt = db
      .select({ ...attemptColumns, event: webhookMessages.event, url: webhookMessages.url, webhookId: webhookMessages.id })
      .from(webhookAttempts)
      .innerJoin(webhookMessages, eq(webhookMessages.id, webhookAttempts.messageId))
      .where(eq(webhookAttempts.predictionId, sql.placeholder('predictionId')))
      .orderBy(desc(webhookAttempts.attemptedAt), desc(sql`${webhookAttempts}.rowid`))
      .limit(sql.placeholder('limit'))
      .prepare();
    // An incoming delivery's id, once per upstream webhook. Times in the column's epoch ms.
    this.forgetReceiptsStmt = db.$client.prepare('DELETE FROM webhook_receipts WHERE received_at < ?');
    this.receiptStmt = db.$client.prepare('INSERT INTO webhook_receipts (webhook_id, received_at) VALUES (?, ?) ON CONFLICT DO NOTHING');
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
    return transact(this.db.$client, write);
  }

  subscribe(predictionId: string, url: string, events: PredictionStatus[]): void {
    this.subscribeStmt.run(predictionId, url, JSON.stringify(events));
  }

  subscriptionOf(predictionId: string): Subscription | undefined {
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
    return this.messageStmt.get({ id });
  }

  /** Records one attempt and the message's next step (`nextAttemptAt` null: delivered or given up) in one transaction. */
  recordAttempt(attempt: NewAttempt, next: MessageStep): void {
    this.transaction(() => {
      this.db.insert(webhookAttempts).values(attempt).run();
      if (Object.keys(next).length) this.db.update(webhookMessages).set(next).where(eq(webhookMessages.id, attempt.messageId)).run();
    });
  }

  /** A prediction's attempts, newest first. */
  attemptsOf(predictionId: string, limit: number): Delivery[] {
    return this.attemptsOfStmt.all({ predictionId, limit });
  }

  attempt(id: string): WebhookAttemptRow | undefined {
    return this.attemptStmt.get({ id });
  }

  /**
   * Remembers an incoming delivery's id; false when it was already seen (a duplicate). Ids older
   * than `forgetBefore` are dropped first: their timestamps are past the tolerance and refused anyway.
   */
  rememberReceipt(webhookId: string, now: Date, forgetBefore: Date): boolean {
    return this.transaction(() => {
      this.forgetReceiptsStmt.run(forgetBefore.getTime());
      return this.receiptStmt.run(webhookId, now.getTime()).changes === 1;
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
