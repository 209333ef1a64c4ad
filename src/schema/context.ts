import type { Principal } from '../auth/principal.js';
import type { Quotas } from '../auth/quotas.js';
import type { Creator, Idempotency, Predictions } from '../db/store.js';
import type { PredictionRow } from '../db/schema.js';
import type { ImageStore } from '../storage/images.js';
import type { Estimate } from '../db/queue.js';
import type { PredictionPubSub } from '../pubsub.js';
import type { ResolveHost } from '../validation/address.js';
import type { WebhookApi } from '../webhooks/outgoing.js';

/** What every resolver may use; built per request by the composition root. */
export interface Context {
  store: Predictions;
  /** Inserts a new prediction in one transaction with its checks (idempotency, in-flight quota). */
  creator: Creator;
  pubsub: PredictionPubSub;
  /** Tells the poller a new prediction waits for submission. */
  wakePoller: () => void;
  now: () => Date;
  newId: () => string;
  /** Origin that clients reach this gateway at (PUBLIC_URL, or the request's Host), for absolute links. */
  baseUrl: () => string;
  /** DNS for the image-URL guard. */
  resolveHost: ResolveHost;
  /** The caller: every prediction read or created is the owner's own. */
  principal: Principal;
  quotas: Quotas;
  idempotency: Idempotency;
  lifecycle: Lifecycle;
  /** Where data-URI images are kept as files. */
  images: ImageStore;
  /** Outgoing webhooks: subscriptions, delivery log, redelivery. */
  webhooks: WebhookApi;
}

/** Control over a prediction's life beyond creating it. */
export interface Lifecycle {
  /** Ends a live prediction CANCELED (see Poller.cancel); the row as it is after, undefined if unknown. */
  cancel(id: string): Promise<PredictionRow | undefined>;
  /** Queue place and expected start and completion. */
  estimate(row: PredictionRow): Promise<Estimate>;
}
