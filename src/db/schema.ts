import { sql } from 'drizzle-orm';
import { index, integer, primaryKey, sqliteTable, text, uniqueIndex } from 'drizzle-orm/sqlite-core';

export const predictionStatuses = ['CREATED', 'PROCESSING', 'COMPLETED', 'FAILED', 'CANCELED'] as const;
export type PredictionStatus = (typeof predictionStatuses)[number];
export const terminalStatuses: ReadonlySet<PredictionStatus> = new Set(['COMPLETED', 'FAILED', 'CANCELED']);
/** Statuses a prediction can still leave; every write by the poller is limited to rows in one of these. */
export const liveStatuses = ['CREATED', 'PROCESSING'] as const satisfies readonly PredictionStatus[];

const timestamp = (name: string) => integer(name, { mode: 'timestamp_ms' });

export const predictions = sqliteTable(
  'predictions',
  {
    /** Insertion order: the stable sort key behind list cursors. */
    seq: integer('seq').primaryKey({ autoIncrement: true }),
    id: text('id').notNull().unique(),
    upstreamId: text('upstream_id'),
    model: text('model').notNull(),
    status: text('status', { enum: predictionStatuses }).notNull(),
    prompt: text('prompt').notNull(),
    /** The image as submitted; cleared once upstream has accepted it, since it can be 27 MB of base64. */
    image: text('image'),
    /**
     * A data-URI image is kept as a content-addressed file under DATA_DIR/images (`<sha256>.<ext>`),
     * never in the row; null for text-to-video and for image URLs (those stay in `image`).
     */
    imageFile: text('image_file'),
    /** Where upstream's media upload put the image file; sent in its place, so a submission stays small. */
    imageUploadUrl: text('image_upload_url'),
    hasImage: integer('has_image', { mode: 'boolean' }).notNull(),
    enablePromptExpansion: integer('enable_prompt_expansion', { mode: 'boolean' }).notNull(),
    outputs: text('outputs', { mode: 'json' }).$type<string[]>().notNull().default([]),
    hasNsfwContents: text('has_nsfw_contents', { mode: 'json' }).$type<boolean[]>().notNull().default([]),
    urlsGet: text('urls_get'),
    /** Gateway paths (`/media/<sha256>.<ext>`) of outputs copied into DATA_DIR, kept past upstream's 7 days. */
    keptOutputs: text('kept_outputs', { mode: 'json' }).$type<string[]>().notNull().default([]),
    /** Secret in this prediction's webhook URL; null when it was submitted without a webhook. */
    webhookToken: text('webhook_token'),
    error: text('error'),
    inferenceMs: integer('inference_ms'),
    /** Bumped on every write, so a subscriber can drop an event it has already seen. */
    version: integer('version').notNull().default(1),
    createdAt: timestamp('created_at').notNull(),
    updatedAt: timestamp('updated_at').notNull(),
    submittedAt: timestamp('submitted_at'),
    completedAt: timestamp('completed_at'),
    /** When the poller next looks at this row; null once the prediction is terminal. */
    nextPollAt: timestamp('next_poll_at'),
    pollCount: integer('poll_count').notNull().default(0),
    /** Consecutive failed upstream attempts, for backoff; reset by any success. */
    attempts: integer('attempts').notNull().default(0),
    /**
     * Submissions that may have reached upstream (each one may be billed). Written, with
     * `submitStartedAt`, before the request leaves: nothing is sent unless that write committed.
     */
    submitAttempts: integer('submit_attempts').notNull().default(0),
    /**
     * When the latest submission whose outcome is unknown was started; null when there is none.
     * A row with this set and no `upstreamId` is reconciled against upstream's task list, never resent blindly.
     */
    submitStartedAt: timestamp('submit_started_at'),
    /** The API key (`api_keys.id`) that created it; null for one created in open mode (no keys). */
    owner: text('owner'),
    /** A prediction not final by then is canceled (CreateVideoInput.deadlineSeconds); null for none. */
    deadlineAt: timestamp('deadline_at'),
    /**
     * The admission queue's fair turn, set at creation: one more than the owner's last waiting
     * prediction, and never before the queue's head. Ordering by (turn, seq) lets owners take turns.
     */
    queueTurn: integer('queue_turn'),
  },
  (t) => [
    index('predictions_next_poll_at').on(t.nextPollAt),
    index('predictions_status_seq').on(t.status, t.seq),
    // One upstream task belongs to at most one prediction: reconciliation can never adopt a task twice.
    uniqueIndex('predictions_upstream_id').on(t.upstreamId),
    // A caller's own list, newest first, with or without a status; also its count of unfinished ones.
    index('predictions_owner_seq').on(t.owner, t.seq),
    index('predictions_owner_status_seq').on(t.owner, t.status, t.seq),
    // Live deadlines only: a final row keeps its deadline_at, and the poller looks every pass.
    index('predictions_deadline_live').on(t.deadlineAt).where(sql`status IN ('CREATED', 'PROCESSING') AND deadline_at IS NOT NULL`),
    // The recent run times behind queue estimates, and retention's look-up of shared image files.
    index('predictions_completed_runs').on(t.completedAt).where(sql`status = 'COMPLETED' AND submitted_at IS NOT NULL`),
    index('predictions_image_file').on(t.imageFile).where(sql`image_file IS NOT NULL`),
    // The admission queue and the poller's passes, each over only the rows it concerns, so a queue of
    // 100,000 costs the same per pass as a queue of ten (bench/queue.ts). The conditions are written as
    // in db/queue.ts and db/predictions.ts: SQLite uses a partial index only for a query that repeats them.
    index('predictions_queue').on(t.queueTurn, t.seq).where(sql`status = 'CREATED' AND upstream_id IS NULL AND submit_started_at IS NULL`),
    index('predictions_queue_owner').on(t.owner, t.queueTurn).where(sql`status = 'CREATED' AND upstream_id IS NULL AND submit_started_at IS NULL`),
    index('predictions_queue_due').on(t.nextPollAt).where(sql`status = 'CREATED' AND upstream_id IS NULL AND submit_started_at IS NULL`),
    index('predictions_started_due').on(t.nextPollAt).where(sql`upstream_id IS NOT NULL OR submit_started_at IS NOT NULL`),
    index('predictions_upstream_live')
      .on(t.seq)
      .where(sql`status IN ('CREATED', 'PROCESSING') AND (upstream_id IS NOT NULL OR submit_started_at IS NOT NULL)`),
    index('predictions_submitted_at').on(t.submittedAt),
    index('predictions_submit_started_at').on(t.submitStartedAt),
  ],
);

