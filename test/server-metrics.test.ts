import { request } from 'node:http';
import { describe, expect, test } from 'vitest';
import { UNAUTHENTICATED_MESSAGE } from '../src/auth/principal.js';
import { openDatabase } from '../src/db/client.js';
import { predictions, type PredictionRow } from '../src/db/schema.js';
import type { Recorder } from '../src/poller/record.js';
import { createMetrics, upstreamOutcome } from '../src/server/metrics.js';
import { UpstreamError } from '../src/upstream/wavespeed.js';
import { listen } from './helpers/listen.js';
import { must } from './helpers/must.js';

/**
 * createMetrics over an in-memory SQLite database with known rows, scraped through its handler on
 * a loopback port: names, labels and values after known events, and who may scrape.
 */

const NOW = new Date('2026-11-29T12:00:00.000Z');

function rig(opts: { token?: string; authenticated?: (a: string | undefined) => boolean } = {}) {
  const db = openDatabase(':memory:');
  const authHeaders: (string | undefined)[] = [];
  let open = { connections: 3, subscriptions: 7 };
  const metrics = createMetrics({
    db,
    now: () => NOW,
    connections: () => open.connections,
    subscriptions: () => open.subscriptions,
    authenticated: (a) => {
      authHeaders.push(a);
      return opts.authenticated ? opts.authenticated(a) : false;
    },
    token: opts.token,
  });
  let n = 0;
  const insert = (status: PredictionRow['status'], nextPollAt: Date | null) =>
    db
      .insert(predictions)
      .values({ id: `p${++n}`, model: 'm', status, prompt: 'x', hasImage: false, enablePromptExpansion: false, createdAt: NOW, updatedAt: NOW, nextPollAt })
      .run();
  return {
    metrics,
    insert,
    authHeaders,
    setOpen: (o: typeof open) => (open = o),
  };
}

async function scrape(handle: ReturnType<typeof createMetrics>['handle'], opts: { method?: string; authorization?: string } = {}) {
  const url = await listen((req, res) => void handle(req, res));
  const { port } = new URL(url);
  return new Promise<{ status: number; headers: Record<string, unknown>; body: string }>((resolve, reject) => {
    const req = request(
      { host: '127.0.0.1', port, path: '/metrics', method: opts.method ?? 'GET', headers: opts.authorization === undefined ? {} : { authorization: opts.authorization } },
      (res) => {
        let body = '';
        res.on('data', (d) => (body += d));
        res.on('end', () => resolve({ status: must(res.statusCode), headers: res.headers, body }));
      },
    );
    req.on('error', reject);
    req.end();
  });
}

/** The value of one sample line, e.g. `cinegraph_predictions{status="CREATED"}`. */
function sample(body: string, name: string): number | undefined {
  const line = body.split('\n').find((l) => l.startsWith(`${name} `));
  return line === undefined ? undefined : Number(line.slice(name.length + 1));
}

describe('upstreamOutcome', () => {
  test.each([
    [undefined, 'ok'],
    [new Error('x'), 'error'],
    ['a string', 'error'],
    [new UpstreamError('network', 'x'), 'network'],
    [new UpstreamError('timeout', 'x'), 'timeout'],
    [new UpstreamError('protocol', 'x'), 'protocol'],
    [new UpstreamError('http', 'x', 429), 'rate_limited'],
    [new UpstreamError('http', 'x', 500), 'server_error'],
    [new UpstreamError('http', 'x', 503), 'server_error'],
    [new UpstreamError('http', 'x', 499), 'client_error'],
    [new UpstreamError('http', 'x', 404), 'client_error'],
    [new UpstreamError('http', 'x'), 'client_error'],
  ])('%s → %s', (error, outcome) => {
    expect(upstreamOutcome(error)).toBe(outcome);
  });
});

