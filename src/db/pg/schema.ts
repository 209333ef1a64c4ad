/**
 * The Postgres store's schema (DATABASE_URL=postgres://…, issue 16): src/db/schema.ts table by table,
 * column by column, index by index, so that every table's `$inferSelect` and `$inferInsert` are the
 * SQLite ones (test/pg-schema.test.ts checks this for `tsc`, and compares both migrated databases).
 * Migrations: drizzle.pg.config.ts writes them to migrations-pg/; src/db/pg/client.ts applies them.
 *
 * Representation, chosen so the row types stay identical:
 * - Timestamps are `timestamptz(3)` read as `Date` (mode 'date'), as SQLite's `timestamp_ms` integers
 *   are. Precision 3 is the millisecond of a JS Date: a value round-trips exactly, and a time written
 *   by the database itself (now()) compares with one written from JS at the same resolution. Not
 *   bigint milliseconds: timestamptz keeps SQL readable (psql shows times, `now()` and intervals
 *   work) and is what the lease arithmetic below is written in.
 * - `seq` is a bigint identity read as a number (2^53 rows is out of reach); BY DEFAULT, not ALWAYS,
 *   so an insert may still give it, as SQLite's autoincrement allows, and the insert types agree.
 * - Booleans are `boolean`; SQLite's JSON-in-text columns are `jsonb` with the same `$type`.
 * - Statuses stay `text` with the TypeScript enum, no CHECK constraint, exactly as in SQLite.
 *
 * Postgres-only, for N gateways on one database (issue 16): the lease columns on `predictions` and
 * `webhook_messages`, and the `account_state` table. The parity test leaves out exactly these.
 */
import { type SQL, sql } from 'drizzle-orm';
import { bigint, boolean, check, index, integer, jsonb, pgTable, primaryKey, smallint, text, timestamp, uniqueIndex } from 'drizzle-orm/pg-core';
import { type PredictionStatus, predictionStatuses } from '../schema.js';

const ts = (name: string) => timestamp(name, { withTimezone: true, mode: 'date', precision: 3 });

/** The columns only Postgres has: who holds a prediction's lease, and until when (see `predictions`). */
export const pgOnlyPredictionColumns = ['lockedBy', 'lockedUntil', 'pollRequestedAt'] as const;

/**
 * When a live prediction can next be claimed: its `next_poll_at`, or its lease's end if that is later.
 * GREATEST ignores NULLs, so a row without a lease is claimable at `next_poll_at`. A claim must repeat
 * this expression and `next_poll_at IS NOT NULL` for Postgres to use `predictions_claimable` (an
 * expression index is matched by expression), e.g.
 *   SELECT … FROM predictions WHERE next_poll_at IS NOT NULL AND <claimableAt> <= now()
 *   ORDER BY <claimableAt> LIMIT $n FOR UPDATE SKIP LOCKED
 * The null test is not optional: GREATEST(NULL, locked_until) would make a final row claimable.
 */
export const claimableAt: SQL = sql`greatest(next_poll_at, locked_until)`;

/** The columns only Postgres has on `webhook_messages`: which instance is sending a message, and until when. */
export const pgOnlyWebhookMessageColumns = ['lockedBy', 'lockedUntil'] as const;

/**
 * When a pending outbox message can next be claimed: its `next_attempt_at`, or the end of another
 * instance's claim if that is later. Repeated word for word by the claims (src/db/pg/outbox.ts) so
 * that Postgres uses `webhook_messages_claimable`; `next_attempt_at IS NOT NULL` must come with it
 * (delivered and given-up messages have none).
 */
export const messageClaimableAt: SQL = sql`greatest(next_attempt_at, locked_until)`;

