import { randomUUID } from 'node:crypto';
import type { Keys } from '../auth/keys.js';
import { type Delivery, sqliteOutbox, type Outbox, type Subscription, type WebhookStore } from '../db/outbox.js';
import type { PgTx } from '../db/pg/client.js';
import type { PgOutbox } from '../db/pg/outbox.js';
import type { PgRecordHook } from '../db/pg/recorder.js';
import type { PredictionRow, PredictionStatus, WebhookAttemptRow } from '../db/schema.js';
import type { RecordHook } from '../poller/record.js';
import type { WebhookDispatcher } from './dispatcher.js';
import { webhookPayload } from './payload.js';

/** What resolvers may do with outgoing webhooks. */
export interface WebhookApi {
  /** WEBHOOK_ALLOW_PRIVATE: loopback and private receivers are allowed. */
  readonly allowPrivate: boolean;
  /** Why webhooks cannot be asked for in this deployment, if they cannot (createVideo refuses a webhookUrl then). */
  readonly unavailable?: string;
  /** Whether predictions of this owner (null: open mode) can be signed. */
  hasSecret(owner: string | null): boolean;
  /**
   * Stores a new prediction's webhook inside its insert's transaction (`tx`: the Creator's, see
   * CreateRequest.withRow); a CREATED event is queued at once.
   */
  subscribe(row: PredictionRow, url: string, events: PredictionStatus[], tx: unknown): void | Promise<(() => void) | undefined>;
  /** A prediction's attempts, newest first. */
  deliveries(predictionId: string, limit: number): Promise<Delivery[]>;
  attempt(id: string): Promise<WebhookAttemptRow | undefined>;
  /** Sends the message of that attempt once more, now; the new attempt. */
  redeliver(attemptId: string): Promise<WebhookAttemptRow | undefined>;
}

export interface OutgoingOptions {
  /** Finds a message's prediction, for its owner's secret. */
  predictions: { findById(id: string): Promise<PredictionRow | undefined> };
  keys: Keys;
  /** Open mode's secret (WEBHOOK_SIGNING_SECRET or DATA_DIR/webhook-secret), read when first needed; undefined: none. */
  openSecret: () => string | undefined;
  /** Origin of absolute links in payloads (PUBLIC_URL, or where the server listens). */
  baseUrl: () => string;
  now: () => Date;
  allowPrivate: boolean;
}

type NewMessage = { id: string; predictionId: string; event: PredictionStatus; url: string; payload: string; now: Date };

/** What both backends share: the signing secrets, the message a status makes, and the read side of the API. */
function outgoingBase(o: OutgoingOptions, outbox: Outbox, dispatcher: () => WebhookDispatcher) {
  let openSecret: string | undefined;
  const secretOf = (owner: string | null): string | undefined => {
    if (owner !== null) return o.keys.webhookSecretOf(owner);
    openSecret ??= o.openSecret();
    return openSecret;
  };

  /** The message reporting the row's status, if its prediction has a webhook for it. */
  const messageFor = (row: PredictionRow, sub: Subscription | undefined): NewMessage | undefined => {
    if (!sub?.events.includes(row.status)) return undefined;
    const now = o.now();
    const id = `msg_${randomUUID().replaceAll('-', '')}`;
    return { id, predictionId: row.id, event: row.status, url: sub.url, payload: webhookPayload(row, o.baseUrl(), now), now };
  };

  const api: Omit<WebhookApi, 'subscribe'> = {
    allowPrivate: o.allowPrivate,
    hasSecret: (owner) => secretOf(owner) !== undefined,
    deliveries: (predictionId, limit) => outbox.attemptsOf(predictionId, limit),
    attempt: (id) => outbox.attempt(id),
    redeliver: (attemptId) => dispatcher().redeliver(attemptId),
  };

  /** The secret that signs this prediction's webhooks: its owner's key's, or open mode's. */
  const secretFor = async (predictionId: string): Promise<string | undefined> => {
    const row = await o.predictions.findById(predictionId);
    return row ? secretOf(row.owner) : undefined;
  };

  return { messageFor, api, secretFor };
}

/**
 * Outgoing webhooks on SQLite, the writing side: the recorder's hook that turns a status change into
 * an outbox message in the same (synchronous, better-sqlite3) transaction, the signing secret of each
 * prediction's owner, and the resolvers' API. Sending is the dispatcher's job.
 */
export function createOutgoing(o: OutgoingOptions & { store: WebhookStore }, dispatcher: () => WebhookDispatcher) {
  const outbox = sqliteOutbox(o.store);
  const base = outgoingBase(o, outbox, dispatcher);

  /** Queues the row's status if its prediction has a webhook for it; call inside the status write's transaction. */
  const enqueue = (row: PredictionRow, sub = o.store.subscriptionOf(row.id)): boolean => {
    const message = base.messageFor(row, sub);
    return message !== undefined && o.store.enqueue(message);
  };

  const hook: RecordHook = {
    transaction: (write) => o.store.transaction(write),
    afterWrite(row, patch) {
      // Only a status change is an event; other visible writes (a queue estimate, say) are not.
      if (patch.status === undefined) return;
      if (enqueue(row)) dispatcher().nudge();
    },
  };

  const api: WebhookApi = {
    ...base.api,
    subscribe(row, url, events) {
      o.store.subscribe(row.id, url, events);
      if (enqueue(row, { url, events })) dispatcher().nudge();
    },
  };

  return { hook, api, secretFor: base.secretFor, outbox };
}

/**
 * Outgoing webhooks on Postgres (DATABASE_URL): the same, with the outbox in Postgres. The hook runs
 * in the Postgres recorder's transaction and `subscribe` in the Creator's, each handed that
 * transaction, so a message commits with the status change (or the new row) it reports. The
 * dispatcher is woken once the transaction has committed: before, its claim could not see the message.
 */
export function createPgOutgoing(o: OutgoingOptions & { outbox: PgOutbox }, dispatcher: () => WebhookDispatcher) {
  const base = outgoingBase(o, o.outbox, dispatcher);
  const wake = () => dispatcher().nudge();

  const enqueue = async (tx: PgTx, row: PredictionRow, sub: Subscription | undefined): Promise<(() => void) | undefined> => {
    const message = base.messageFor(row, sub);
    return message && (await o.outbox.enqueue(tx, message)) ? wake : undefined;
  };

  const hook: PgRecordHook = async (tx, row, patch) => {
    // Only a status change is an event; other visible writes (a queue estimate, say) are not.
    if (patch.status === undefined) return;
    return enqueue(tx, row, await o.outbox.subscriptionOf(row.id, tx));
  };

  const api: WebhookApi = {
    ...base.api,
    async subscribe(row, url, events, tx) {
      // The Postgres Creator's transaction (db/pg/creator.ts): this API is only built beside it.
      if (!tx) throw new Error('a Postgres webhook subscription needs the creation transaction');
      await o.outbox.subscribe(tx as PgTx, row.id, url, events);
      return enqueue(tx as PgTx, row, { url, events });
    },
  };

  return { hook, api, secretFor: base.secretFor };
}
