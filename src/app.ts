import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import type { AddressInfo } from 'node:net';
import type { Config } from './config.js';
import { openDatabase, type Db } from './db/client.js';
import { PredictionStore } from './db/predictions.js';
import { createLogger, type Logger } from './log.js';
import { Poller } from './poller/poller.js';
import { createRecorder } from './poller/record.js';
import { createPredictionPubSub } from './pubsub.js';
import type { Context } from './schema/context.js';
import { buildSchema } from './schema/index.js';
import { createHttpServer, SANDBOX_PREFIX } from './server/http.js';
import { attachGraphqlWs } from './server/ws.js';
import { createGraphqlHandler } from './server/yoga.js';
import { SandboxUpstream } from './upstream/sandbox.js';
import { WaveSpeedClient } from './upstream/wavespeed.js';
import { systemResolver, type ResolveHost } from './validation/address.js';

export interface AppOverrides {
  log?: Logger;
  /** Replaces fetch for upstream calls (tests that count or break requests). */
  fetch?: typeof fetch;
  now?: () => Date;
  /** DNS for the image-URL guard; tests inject a table so no lookup leaves the machine. */
  resolveHost?: ResolveHost;
}

export interface App {
  readonly store: PredictionStore;
  readonly db: Db;
  readonly sandbox?: SandboxUpstream;
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
  const now = overrides.now ?? (() => new Date());
  const db = openDatabase(join(config.dataDir, 'cinegraph.sqlite'));
  const store = new PredictionStore(db);
  const pubsub = createPredictionPubSub();
  const recorder = createRecorder(store, pubsub, now);
  const sandbox = config.sandbox
    ? new SandboxUpstream({ taskSeconds: config.sandbox.taskSeconds, faults: { failureRate: config.sandbox.failureRate } })
    : undefined;

  let poller: Poller | undefined;
  const context: Context = {
    store,
    pubsub,
    now,
    newId: randomUUID,
    resolveHost: overrides.resolveHost ?? systemResolver(),
    wakePoller: () => poller?.nudge(),
  };
  const yoga = createGraphqlHandler(buildSchema(), () => context, log);
  const server = createHttpServer({ yoga, log, sandbox });
  const closeWs = attachGraphqlWs(server, yoga);

  return {
    store,
    db,
    sandbox,
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
      poller = new Poller({ store, client, recorder, log, now, schedule: config.poll, concurrency: config.poll.concurrency });
      poller.start();
      log.info({ url, upstream: sandbox ? 'sandbox' : config.upstream.baseUrl, dataDir: config.dataDir }, 'cinegraph listening');
      return url;
    },
    async stop() {
      await poller?.stop();
      await closeWs();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      db.$client.close();
    },
  };
}