export const predictions = pgTable(
  'predictions',
  {
    /** Insertion order: the stable sort key behind list cursors. */
    seq: bigint('seq', { mode: 'number' }).primaryKey().generatedByDefaultAsIdentity(),
    id: text('id').notNull().unique(),
    upstreamId: text('upstream_id'),
    model: text('model').notNull(),
    status: text('status', { enum: predictionStatuses }).notNull(),
    prompt: text('prompt').notNull(),
    /** The image as submitted; cleared once upstream has accepted it. */
    image: text('image'),
    /** Content-addressed file under DATA_DIR/images for a data-URI image (see src/db/schema.ts). */
    imageFile: text('image_file'),
    imageUploadUrl: text('image_upload_url'),
    hasImage: boolean('has_image').notNull(),
    enablePromptExpansion: boolean('enable_prompt_expansion').notNull(),
    outputs: jsonb('outputs').$type<string[]>().notNull().default([]),
    hasNsfwContents: jsonb('has_nsfw_contents').$type<boolean[]>().notNull().default([]),
    urlsGet: text('urls_get'),
    keptOutputs: jsonb('kept_outputs').$type<string[]>().notNull().default([]),
    webhookToken: text('webhook_token'),
    error: text('error'),
    inferenceMs: integer('inference_ms'),
    /** Bumped on every write; events across instances carry it so subscribers drop duplicates. */
    version: integer('version').notNull().default(1),
    createdAt: ts('created_at').notNull(),
    updatedAt: ts('updated_at').notNull(),
    submittedAt: ts('submitted_at'),
    completedAt: ts('completed_at'),
    /** When the poller next looks at this row; null once the prediction is terminal. */
    nextPollAt: ts('next_poll_at'),
    pollCount: integer('poll_count').notNull().default(0),
    attempts: integer('attempts').notNull().default(0),
    /** Submissions that may have reached upstream; written before the request leaves (see src/db/schema.ts). */
    submitAttempts: integer('submit_attempts').notNull().default(0),
    submitStartedAt: ts('submit_started_at'),
    owner: text('owner'),
    deadlineAt: ts('deadline_at'),
    queueTurn: integer('queue_turn'),
    /**
     * Postgres only: the instance holding this prediction's lease (its id, unique per process), or
     * null. An instance claims due rows with FOR UPDATE SKIP LOCKED, setting `locked_by` and
     * `locked_until`; every later write of the step is fenced by `WHERE id = $id AND locked_by = $me`,
     * so an instance that lost its lease (expired and claimed by another) writes nothing.
     */
    lockedBy: text('locked_by'),
    /**
     * Postgres only: when the lease ends (claim time + LEASE_MS, longer than any upstream timeout).
     * After it, another instance may claim the row: how work held by a SIGKILLed instance is taken
     * over. Null when no lease was ever taken or it was released (SIGTERM, end of a step).
     */
    lockedUntil: ts('locked_until'),
    /**
     * Postgres only: the earliest poll asked for (Predictions.makeDue: an upstream webhook) since the
     * row was last claimed. Needed because the holder of a lease is in the middle of a step whose
     * next write sets `next_poll_at` to its own schedule: a webhook that lands on another instance
     * meanwhile cannot simply pull `next_poll_at` forward (the row is already past due, so there is
     * nothing to pull, and the holder's write would overwrite it anyway). It is kept here instead; every
     * write of `next_poll_at` takes least(its value, this), release does the same, and a claim clears
     * it (the claimed step looks at upstream after the request). See src/db/pg/recorder.ts.
     */
    pollRequestedAt: ts('poll_requested_at'),
  },
  (t) => [
    index('predictions_next_poll_at').on(t.nextPollAt),
    index('predictions_status_seq').on(t.status, t.seq),
    // One upstream task belongs to at most one prediction: reconciliation can never adopt a task twice.
    uniqueIndex('predictions_upstream_id').on(t.upstreamId),
    index('predictions_owner_seq').on(t.owner, t.seq),
    index('predictions_owner_status_seq').on(t.owner, t.status, t.seq),
    // The partial indexes repeat SQLite's conditions word for word (src/db/schema.ts says why each exists).
    index('predictions_deadline_live').on(t.deadlineAt).where(sql`status IN ('CREATED', 'PROCESSING') AND deadline_at IS NOT NULL`),
    index('predictions_completed_runs').on(t.completedAt).where(sql`status = 'COMPLETED' AND submitted_at IS NOT NULL`),
    index('predictions_image_file').on(t.imageFile).where(sql`image_file IS NOT NULL`),
    index('predictions_queue').on(t.queueTurn, t.seq).where(sql`status = 'CREATED' AND upstream_id IS NULL AND submit_started_at IS NULL`),
    index('predictions_queue_owner').on(t.owner, t.queueTurn).where(sql`status = 'CREATED' AND upstream_id IS NULL AND submit_started_at IS NULL`),
    index('predictions_queue_due').on(t.nextPollAt).where(sql`status = 'CREATED' AND upstream_id IS NULL AND submit_started_at IS NULL`),
    index('predictions_started_due').on(t.nextPollAt).where(sql`upstream_id IS NOT NULL OR submit_started_at IS NOT NULL`),
    index('predictions_upstream_live')
      .on(t.seq)
      .where(sql`status IN ('CREATED', 'PROCESSING') AND (upstream_id IS NOT NULL OR submit_started_at IS NOT NULL)`),
    index('predictions_submitted_at').on(t.submittedAt),
    index('predictions_submit_started_at').on(t.submitStartedAt),
    // Postgres only, for leased claims: live rows (next_poll_at is null once final) keyed by when each
    // can next be claimed (`claimableAt`). A claim walks it from the oldest entry and stops at `now()`:
    // rows under a live lease sit at their lease's end, so they are never visited, and a lease that
    // expires makes its row claimable at that moment with no sweep. The cost of a claim is the rows
    // it returns (plus any another instance is claiming this instant, which SKIP LOCKED steps over).
    index('predictions_claimable').on(claimableAt).where(sql`next_poll_at IS NOT NULL`),
    // Postgres only: an instance's own leases, to release them all on SIGTERM
    // (UPDATE … SET locked_by = NULL, locked_until = NULL WHERE locked_by = $me); few rows at any time.
    index('predictions_locked_by').on(t.lockedBy).where(sql`locked_by IS NOT NULL`),
  ],
);

