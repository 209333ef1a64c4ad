import { randomUUID } from 'node:crypto';
import type { Keys } from '../auth/keys.js';
import type { WebhookStore } from '../db/outbox.js';
import type { PredictionStore } from '../db/predictions.js';
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
  /** Stores a new prediction's webhook (inside its insert's transaction); a CREATED event is queued at once. */
  subscribe(row: PredictionRow, url: string, events: PredictionStatus[]): void;
  /** A prediction's attempts, newest first. */
  deliveries(predictionId: string, limit: number): ReturnType<WebhookStore['attemptsOf']>;
  attempt(id: string): WebhookAttemptRow | undefined;
  /** Sends the message of that attempt once more, now; the new attempt. */
  redeliver(attemptId: string): Promise<WebhookAttemptRow | undefined>;
}

export interface OutgoingOptions {
  store: WebhookStore;
  predictions: PredictionStore;
  keys: Keys;
  /** Open mode's secret (WEBHOOK_SIGNING_SECRET or DATA_DIR/webhook-secret), read when first needed. */
  openSecret: () => string;
  /** Origin of absolute links in payloads (PUBLIC_URL, or where the server listens). */
  baseUrl: () => string;
  now: () => Date;
  allowPrivate: boolean;
}

/**
 * Outgoing webhooks, the writing side: the recorder's hook that turns a status change into an
 * outbox message in the same transaction, the signing secret of each prediction's owner, and the
 * resolvers' API. Sending is the dispatcher's job.
 */
export function createOutgoing(o: OutgoingOptions, dispatcher: () => WebhookDispatcher) {
  let openSecret: string | undefined;
  const secretOf = (owner: string | null): string | undefined => {
    if (owner !== null) return o.keys.webhookSecretOf(owner);
    openSecret ??= o.openSecret();
    return openSecret;
  };

  /** Queues the row's status if its prediction has a webhook for it; call inside the status write's transaction. */
  const enqueue = (row: PredictionRow, sub = o.store.subscriptionOf(row.id)): boolean => {
    if (!sub?.events.includes(row.status)) return false;
    const now = o.now();
    const id = `msg_${randomUUID().replaceAll('-', '')}`;
    return o.store.enqueue({ id, predictionId: row.id, event: row.status, url: sub.url, payload: webhookPayload(row, o.baseUrl(), now), now });
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
    allowPrivate: o.allowPrivate,
    hasSecret: (owner) => secretOf(owner) !== undefined,
    subscribe(row, url, events) {
      o.store.subscribe(row.id, url, events);
      if (enqueue(row, { url, events })) dispatcher().nudge();
    },
    deliveries: (predictionId, limit) => o.store.attemptsOf(predictionId, limit),
    attempt: (id) => o.store.attempt(id),
    redeliver: (attemptId) => dispatcher().redeliver(attemptId),
  };

  /** The secret that signs this prediction's webhooks: its owner's key's, or open mode's. */
  const secretFor = (predictionId: string): string | undefined => {
    const row = o.predictions.findById(predictionId);
    return row ? secretOf(row.owner) : undefined;
  };

  return { hook, api, secretFor };
}