export type PredictionRecord = typeof predictions.$inferSelect;
/** A prediction as read and published: everything but the submitted image, which only the poller needs. */
export type PredictionRow = Omit<PredictionRecord, 'image'>;
export type NewPrediction = typeof predictions.$inferInsert;

/** API keys; only a hash of each is stored, the key itself is shown once by `cinegraph keys create`. */
export const apiKeys = sqliteTable(
  'api_keys',
  {
    /** Random and stable: what predictions record as their owner. */
    id: text('id').primaryKey(),
    name: text('name').notNull(),
    /** The key's first characters, so `keys list` can show which key is which without the secret. */
    prefix: text('prefix').notNull(),
    /** SHA-256 of the key, hex. Keys are 256 random bits, so a fast hash is not guessable. */
    keyHash: text('key_hash').notNull().unique(),
    /** createVideo calls per minute; null means KEY_CREATES_PER_MINUTE. */
    perMinute: integer('per_minute'),
    /** Predictions not yet final at once; null means KEY_MAX_IN_FLIGHT. */
    maxInFlight: integer('max_in_flight'),
    createdAt: timestamp('created_at').notNull(),
    revokedAt: timestamp('revoked_at'),
    /**
     * Signs this key's outgoing webhooks (Standard Webhooks, `whsec_` + base64). Kept in clear: it
     * signs, so it must be usable; shown once by `keys create` and replaced by `keys rotate-webhook-secret`.
     * Null for a key made before webhooks existed, until it is rotated.
     */
    webhookSecret: text('webhook_secret'),
  },
  // A name names one live key; a revoked key keeps its row (and its predictions their owner).
  (t) => [uniqueIndex('api_keys_live_name').on(t.name).where(sql`${t.revokedAt} is null`)],
);

