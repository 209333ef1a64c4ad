import { createHash, timingSafeEqual } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { performance } from 'node:perf_hooks';
import { and, count, isNotNull, lte, min, sql } from 'drizzle-orm';
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import { UNAUTHENTICATED_MESSAGE } from '../auth/principal.js';
import type { Db } from '../db/client.js';
import type { PgDb } from '../db/pg/client.js';
import { predictions, predictionStatuses } from '../db/schema.js';
import type { Recorder } from '../poller/record.js';
import { UpstreamError, type UpstreamObservation } from '../upstream/wavespeed.js';
import { refuse } from './origin.js';
import type { EarlyOutcome } from './early-execution.js';

export interface MetricsDeps {
  db: Db;
  /** With DATABASE_URL: where the predictions are, so the stored-state gauges read it instead of `db`. */
  pg?: PgDb;
  /** The poller's clock: `nextPollAt` is in its time, so the lag must be too. */
  now: () => Date;
  /** Open graphql-ws sockets and SSE streams. */
  connections: () => number;
  /** Open `predictionUpdated` subscriptions (pubsub listeners). */
  subscriptions: () => number;
  /** Whether an Authorization header names a live API key (always true in open mode, on loopback only). */
  authenticated: (authorization: string | undefined) => boolean;
  /** METRICS_TOKEN: a scraper's bearer token, accepted besides any live API key. */
  token?: string;
}

export interface Metrics {
  readonly registry: Registry;
  /** For WaveSpeedClient's `observe` option: one upstream request done. */
  observeUpstream(o: UpstreamObservation): void;
  /** One `prediction(id)` answer written from the response cache by the HTTP layer, before yoga. */
  earlyAnswered(): void;
  /** One operation executed by the HTTP layer outside yoga's pipeline: answered there, or its outcome handed to yoga. */
  earlyExecuted(outcome: EarlyOutcome): void;
  /** Wraps a recorder so each visible change is timed from its write to its publish, and counted. */
  observeRecorder(recorder: Recorder): Recorder;
  /** GET /metrics: the Prometheus text format, behind a key or METRICS_TOKEN once keys exist. */
  handle(req: IncomingMessage, res: ServerResponse): Promise<void>;
}

/** How upstream answered, in a handful of values (a label must not take unbounded values). */
export function upstreamOutcome(error: unknown): string {
  if (error === undefined) return 'ok';
  if (!(error instanceof UpstreamError)) return 'error';
  if (error.kind !== 'http') return error.kind; // network | timeout | protocol
  const status = error.status ?? 0;
  if (status === 429) return 'rate_limited';
  return status >= 500 ? 'server_error' : 'client_error';
}

const digest = (s: string) => createHash('sha256').update(s).digest();

/** Predictions due now (how many, and the oldest one's due time), for the poller gauges. */
interface Due {
  n: number;
  oldest: Date | null;
}

/** What the stored-state gauges read at scrape time: synchronous on SQLite, a promise on Postgres. */
interface StoredState {
  byStatus(): { status: string; n: number }[] | Promise<{ status: string; n: number }[]>;
  due(now: Date): Due | Promise<Due>;
}

function sqliteStoredState(db: Db): StoredState {
  const byStatus = db
    .select({ status: predictions.status, n: count() })
    .from(predictions)
    .groupBy(predictions.status)
    .prepare();
  // The poller's own definition of due (PredictionStore.due): a next poll time that has come.
  const due = db
    .select({ n: count(), oldest: min(predictions.nextPollAt) })
    .from(predictions)
    .where(and(isNotNull(predictions.nextPollAt), lte(predictions.nextPollAt, sql.placeholder('now'))))
    .prepare();
  return {
    byStatus: () => byStatus.all(),
    due: (now) => due.all({ now: now.getTime() })[0] ?? { n: 0, oldest: null },
  };
}

/**
 * The same gauges on Postgres (DATABASE_URL): every instance's rows, so each instance reports the
 * cluster's totals (sum nothing across instances; any one of them, or max, is the figure). Due means
 * what a leased claim takes (src/db/pg/leases.ts): claimable now, `greatest(next_poll_at, locked_until)`,
 * written as the `predictions_claimable` index has it, so a row another instance is working on under
 * a live lease is not waiting, and one whose holder died waits from its lease's end.
 */
function pgStoredState(pg: PgDb): StoredState {
  return {
    async byStatus() {
      const { rows } = await pg.$client.query<{ status: string; n: number }>('SELECT status, count(*)::int AS n FROM predictions GROUP BY status');
      return rows;
    },
    async due(now) {
      const { rows } = await pg.$client.query<Due>(
        `SELECT count(*)::int AS n, min(greatest(next_poll_at, locked_until)) AS oldest FROM predictions
         WHERE next_poll_at IS NOT NULL AND greatest(next_poll_at, locked_until) <= $1::timestamptz`,
        [now.toISOString()],
      );
      return rows[0] ?? { n: 0, oldest: null };
    },
  };
}

/**
 * Prometheus metrics in a registry of their own (so several apps in one process, as in tests, do not
 * collide). Gauges that describe stored state are read at scrape time, by one GROUP BY and one
 * indexed range query, rather than kept in step with every write.
 */
