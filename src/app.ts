import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import { GraphQLError } from 'graphql';
import { join } from 'node:path';
import type { AddressInfo } from 'node:net';
import { systemClock, type Clock } from './clock.js';
import { Connections, watchRevocations } from './auth/connections.js';
import { KeyStore, type Keys } from './auth/keys.js';
import { PgKeyCache } from './auth/pg-keys.js';
import { authenticate, UNAUTHENTICATED_MESSAGE } from './auth/principal.js';
import { Quotas } from './auth/quotas.js';
import { ConfigError, type Config } from './config.js';
import { IdempotencyStore } from './db/idempotency.js';
import { openDatabase, type Db } from './db/client.js';
import { reportStorageFailures } from './db/errors.js';
import { groupCommitter } from './db/group-commit.js';
import { PredictionStore } from './db/predictions.js';
import { acquireInstanceLock, type InstanceLock } from './lock.js';
import { createLogger, type Logger } from './log.js';
import { QueueStore } from './db/queue.js';
import { sqliteCreator, sqliteIdempotency, sqlitePredictions, sqliteQueue } from './db/store.js';
import { closePostgres, openPostgres, type PgDb } from './db/pg/client.js';
import { createPgStore } from './db/pg/index.js';
import { pingPostgres } from './db/pg/ping.js';
import { type Bridge, startBridge } from './bus/bridge.js';
import { PgChangeBus } from './bus/pg.js';
import { RedisChangeBus } from './bus/redis.js';
import { Admission } from './poller/admission.js';
import { Poller } from './poller/poller.js';
import { publishQueueMoves } from './poller/queue-ticks.js';
import { createRecorder } from './poller/record.js';
import { createPredictionPubSub, type PredictionPubSub } from './pubsub.js';
import type { Context, Lifecycle } from './schema/context.js';
import { buildSchema } from './schema/index.js';
import { createAccessGate } from './server/access.js';
import { createHttpServer, SANDBOX_PREFIX } from './server/http.js';
import { createOriginPolicy, isLoopbackHost } from './server/origin.js';
import { createMetrics } from './server/metrics.js';
import { createWebPage } from './server/page.js';
import { createWebhookHandler, WEBHOOK_PREFIX, webhookUrl } from './server/webhooks.js';
import { WebhookStore } from './db/outbox.js';
import { WebhookDispatcher } from './webhooks/dispatcher.js';
import { UpstreamSecret } from './webhooks/incoming.js';
import { createOutgoing, createPgOutgoing, type OutgoingOptions } from './webhooks/outgoing.js';
import { PgOutbox } from './db/pg/outbox.js';
import { openModeSecret } from './webhooks/secrets.js';
import { attachGraphqlWs } from './server/ws.js';
import { createGraphqlHandler, type InitialContext } from './server/yoga.js';
import { createResponseCache, type ResponseCache } from './server/response-cache.js';
import { createEarlyAnswer } from './server/early-answer.js';
import { createEarlyExecution } from './server/early-execution.js';
import { ImageStore } from './storage/images.js';
import { MediaStore } from './storage/media.js';
import { createPgRetention, createRetention, type Retention } from './storage/retention.js';
import { SandboxUpstream } from './upstream/sandbox.js';
import { WaveSpeedClient } from './upstream/wavespeed.js';
import { systemResolver, type ResolveHost } from './validation/address.js';

export interface AppOverrides {
  log?: Logger;
  /** Replaces fetch for output downloads (tests that count or break requests). */
  fetch?: typeof fetch;
  /** Time for the poller and the sandbox; a scaled clock runs minutes in seconds. */
  clock?: Clock;
  /** DNS for the image-URL guard; tests inject a table so no lookup leaves the machine. */
  resolveHost?: ResolveHost;
  /** false: every operation goes through yoga's own pipeline, never executed by the HTTP layer (tests' baseline for it). */
  earlyExecution?: boolean;
}