export type ApiKeyRow = typeof apiKeys.$inferSelect;

/** createVideo idempotency keys, per owner, kept 24 h. */
export const idempotencyKeys = sqliteTable(
  'idempotency_keys',
  {
    /** The owning API key's id, or '' in open mode (a primary key column cannot hold null). */
    owner: text('owner').notNull(),
    key: text('key').notNull(),
    /** SHA-256 of the request's input, to tell a retry from a different request under the same key. */
    inputHash: text('input_hash').notNull(),
    predictionId: text('prediction_id').notNull(),
    createdAt: timestamp('created_at').notNull(),
  },
  (t) => [primaryKey({ columns: [t.owner, t.key] }), index('idempotency_keys_created_at').on(t.createdAt)],
);

/** A prediction's outgoing webhook (CreateVideoInput.webhookUrl), written with the prediction. */
export const predictionWebhooks = sqliteTable('prediction_webhooks', {
  predictionId: text('prediction_id')
    .primaryKey()
    .references(() => predictions.id, { onDelete: 'cascade' }),
  url: text('url').notNull(),
  /** The statuses that are delivered. */
  events: text('events', { mode: 'json' }).$type<PredictionStatus[]>().notNull(),
});

/**
 * The outbox: one message per prediction and status, written in the same transaction as the status
 * change it reports, so a crash between that write and the POST still delivers after a restart.
 */
export const webhookMessages = sqliteTable(
  'webhook_messages',
  {
    /** The `webhook-id` header: the same for every attempt, so receivers can drop duplicates. */
    id: text('id').primaryKey(),
    predictionId: text('prediction_id')
      .notNull()
      .references(() => predictions.id, { onDelete: 'cascade' }),
    event: text('event', { enum: predictionStatuses }).notNull(),
    url: text('url').notNull(),
    /** The JSON body, as it was when the status was written. */
    payload: text('payload').notNull(),
    createdAt: timestamp('created_at').notNull(),
    attempts: integer('attempts').notNull().default(0),
    /** Next automatic attempt; null once delivered or given up (24 h after creation). */
    nextAttemptAt: timestamp('next_attempt_at'),
    deliveredAt: timestamp('delivered_at'),
  },
  (t) => [uniqueIndex('webhook_messages_prediction_event').on(t.predictionId, t.event), index('webhook_messages_next_attempt_at').on(t.nextAttemptAt)],
);

/** Every attempt to deliver a message (Prediction.webhookDeliveries); `id` is what redeliverWebhook takes. */
export const webhookAttempts = sqliteTable(
  'webhook_attempts',
  {
    id: text('id').primaryKey(),
    messageId: text('message_id')
      .notNull()
      .references(() => webhookMessages.id, { onDelete: 'cascade' }),
    predictionId: text('prediction_id')
      .notNull()
      .references(() => predictions.id, { onDelete: 'cascade' }),
    attemptedAt: timestamp('attempted_at').notNull(),
    /** The receiver's HTTP status; null when no answer came (refused, timed out, blocked). */
    statusCode: integer('status_code'),
    latencyMs: integer('latency_ms').notNull(),
    error: text('error'),
    /** Asked for by redeliverWebhook rather than made by the retry schedule. */
    manual: integer('manual', { mode: 'boolean' }).notNull().default(false),
  },
  (t) => [index('webhook_attempts_prediction').on(t.predictionId, t.attemptedAt)],
);

export type WebhookMessageRow = typeof webhookMessages.$inferSelect;
export type WebhookAttemptRow = typeof webhookAttempts.$inferSelect;

/** `webhook-id`s of incoming upstream deliveries already acted on; kept a little longer than the 5-minute tolerance. */
export const webhookReceipts = sqliteTable(
  'webhook_receipts',
  {
    webhookId: text('webhook_id').primaryKey(),
    receivedAt: timestamp('received_at').notNull(),
  },
  (t) => [index('webhook_receipts_received_at').on(t.receivedAt)],
);