export function createMetrics({ db, pg, now, connections, subscriptions, authenticated, token }: MetricsDeps): Metrics {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  const stored = pg ? pgStoredState(pg) : sqliteStoredState(db);

  new Gauge({
    name: 'cinegraph_predictions',
    help: 'Predictions in the database, by status',
    labelNames: ['status'],
    registers: [registry],
    // prom-client awaits a collect that returns a promise (Postgres' queries are).
    async collect() {
      const counts = await stored.byStatus();
      this.reset();
      for (const status of predictionStatuses) this.set({ status }, 0);
      for (const { status, n } of counts) this.set({ status }, n);
    },
  });
  let dueNow: Due | Promise<Due> | undefined;
  const readDue = () => (dueNow ??= stored.due(now()));
  new Gauge({
    name: 'cinegraph_poller_due_predictions',
    help: 'Predictions whose next step (submission, reconciliation or poll) is due now: the poller queue depth',
    registers: [registry],
    async collect() {
      this.set((await readDue()).n);
    },
  });
  new Gauge({
    name: 'cinegraph_poller_lag_seconds',
    help: 'How late the oldest due prediction is: now minus its nextPollAt (0 when none is due)',
    registers: [registry],
    async collect() {
      const oldest = (await readDue()).oldest;
      this.set(oldest ? Math.max(0, now().getTime() - oldest.getTime()) / 1000 : 0);
    },
  });
  new Gauge({
    name: 'cinegraph_open_connections',
    help: 'Open long-lived connections: graphql-ws sockets and SSE streams',
    registers: [registry],
    collect() {
      this.set(connections());
    },
  });
  new Gauge({
    name: 'cinegraph_subscriptions',
    help: 'Open predictionUpdated subscriptions, over graphql-ws and SSE',
    registers: [registry],
    collect() {
      this.set(subscriptions());
    },
  });
  const upstreamRequests = new Counter({
    name: 'cinegraph_upstream_requests_total',
    help: 'Requests to the upstream API, by endpoint (submit, result, list) and outcome',
    labelNames: ['endpoint', 'outcome'],
    registers: [registry],
  });
  const upstreamSeconds = new Histogram({
    name: 'cinegraph_upstream_request_duration_seconds',
    help: 'Latency of upstream API requests, by endpoint and outcome',
    labelNames: ['endpoint', 'outcome'],
    buckets: [0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15, 30],
    registers: [registry],
  });
  const changes = new Counter({
    name: 'cinegraph_prediction_changes_total',
    help: 'Visible prediction changes written and published, by the status they left the prediction in',
    labelNames: ['status'],
    registers: [registry],
  });
  const deliverySeconds = new Histogram({
    name: 'cinegraph_event_delivery_seconds',
    help: 'From the start of writing a visible change to its publication to every in-process subscriber',
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1],
    registers: [registry],
  });

  const earlyAnswers = new Counter({
    name: 'cinegraph_response_cache_early_answers_total',
    help: 'prediction(id) answers written from the response cache by the HTTP layer, without going through yoga',
    registers: [registry],
  });

  const earlyExecutions = new Counter({
    name: 'cinegraph_early_executions_total',
    help: 'Operations executed by the HTTP layer outside yoga\'s pipeline, by outcome: answered there, or handed to yoga to answer (errors)',
    labelNames: ['outcome'],
    registers: [registry],
  });

  const tokenDigest = token === undefined ? undefined : digest(`Bearer ${token}`);
  /** METRICS_TOKEN, any live key, or open mode (which listens on loopback only). */
  const allowed = (authorization: string | undefined) =>
    (tokenDigest !== undefined && authorization !== undefined && timingSafeEqual(digest(authorization.trim()), tokenDigest)) ||
    authenticated(authorization);

  return {
    registry,
    observeUpstream({ endpoint, durationMs, error }) {
      const labels = { endpoint, outcome: upstreamOutcome(error) };
      upstreamRequests.inc(labels);
      upstreamSeconds.observe(labels, durationMs / 1000);
    },
    earlyAnswered: () => earlyAnswers.inc(),
    earlyExecuted: (outcome) => earlyExecutions.inc({ outcome }),
    observeRecorder(recorder) {
      // The recorder's other methods are inherited as they are, whatever it grows.
      const observed: Recorder = Object.create(recorder);
      observed.record = async (id, patch) => {
        const started = performance.now();
        const row = await recorder.record(id, patch);
        if (row) {
          deliverySeconds.observe((performance.now() - started) / 1000);
          changes.inc({ status: row.status });
        }
        return row;
      };
      return observed;
    },
    async handle(req, res) {
      req.resume();
      if (req.method !== 'GET' && req.method !== 'HEAD') {
        res.writeHead(405, { allow: 'GET, HEAD' }).end();
        return;
      }
      if (!allowed(req.headers.authorization)) {
        refuse(res, 401, 'UNAUTHENTICATED', `${UNAUTHENTICATED_MESSAGE} (or the METRICS_TOKEN)`, { 'www-authenticate': 'Bearer' });
        return;
      }
      dueNow = undefined; // one due query per scrape, shared by its two gauges
      const body = await registry.metrics();
      res.writeHead(200, { 'content-type': registry.contentType, 'cache-control': 'no-store' });
      res.end(req.method === 'HEAD' ? undefined : body);
    },
  };
}