describe('metrics', () => {
  test('stored state: predictions by status (every status, 0 when none), due predictions and the lag of the oldest', async () => {
    const r = rig({ authenticated: () => true });
    r.insert('CREATED', new Date(NOW.getTime() - 90_000));
    r.insert('CREATED', new Date(NOW.getTime() - 2_500));
    r.insert('PROCESSING', NOW);
    r.insert('PROCESSING', new Date(NOW.getTime() + 1));
    r.insert('COMPLETED', null);
    const res = await scrape(r.metrics.handle);
    expect(res.status).toBe(200);
    expect(res.headers['content-type']).toBe(r.metrics.registry.contentType);
    expect(res.headers['cache-control']).toBe('no-store');
    const b = res.body;
    expect(
      Object.fromEntries(['CREATED', 'PROCESSING', 'COMPLETED', 'FAILED', 'CANCELED'].map((s) => [s, sample(b, `cinegraph_predictions{status="${s}"}`)])),
    ).toEqual({ CREATED: 2, PROCESSING: 2, COMPLETED: 1, FAILED: 0, CANCELED: 0 });
    expect(b).toContain('# HELP cinegraph_predictions Predictions in the database, by status');
    expect(sample(b, 'cinegraph_poller_due_predictions')).toBe(3);
    expect(sample(b, 'cinegraph_poller_lag_seconds')).toBe(90);
    expect(sample(b, 'cinegraph_open_connections')).toBe(3);
    expect(sample(b, 'cinegraph_subscriptions')).toBe(7);
    // Default process metrics are there too.
    expect(b).toMatch(/^process_cpu_user_seconds_total /m);
  });

  test('each scrape reads the state afresh; none due is a lag of 0', async () => {
    const r = rig({ authenticated: () => true });
    const empty = (await scrape(r.metrics.handle)).body;
    expect(sample(empty, 'cinegraph_poller_due_predictions')).toBe(0);
    expect(sample(empty, 'cinegraph_poller_lag_seconds')).toBe(0);
    expect(sample(empty, 'cinegraph_predictions{status="CREATED"}')).toBe(0);
    r.insert('CREATED', new Date(NOW.getTime() - 1_500));
    r.setOpen({ connections: 0, subscriptions: 1 });
    const next = (await scrape(r.metrics.handle)).body;
    expect(sample(next, 'cinegraph_poller_due_predictions')).toBe(1);
    expect(sample(next, 'cinegraph_poller_lag_seconds')).toBe(1.5);
    expect(sample(next, 'cinegraph_predictions{status="CREATED"}')).toBe(1);
    expect(sample(next, 'cinegraph_open_connections')).toBe(0);
    expect(sample(next, 'cinegraph_subscriptions')).toBe(1);
  });

  test('upstream requests are counted and timed by endpoint and outcome', async () => {
    const r = rig({ authenticated: () => true });
    r.metrics.observeUpstream({ endpoint: 'submit', durationMs: 20, error: undefined } as never);
    r.metrics.observeUpstream({ endpoint: 'submit', durationMs: 300, error: undefined } as never);
    r.metrics.observeUpstream({ endpoint: 'result', durationMs: 1200, error: new UpstreamError('http', 'x', 429) } as never);
    const b = (await scrape(r.metrics.handle)).body;
    expect(sample(b, 'cinegraph_upstream_requests_total{endpoint="submit",outcome="ok"}')).toBe(2);
    expect(sample(b, 'cinegraph_upstream_requests_total{endpoint="result",outcome="rate_limited"}')).toBe(1);
    expect(sample(b, 'cinegraph_upstream_request_duration_seconds_sum{endpoint="submit",outcome="ok"}')).toBeCloseTo(0.32, 10);
    expect(sample(b, 'cinegraph_upstream_request_duration_seconds_count{endpoint="submit",outcome="ok"}')).toBe(2);
    expect(sample(b, 'cinegraph_upstream_request_duration_seconds_bucket{le="0.025",endpoint="submit",outcome="ok"}')).toBe(1);
    expect(sample(b, 'cinegraph_upstream_request_duration_seconds_bucket{le="0.25",endpoint="submit",outcome="ok"}')).toBe(1);
    expect(sample(b, 'cinegraph_upstream_request_duration_seconds_bucket{le="0.5",endpoint="submit",outcome="ok"}')).toBe(2);
    expect(sample(b, 'cinegraph_upstream_request_duration_seconds_bucket{le="1",endpoint="result",outcome="rate_limited"}')).toBe(0);
    expect(sample(b, 'cinegraph_upstream_request_duration_seconds_bucket{le="2.5",endpoint="result",outcome="rate_limited"}')).toBe(1);
    const les = [...b.matchAll(/cinegraph_upstream_request_duration_seconds_bucket\{le="([^"]+)",endpoint="submit"/g)].map((m) => m[1]);
    expect(les).toEqual(['0.025', '0.05', '0.1', '0.25', '0.5', '1', '2.5', '5', '10', '15', '30', '+Inf']);
  });

  test('a recorded visible change is counted by its status and its delivery timed; a write that found no row is not', async () => {
    const r = rig({ authenticated: () => true });
    const rows: Record<string, PredictionRow | undefined> = { a: { status: 'COMPLETED' } as PredictionRow, b: undefined };
    const base = {
      record: async (id: string) => rows[id],
      other: () => 'inherited',
    };
    const observed = r.metrics.observeRecorder(base as unknown as Recorder);
    expect(await observed.record('a', {} as never)).toBe(rows.a);
    expect(await observed.record('b', {} as never)).toBeUndefined();
    expect((observed as unknown as typeof base).other()).toBe('inherited');
    const b = (await scrape(r.metrics.handle)).body;
    expect(sample(b, 'cinegraph_prediction_changes_total{status="COMPLETED"}')).toBe(1);
    expect(b).not.toContain('cinegraph_prediction_changes_total{status="undefined"}');
    expect(sample(b, 'cinegraph_event_delivery_seconds_count')).toBe(1);
    expect(sample(b, 'cinegraph_event_delivery_seconds_bucket{le="1"}')).toBe(1);
    const les = [...b.matchAll(/cinegraph_event_delivery_seconds_bucket\{le="([^"]+)"\}/g)].map((m) => m[1]);
    expect(les).toEqual(['0.0005', '0.001', '0.0025', '0.005', '0.01', '0.025', '0.05', '0.1', '0.25', '1', '+Inf']);
    expect(b).toContain('# HELP cinegraph_prediction_changes_total Visible prediction changes written and published, by the status they left the prediction in');
  });

  test('a scraper needs METRICS_TOKEN or a live key: 401 otherwise, with a Bearer challenge', async () => {
    const r = rig({ token: 'scrape-me' });
    const refused = await scrape(r.metrics.handle);
    expect(refused.status).toBe(401);
    expect(refused.headers['www-authenticate']).toBe('Bearer');
    expect(JSON.parse(refused.body)).toEqual({ errors: [{ message: `${UNAUTHENTICATED_MESSAGE} (or the METRICS_TOKEN)`, extensions: { code: 'UNAUTHENTICATED' } }] });
    expect((await scrape(r.metrics.handle, { authorization: 'Bearer scrape-me' })).status).toBe(200);
    expect((await scrape(r.metrics.handle, { authorization: 'Bearer scrape-me  ' })).status).toBe(200);
    for (const authorization of ['Bearer scrape-m', 'Bearer scrape-me2', 'scrape-me', 'Bearer  scrape-me']) {
      expect((await scrape(r.metrics.handle, { authorization })).status, authorization).toBe(401);
    }
    // The key check is asked with the header as sent.
    expect(r.authHeaders).toContain('Bearer scrape-m');
    expect(r.authHeaders).toContain(undefined);
    // Without a token only the key check decides.
    const keyed = rig({ authenticated: (a) => a === 'Bearer live-key' });
    expect((await scrape(keyed.metrics.handle, { authorization: 'Bearer live-key' })).status).toBe(200);
    expect((await scrape(keyed.metrics.handle, { authorization: 'Bearer scrape-me' })).status).toBe(401);
    expect((await scrape(keyed.metrics.handle)).status).toBe(401);
    // No METRICS_TOKEN is not a token "undefined".
    expect((await scrape(keyed.metrics.handle, { authorization: 'Bearer undefined' })).status).toBe(401);
  });

  test('HEAD is answered without a body; other methods are 405 with Allow', async () => {
    const r = rig({ authenticated: () => true });
    const head = await scrape(r.metrics.handle, { method: 'HEAD' });
    expect([head.status, head.body, head.headers['content-type'], head.headers['cache-control']]).toEqual([200, '', r.metrics.registry.contentType, 'no-store']);
    for (const method of ['POST', 'DELETE']) {
      const res = await scrape(r.metrics.handle, { method });
      expect([res.status, res.headers.allow, res.body]).toEqual([405, 'GET, HEAD', '']);
    }
    expect(r.authHeaders).toEqual([undefined]);
  });
});