export interface App {
  readonly store: PredictionStore;
  readonly db: Db;
  readonly sandbox?: SandboxUpstream;
  readonly media?: MediaStore;
  readonly pubsub: PredictionPubSub;
  /** The API keys in DATA_DIR; with DATABASE_URL the server uses `keyCache` (Postgres) instead. */
  readonly keys: KeyStore;
  /** With DATABASE_URL: the snapshot of Postgres' api_keys every request is checked against. */
  readonly keyCache?: PgKeyCache;
  /** Set once started. */
  /** Built with the app; it runs between start() and stop(). */
  readonly poller: Poller;
  /** Data-URI images kept as files. */
  readonly images: ImageStore;
  /** Deletes old final predictions and their files (RETENTION_DAYS); swept daily once started. */
  readonly retention: Retention;
  /** Outgoing webhooks: the outbox and the dispatcher that delivers it (tests await its events). */
  readonly webhooks: { store: WebhookStore; dispatcher: WebhookDispatcher };
  /** The response cache of prediction(id), unless RESPONSE_CACHE=false. */
  readonly responseCache?: ResponseCache;
  /** With DATABASE_URL: what this process's leases and bus announcements say it is. */
  readonly instanceId?: string;
  /** Listens, then starts the poller; resolves to the base URL (e.g. http://127.0.0.1:4000). */
  start(): Promise<string>;
  /** Stops the poller (letting in-flight writes land), closes sockets and the database. */
  stop(): Promise<void>;
}

/**
 * The app for this configuration: with DATABASE_URL, Postgres is opened (and migrated) first, so
 * the app is built on it; otherwise the same as buildApp.
 */
export async function openApp(config: Config, overrides: AppOverrides = {}): Promise<App> {
  if (!config.scaleOut) return buildApp(config, overrides);
  return buildApp(config, overrides, await openPostgres(config.scaleOut.databaseUrl, { applicationName: 'cinegraph' }));
}

/**
 * The composition root: config → db → pubsub → upstream → poller → yoga + ws server. With `pg`
 * (DATABASE_URL, issue 16), predictions, the queue, idempotency keys, leases and the account's
 * pause live in Postgres, shared by every instance, and changes reach the other instances over the
 * bus; API keys and the outgoing webhook outbox live there too (auth/pg-keys.ts, db/pg/outbox.ts); kept
 * files and the ids of incoming upstream webhooks stay in DATA_DIR.
 */