/** API keys; only a hash of each is stored (see src/db/schema.ts). */
export const apiKeys = pgTable(
  'api_keys',
  {
    id: text('id').primaryKey(),
    name: text('name').notNull(),
    prefix: text('prefix').notNull(),
    keyHash: text('key_hash').notNull().unique(),
    perMinute: integer('per_minute'),
    maxInFlight: integer('max_in_flight'),
    createdAt: ts('created_at').notNull(),
    revokedAt: ts('revoked_at'),
    webhookSecret: text('webhook_secret'),
  },
  // A name names one live key. The condition names the column unqualified: drizzle-kit would write
  // `${t.revokedAt}` as "api_keys"."revoked_at", which is valid but reads differently from SQLite's.
  (t) => [uniqueIndex('api_keys_live_name').on(t.name).where(sql`revoked_at IS NULL`)],
);

/** createVideo idempotency keys, per owner, kept 24 h. */
export const idempotencyKeys = pgTable(
  'idempotency_keys',
  {
    /** The owning API key's id, or '' in open mode (a primary key column cannot hold null). */
    owner: text('owner').notNull(),
    key: text('key').notNull(),
    inputHash: text('input_hash').notNull(),
    predictionId: text('prediction_id').notNull(),
    createdAt: ts('created_at').notNull(),
  },
  (t) => [primaryKey({ columns: [t.owner, t.key] }), index('idempotency_keys_created_at').on(t.createdAt)],
);

/** A prediction's outgoing webhook (CreateVideoInput.webhookUrl), written with the prediction. */
export const predictionWebhooks = pgTable('prediction_webhooks', {
  predictionId: text('prediction_id')
    .primaryKey()
    .references(() => predictions.id, { onDelete: 'cascade' }),
  url: text('url').notNull(),
  events: jsonb('events').$type<PredictionStatus[]>().notNull(),
});

