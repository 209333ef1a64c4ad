import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import type { AddressInfo } from 'node:net';
import { systemClock, type Clock } from './clock.js';
import type { Config } from './config.js';
import { openDatabase, type Db } from './db/client.js';
import { PredictionStore } from './db/predictions.js';
import { createLogger, type Logger } from './log.js';
import { Poller } from './poller/poller.js';
import { createRecorder } from './poller/record.js';
import { createPredictionPubSub, type PredictionPubSub } from './pubsub.js';
import type { Context } from './schema/context.js';
import { buildSchema } from './schema/index.js';
import { createHttpServer, SANDBOX_PREFIX } from './server/http.js';
import { createWebPage } from './server/page.js';
import { createWebhookHandler, webhookUrl } from './server/webhooks.js';
import { attachGraphqlWs } from './server/ws.js';
import { createGraphqlHandler, type InitialContext } from './server/yoga.js';
import { MediaStore } from './storage/media.js';
import { SandboxUpstream } from './upstream/sandbox.js';
import { WaveSpeedClient } from './upstream/wavespeed.js';
import { systemResolver, type ResolveHost } from './validation/address.js';

export interface AppOverrides {
  log?: Logger;
  /** Replaces fetch for upstream calls and output downloads (tests that count or break requests). */
  fetch?: typeof fetch;
  /** Time for the poller and the sandbox; a scaled clock runs minutes in seconds. */
  clock?: Clock;
  /** DNS for the image-URL guard; tests inject a table so no lookup leaves the machine. */
  resolveHost?: ResolveHost;
}

export interface App {
  readonly store: PredictionStore;
  readonly db: Db;
  readonly sandbox?: SandboxUpstream;
  readonly media?: MediaStore;
  readonly pubsub: PredictionPubSub;
  /** Set once started. */
  readonly poller?: Poller;
  /** Listens, then starts the poller; resolves to the base URL (e.g. http://127.0.0.1:4000). */
  start(): Promise<string>;
  /** Stops the poller (letting in-flight writes land), closes sockets and the database. */
  stop(): Promise<void>;
}

/** The composition root: config → db → pubsub → upstream → poller → yoga + ws server. */
export function buildApp(config: Config, overrides: AppOverrides = {}): App {
  const log = overrides.log ?? createLogger(config.logLevel);
  const clock = overrides.clock ?? systemClock;
  const now = () => clock.now();
  const db = openDatabase(join(config.dataDir, 'cinegraph.sqlite'));
  const store = new PredictionStore(db);
  const pubsub = createPredictionPubSub();
  const recorder = createRecorder(store, pubsub, now);
  const sandbox = config.sandbox
    ? new SandboxUpstream({ taskSeconds: config.sandbox.taskSeconds, faults: config.sandbox.faults, clock })
    : undefined;
  const media = config.media.keep
    ? new MediaStore({ dir: join(config.dataDir, 'media'), maxBytes: config.media.maxBytes, timeoutMs: 120_000, fetch: overrides.fetch })
    : undefined;

  let poller: Poller | undefined;
  const base = { store, pubsub, now, newId: randomUUID, resolveHost: overrides.resolveHost ?? systemResolver(), wakePoller: () => poller?.nudge() };
  const context = (initial: InitialContext): Context => {
    let origin: string | undefined;
    return {
      ...base,
      // A function, not a getter (envelop copies the context, which would call a getter): only
      // kept-output links need it, and parsing the URL on every request shows in profiles.
      baseUrl: () =>
        (origin ??= config.publicUrl ?? (initial.request ? new URL(initial.request.url).origin : `http://${initial.req?.headers.host ?? 'localhost'}`)),
    };
  };
  // apiKeys: GraphiQL's header prefill; to follow the key mode once the auth work exposes one in config.
  const yoga = createGraphqlHandler(buildSchema(), context, log, { apiKeys: false });
  const onWebhook = config.publicUrl ? createWebhookHandler(store, (id) => poller?.pollNow(id)) : undefined;
  const server = createHttpServer({ yoga, log, sandbox, media, onWebhook, page: createWebPage({ log }) });
  const closeWs = attachGraphqlWs(server, yoga);

  return {
    store,
    db,
    sandbox,
    media,
    pubsub,
    get poller() {
      return poller;
    },
    async start() {
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(config.port, config.host, () => resolve());
      });
      const { port } = server.address() as AddressInfo;
      const loopbackHost = ['0.0.0.0', '::'].includes(config.host) ? '127.0.0.1' : config.host;
      const host = loopbackHost.includes(':') ? `[${loopbackHost}]` : loopbackHost;
      const url = `http://${host}:${port}`;
      const client = new WaveSpeedClient({
        baseUrl: config.upstream.baseUrl ?? `${url}${SANDBOX_PREFIX}`,
        apiKey: config.upstream.apiKey,
        timeoutMs: config.upstream.timeoutMs,
        fetch: overrides.fetch,
      });
      const publicUrl = config.publicUrl;
      poller = new Poller({
        store,
        client,
        recorder,
        log,
        clock,
        media,
        schedule: config.poll,
        concurrency: config.poll.concurrency,
        maxAgeMs: config.poll.maxAgeMs,
        webhookFallbackMs: config.poll.webhookFallbackMs,
        webhookUrl: publicUrl ? (id, token) => webhookUrl(publicUrl, id, token) : undefined,
      });
      poller.start();
      log.info({ url, upstream: sandbox ? 'sandbox' : config.upstream.baseUrl, dataDir: config.dataDir, webhooks: Boolean(publicUrl) }, 'cinegraph listening');
      return url;
    },
    async stop() {
      await poller?.stop();
      sandbox?.close();
      await closeWs();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      db.$client.close();
    },
  };
}