export function buildApp(config: Config, overrides: AppOverrides = {}, pg?: PgDb): App {
  const log = overrides.log ?? createLogger(config.logLevel);
  const clock = overrides.clock ?? systemClock;
  const now = () => clock.now();
  const db = openDatabase(join(config.dataDir, 'cinegraph.sqlite'));
  const store = new PredictionStore(db);
  const pubsub = createPredictionPubSub();
  // Prometheus metrics; their gauges read the store, connections and keys at scrape time.
  const metrics = createMetrics({
    db,
    pg,
    now,
    token: config.metricsToken,
    connections: () => connections.total(),
    subscriptions: () => pubsub.count(),
    authenticated: (authorization) => authenticate(keys, authorization) !== undefined,
  });
  const keyStore = new KeyStore(db);
  // With DATABASE_URL every instance checks the keys in Postgres, from a snapshot it keeps fresh.
  const keyCache = pg && config.scaleOut ? new PgKeyCache({ db: pg, connectionString: config.scaleOut.databaseUrl, log }) : undefined;
  const keys: Keys = keyCache ?? keyStore;
  const webhookStore = new WebhookStore(db);
  /** Where the server listens, once it does: the origin of links in webhook payloads without PUBLIC_URL. */
  let listenUrl = '';
  const outgoingOptions: OutgoingOptions = {
    predictions: { findById: (id) => predictions.findById(id) },
    keys,
    // On Postgres, open mode signs with WEBHOOK_SIGNING_SECRET only: a secret generated into each
    // instance's DATA_DIR would differ between instances, and receivers could verify only one's.
    openSecret: () => (pg ? config.webhooks.signingSecret : openModeSecret(config.dataDir, config.webhooks.signingSecret)),
    baseUrl: () => config.publicUrl ?? listenUrl,
    now,
    allowPrivate: config.webhooks.allowPrivate,
  };
  const outgoing = createOutgoing({ ...outgoingOptions, store: webhookStore }, () => dispatcher);
  // Every status change also queues its outgoing webhook, in the same transaction.
  // Each visible change timed from its write to its publish (cinegraph_event_delivery_seconds).
  const scaleOut = pg && config.scaleOut;
  const instanceId = scaleOut ? `${hostname()}:${process.pid}:${randomUUID().slice(0, 8)}` : undefined;
  // Postgres mode: the outbox is there too, each message claimed by one instance at a time for as
  // long as an attempt can take (the POST's timeout, then LEASE_MS to record it).
  const pgOutbox = pg && scaleOut && instanceId ? new PgOutbox(pg, { instanceId, leaseMs: config.webhooks.timeoutMs + scaleOut.leaseMs }) : undefined;
  const pgOutgoing = pgOutbox && createPgOutgoing({ ...outgoingOptions, outbox: pgOutbox }, (): WebhookDispatcher => dispatcher);
  /** Joins this instance to the others once started (Postgres mode). */
  let bridge: Bridge | undefined;
  // Each change this instance records is also announced to the other instances, as soon as it has
  // committed (before its own subscribers are written to: see PgRecorderOptions.announce).
  const pgStore =
    pg && scaleOut && instanceId
      ? createPgStore(pg, { instanceId, leaseMs: scaleOut.leaseMs, limits: config.admission, pubsub, now, hook: pgOutgoing?.hook, announce: (row) => bridge?.announce(row) })
      : undefined;
  // On SQLite the poller's writes and the createVideo inserts of one event-loop turn share a commit.
  const commit = groupCommitter(db.$client);
  const recorder = metrics.observeRecorder(pgStore ? pgStore.recorder : createRecorder(store, pubsub, now, outgoing.hook, commit));
  const quotas = new Quotas(config.access.quotas);
  const connections = new Connections();
  const origins = createOriginPolicy({ corsOrigins: config.access.corsOrigins, publicUrl: config.publicUrl });
  const idempotency = new IdempotencyStore(db);
  const sandbox = config.sandbox
    ? new SandboxUpstream({ taskSeconds: config.sandbox.taskSeconds, faults: config.sandbox.faults, clock, tasksFile: join(config.dataDir, 'sandbox.sqlite'), uploadsDir: join(config.dataDir, 'sandbox-uploads'), webhookPrefix: config.publicUrl && `${config.publicUrl}${WEBHOOK_PREFIX}` })
    : undefined;
  const resolveHost = overrides.resolveHost ?? systemResolver();
  const dispatcher = new WebhookDispatcher({
    store: pgOutbox ?? outgoing.outbox,
    secretFor: (pgOutgoing ?? outgoing).secretFor,
    log,
    resolveHost,
    clock,
    allowPrivate: config.webhooks.allowPrivate,
    retryBaseMs: config.webhooks.retryBaseMs,
    timeoutMs: config.webhooks.timeoutMs,
  });
  const images = new ImageStore(join(config.dataDir, 'images'));
  /** The upstream's base URL; the sandbox's is known only once the server listens. */
  let upstreamBaseUrl = config.upstream.baseUrl;
  const media = config.media.keep
    ? new MediaStore({
        dir: join(config.dataDir, 'media'),
        maxBytes: config.media.maxBytes,
        timeoutMs: 120_000,
        fetch: overrides.fetch,
        resolveHost,
        // Outputs on the configured upstream's own host are trusted whatever its address (the sandbox is on loopback).
        trustedHosts: () => (upstreamBaseUrl ? [new URL(upstreamBaseUrl).host] : []),
      })
    : undefined;

  // Built up front; the embedded sandbox's URL is bound late, once the server listens.
  const client = new WaveSpeedClient({
    baseUrl: () => {
      if (!upstreamBaseUrl) throw new Error('the upstream URL is known once the server listens');
      return upstreamBaseUrl;
    },
    apiKey: config.upstream.apiKey,
    timeoutMs: config.upstream.timeoutMs,
    observe: metrics.observeUpstream,
  });
  const publicUrl = config.publicUrl;
  // The poller and the resolvers see the store through its async interface (db/store.ts), which
  // Postgres will serve too; SQLite's classes stay synchronous underneath.
  const predictions = pgStore?.predictions ?? sqlitePredictions(store);
  const queue = pgStore?.queue ?? sqliteQueue(new QueueStore(db));
  const admission = new Admission(queue, config.admission);
  const poller = new Poller({
    store: predictions,
    queue,
    admission,
    client,
    recorder,
    lifecycleRecorder: pgStore && metrics.observeRecorder(pgStore.lifecycleRecorder),
    leases: pgStore?.leases,
    leaseMs: scaleOut ? scaleOut.leaseMs : undefined,
    sharedPause: pgStore?.pause,
    log,
    clock,
    media,
    images,
    schedule: config.poll,
    concurrency: config.poll.concurrency,
    maxAgeMs: config.poll.maxAgeMs,
    retryAfterMaxMs: config.poll.retryAfterMaxMs,
    maxSubmissions: config.poll.maxSubmissions,
    reconcileGraceMs: config.poll.reconcileGraceMs,
    webhookFallbackMs: config.poll.webhookFallbackMs,
    webhookUrl: publicUrl ? (id, token) => webhookUrl(publicUrl, id, token) : undefined,
  });
  const stopQueueMoves = publishQueueMoves({ poller, store: predictions, pubsub });
  // On Postgres, every instance schedules it; one at a time sweeps (an advisory lock, storage/retention.ts).
  const retention = pg
    ? createPgRetention({ pg, images, media, log, now, retentionMs: config.retentionMs })
    : createRetention({ db, images, media, log, now, retentionMs: config.retentionMs });
  let stopRetention: (() => Promise<void>) | undefined;
  const lifecycle: Lifecycle = {
    cancel: (id) => poller.cancel(id),
    estimate: (row) => admission.estimate(row, now(), () => queue.upstreamSubmittedAt(config.admission.maxConcurrent ?? 0)),
  };
  const storageFailed = (err: unknown) => void poller.storageFailed(err);
  const base: Omit<Context, 'principal' | 'baseUrl'> = {
    store: predictions,
    // A resolver's write that fails on storage pauses the poller too (see reportStorageFailures).
    creator: reportStorageFailures(pgStore?.creator ?? sqliteCreator(store, idempotency, commit), storageFailed),
    idempotency: pgStore?.idempotency ?? sqliteIdempotency(idempotency),
    pubsub,
    now,
    newId: randomUUID,
    resolveHost,
    wakePoller: () => poller.nudge(),
    quotas,
    lifecycle,
    images: reportStorageFailures(images, storageFailed),
    webhooks: pgOutgoing?.api ?? outgoing.api,
  };
  const context = (initial: InitialContext): Context => {
    // Set by the HTTP gate or by the socket's connection_init; nothing runs without it.
    const principal = initial.principal;
    if (!principal) throw new GraphQLError(UNAUTHENTICATED_MESSAGE, { extensions: { code: 'UNAUTHENTICATED', http: { status: 401 } } });
    let origin: string | undefined;
    // Each property written out, not `...base`: V8 builds an object literal that spreads and then
    // adds properties on a slow path, ~2 µs a request against ~0.02 (2.3% of an uncached
    // `prediction(id)`'s server CPU, issue 18). Every Context property is required, so its type says if
    // one is missing here.
    return {
      store: base.store,
      creator: base.creator,
      idempotency: base.idempotency,
      pubsub: base.pubsub,
      now: base.now,
      newId: base.newId,
      resolveHost: base.resolveHost,
      wakePoller: base.wakePoller,
      quotas: base.quotas,
      lifecycle: base.lifecycle,
      images: base.images,
      webhooks: base.webhooks,
      principal,
      // A function, not a getter (envelop copies the context, which would call a getter): only
      // kept-output links need it, and parsing the URL on every request shows in profiles.
      // A method, not an arrow property: under tsx (esbuild's keepNames, `npm start`) the arrow gets
      // its `name` redefined, which gives it a 256-byte property dictionary, and a graphql-ws
      // subscription keeps its context for its whole life. Issue 18, 3,000 sockets of one
      // subscription each, heap used after GC: 13.3 → 13.1 KB per subscription.
      baseUrl() {
        origin ??= config.publicUrl ?? initial.origin ?? (initial.request ? new URL(initial.request.url).origin : `http://${initial.req?.headers.host ?? 'localhost'}`);
        return origin;
      },
    };
  };
  // GraphiQL prefills an Authorization header in its tabs once keys exist.
  // prediction(id) answers cached per caller and Host, dropped on every recorded change.
  // Not with several instances: another instance's change reaches this cache only as fast as the
  // bus, and a lost announcement would leave a stale status until the entry expires; each instance
  // reads Postgres instead. (README: RESPONSE_CACHE.)
  const responseCache = config.responseCache && !pgStore ? createResponseCache({ pubsub }) : undefined;
  const execution = overrides.earlyExecution === false ? undefined : createEarlyExecution(metrics.earlyExecuted);
  const yoga = createGraphqlHandler(buildSchema(), context, log, { apiKeys: () => !keys.isEmpty() }, responseCache?.plugin, execution?.plugin);
  const onWebhook = config.publicUrl
    ? createWebhookHandler({
        store: predictions,
        pollNow: (id) => poller.pollNow(id),
        secret: new UpstreamSecret(
          () => client.getWebhookSecret(),
          (err) => log.warn({ err: (err as Error).message }, 'could not fetch the webhook secret from upstream; deliveries are refused until it can be'),
        ),
        // Ids are kept 10 minutes: past the 5-minute tolerance a replay is refused by its timestamp anyway.
        firstDelivery: (webhookId) => webhookStore.rememberReceipt(webhookId, new Date(), new Date(Date.now() - 10 * 60_000)),
        // Signatures are about real time, not the poller's (possibly scaled) clock.
        now: () => new Date(),
      })
    : undefined;
  const access = { keys, origins, connections, quotas };
  // /readyz's "database writable" on SQLite: takes the write lock (BEGIN IMMEDIATE) and rewrites the
  // newest row unchanged, then rolls back. A read-only file, connection or database fails the write
  // with SQLITE_READONLY (BEGIN IMMEDIATE alone passes on a read-only connection), a lock held past
  // busy_timeout with SQLITE_BUSY; nothing reaches the disk, so probing often costs no I/O. A full disk
  // shows only when a write must grow a file: the first real write that fails pauses the poller
  // (storage), and that pause is a reason below.
  // With DATABASE_URL the predictions are in Postgres: a bounded SELECT 1 (within 2 s) says whether
  // it answers; a write there would take a row lock the instances' pollers contend for, and a
  // server that refuses writes pauses the poller on its first write just the same.
  const sqliteWriteProbe = db.$client.prepare('UPDATE predictions SET version = version WHERE seq = (SELECT max(seq) FROM predictions)');
  const rolledBack = new Error('rolled back');
  const sqliteWriteCheck = db.$client.transaction(() => {
    sqliteWriteProbe.run();
    throw rolledBack;
  });
  const sqliteWritable = async () => {
    try {
      sqliteWriteCheck.immediate();
    } catch (err) {
      if (err === rolledBack) return;
      const { code, message } = err as { code?: string; message: string };
      throw new Error(`database not writable: ${code ? `${code}: ` : ''}${message}`);
    }
  };
  const ping = pg ? () => pingPostgres(pg) : sqliteWritable;
  /** Why the gateway cannot do its work right now (for /readyz); a rate-limit pause is normal operation. */
  const notReady = async (): Promise<string[]> => {
    const health = poller.health();
    if (!health.running) return ['poller: not running'];
    const reasons = health.pauses.filter((p) => p.kind !== 'rate').map((p) => `${p.kind}: ${p.reason}`);
    try {
      await ping();
    } catch (err) {
      reasons.push(`storage: ${(err as Error).message}`);
    }
    return reasons;
  };
  const server = createHttpServer({ yoga, log, sandbox, media, onWebhook, page: createWebPage(), access: createAccessGate(access), notReady, metrics: metrics.handle, early: createEarlyAnswer(responseCache, metrics.earlyAnswered), execution });
  const closeWs = attachGraphqlWs(server, yoga, access);
  let stopWatching: (() => void) | undefined;

  let instanceLock: InstanceLock | undefined;
  return {
    store,
    db,
    sandbox,
    media,
    pubsub,
    keys: keyStore,
    keyCache,
    poller,
    images,
    retention,
    webhooks: { store: webhookStore, dispatcher },
    responseCache,
    instanceId,
    async start() {
      // Never judged on an unread snapshot: until it is read, the cache says "not empty" anyway.
      await keyCache?.ready();
      if (keys.isEmpty()) {
        // No key means no protection: only this machine may reach an open gateway.
        if (!isLoopbackHost(config.host)) {
          throw new ConfigError(
            `refusing to listen on ${config.host} with no API keys: anyone who can reach it could spend the upstream credit and read every prompt.\n` +
              `Create a key first (cinegraph keys create --name NAME, with the same ${keyCache ? 'DATABASE_URL' : 'DATA_DIR'}) or listen on a loopback address (HOST=127.0.0.1).`,
          );
        }
        log.warn({ host: config.host }, 'no API keys: open mode, every request from this machine is accepted (create one with `cinegraph keys create --name NAME`)');
      }
      // Before listening or polling: a second server on this DATA_DIR must not submit anything.
      // (With DATABASE_URL, instances share the work through leases instead, and may share DATA_DIR.)
      if (!pgStore) instanceLock = await acquireInstanceLock(config.dataDir);
      if (pgStore && scaleOut && instanceId) {
        const bus = scaleOut.redisUrl
          ? new RedisChangeBus({ url: scaleOut.redisUrl, instanceId, log })
          : new PgChangeBus({ connectionString: scaleOut.databaseUrl, instanceId, log });
        bridge = await startBridge({
          bus,
          pubsub,
          load: (id) => predictions.findById(id),
          log,
          resyncMs: scaleOut.resyncMs,
          // Another instance's change: a cached answer here is stale, watched or not.
          onChange: (change) => {
            responseCache?.invalidate(change.id);
            // Another instance's change may have moved the queue (a submission, a cancel): the
            // queued predictions followed here get their new places (coalesced, once a second).
            poller.emit('queueMoved');
          },
          // Changes announced while the bus was away are unknown: no cached answer can be trusted.
          onReconnect: () => responseCache?.clear(),
        });
      }
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(config.port, config.host, () => resolve());
      });
      const { port } = server.address() as AddressInfo;
      const loopbackHost = ['0.0.0.0', '::'].includes(config.host) ? '127.0.0.1' : config.host;
      const host = loopbackHost.includes(':') ? `[${loopbackHost}]` : loopbackHost;
      const url = `http://${host}:${port}`;
      upstreamBaseUrl ??= `${url}${SANDBOX_PREFIX}`;
      listenUrl = url;
      poller.start();
      dispatcher.start();
      stopRetention = retention.schedule();
      // Revoked keys (by the CLI, in its own process) lose their sockets and SSE streams within 200 ms.
      stopWatching = watchRevocations({
        keys,
        connections,
        onClosed: (owners, count) => log.info({ keys: owners, connections: count }, 'closed the connections of revoked keys'),
      });
      log.info({ url, upstream: config.upstream.baseUrl ?? 'sandbox', dataDir: config.dataDir, webhooks: Boolean(config.publicUrl) }, 'cinegraph listening');
      return url;
    },
    async stop() {
      stopWatching?.();
      await stopRetention?.();
      await poller.stop();
      await dispatcher.stop();
      stopQueueMoves();
      responseCache?.stop();
      sandbox?.close();
      await closeWs();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await bridge?.stop();
      await keyCache?.stop();
      if (pg) await closePostgres(pg);
      db.$client.close();
      await instanceLock?.release();
    },
  };
}