/** The webhook outbox: one message per prediction and status, written with the status change. */
export const webhookMessages = pgTable(
  'webhook_messages',
  {
    id: text('id').primaryKey(),
    predictionId: text('prediction_id')
      .notNull()
      .references(() => predictions.id, { onDelete: 'cascade' }),
    event: text('event', { enum: predictionStatuses }).notNull(),
    url: text('url').notNull(),
    payload: text('payload').notNull(),
    createdAt: ts('created_at').notNull(),
    attempts: integer('attempts').notNull().default(0),
    nextAttemptAt: ts('next_attempt_at'),
    deliveredAt: ts('delivered_at'),
    /**
     * Postgres only: the instance sending this message now (its id), or null. A dispatcher claims due
     * messages with FOR UPDATE SKIP LOCKED, setting `locked_by` and `locked_until`, so N instances
     * never POST one message at the same time; recording the attempt clears both (src/db/pg/outbox.ts).
     */
    lockedBy: text('locked_by'),
    /**
     * Postgres only: when the claim ends (claim time + WEBHOOK_TIMEOUT_MS + LEASE_MS). After it, another
     * instance may claim the message: how a message held by a SIGKILLed instance is still sent.
     */
    lockedUntil: ts('locked_until'),
  },
  (t) => [
    uniqueIndex('webhook_messages_prediction_event').on(t.predictionId, t.event),
    index('webhook_messages_next_attempt_at').on(t.nextAttemptAt),
    // Postgres only, for claims: pending messages keyed by when each can next be claimed
    // (`messageClaimableAt`), as `predictions_claimable` is for predictions.
    index('webhook_messages_claimable').on(messageClaimableAt).where(sql`next_attempt_at IS NOT NULL`),
  ],
);

/** Every attempt to deliver a message (Prediction.webhookDeliveries). */
export const webhookAttempts = pgTable(
  'webhook_attempts',
  {
    id: text('id').primaryKey(),
    messageId: text('message_id')
      .notNull()
      .references(() => webhookMessages.id, { onDelete: 'cascade' }),
    predictionId: text('prediction_id')
      .notNull()
      .references(() => predictions.id, { onDelete: 'cascade' }),
    attemptedAt: ts('attempted_at').notNull(),
    statusCode: integer('status_code'),
    latencyMs: integer('latency_ms').notNull(),
    error: text('error'),
    manual: boolean('manual').notNull().default(false),
  },
  (t) => [index('webhook_attempts_prediction').on(t.predictionId, t.attemptedAt)],
);

/** `webhook-id`s of incoming upstream deliveries already acted on. */
export const webhookReceipts = pgTable(
  'webhook_receipts',
  {
    webhookId: text('webhook_id').primaryKey(),
    receivedAt: ts('received_at').notNull(),
  },
  (t) => [index('webhook_receipts_received_at').on(t.receivedAt)],
);

/**
 * Postgres only: state of the upstream account that every instance must see, in one row (id = 1,
 * enforced by a CHECK). Written with an upsert (INSERT … ON CONFLICT (id) DO UPDATE), so no migration
 * seeds it. Account-wide counts need no columns here: the admission queue's concurrency and the
 * per-minute submissions are counted from `predictions` itself (upstream_id / submit_started_at /
 * submitted_at), which all instances share. Locking this row (SELECT … FOR UPDATE) is also a natural
 * mutex for the admission decision, so two instances cannot both take the account's last free place.
 */
export const accountState = pgTable(
  'account_state',
  {
    id: smallint('id').primaryKey().default(1),
    /**
     * No submission to upstream before this time, on any instance: a 429's Retry-After, or the
     * backoff after an account error (no balance, bad key). Null or past when not paused. A writer
     * should only extend it (greatest(paused_until, $new)), so a shorter pause seen later by another
     * instance cannot end a longer one.
     */
    pausedUntil: ts('paused_until'),
    /** Why the account is paused, for logs and /readyz: e.g. upstream's 429 message. */
    pauseReason: text('pause_reason'),
    updatedAt: ts('updated_at').notNull().defaultNow(),
  },
  () => [check('account_state_one_row', sql`id = 1`)],
);

export type PgPredictionRecord = typeof predictions.$inferSelect;
export type AccountStateRow = typeof accountState.$inferSelect;
