import { join } from 'node:path';
import { Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { ConfigError, loadConfig } from '../src/config.js';
import { openDatabase } from '../src/db/client.js';
import { PredictionStore } from '../src/db/predictions.js';
import { predictionStatuses } from '../src/db/schema.js';
import { createMetrics, upstreamOutcome } from '../src/server/metrics.js';
import { UpstreamError, upstreamEndpoint } from '../src/upstream/wavespeed.js';
import { fastEnv, startApp, tempDir, waitFor, type TestApp } from './helpers/app.js';
import { onDispose } from './helpers/dispose.js';
import { wsClient, wsSubscribe } from './helpers/clients.js';
import { parsePrometheus, sampleValue, sampleValueOr0 } from './helpers/prometheus.js';

const contentType = new Registry().contentType;

async function scrape(url: string, headers: Record<string, string> = {}) {
  const res = await fetch(`${url}/metrics`, { headers });
  expect(res.status).toBe(200);
  expect(res.headers.get('content-type')).toBe(contentType);
  return parsePrometheus(await res.text());
}

const faults = (t: TestApp, body: Record<string, number>) =>
  fetch(`${t.url}/sandbox/_control/faults`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) }).then((r) =>
    expect(r.status).toBe(200),
  );

const create = async (t: TestApp, prompt: string) => {
  const { body } = await t.gql<{ createVideo: { id: string } }>('mutation ($p: String!) { createVideo(input: { prompt: $p }) { id } }', { p: prompt });
  return body.data?.createVideo.id ?? expect.fail(JSON.stringify(body));
};

describe('/metrics', () => {
  it('follows predictions, sockets, subscriptions, upstream requests and event delivery in a real run', async () => {
    // 3 s tasks: the completing one must be polled while PROCESSING (80% of a task) on a loaded machine too.
    const t = await startApp({ SANDBOX_TASK_SECONDS: '3' });
    const before = await scrape(t.url);
    for (const status of predictionStatuses) expect(sampleValue(before, 'cinegraph_predictions', { status })).toBe(0);
    expect(sampleValue(before, 'cinegraph_subscriptions')).toBe(0);
    expect(sampleValue(before, 'cinegraph_open_connections')).toBe(0);
    expect(before.get('process_cpu_seconds_total')?.type).toBe('counter');

    // A task that never finishes holds its subscription (and socket) open.
    await faults(t, { hangRate: 1 });
    const hanging = await create(t, 'a clock that never strikes');
    const client = wsClient(t.url);
    const sub = wsSubscribe(client, 'subscription ($id: ID!) { predictionUpdated(id: $id) { status } }', { id: hanging });
    await waitFor(() => sub.values.map((v) => v.predictionUpdated.status), (s) => s.includes('PROCESSING'));
    const open = await scrape(t.url);
    expect(sampleValue(open, 'cinegraph_subscriptions')).toBe(1);
    expect(sampleValue(open, 'cinegraph_open_connections')).toBe(1);
    expect(sampleValue(open, 'cinegraph_predictions', { status: 'PROCESSING' })).toBe(1);
    await client.dispose();
    await waitFor(
      () => scrape(t.url),
      (m) => sampleValue(m, 'cinegraph_subscriptions') === 0 && sampleValue(m, 'cinegraph_open_connections') === 0,
    );

    // One that completes moves the by-status gauge, the change counter and the delivery histogram.
    await faults(t, { hangRate: 0 });
    const done = await create(t, 'a kite over a beach');
    await waitFor(() => t.app.store.findById(done)?.status, (s) => s === 'COMPLETED');
    const after = await scrape(t.url);
    expect(sampleValue(after, 'cinegraph_predictions', { status: 'COMPLETED' })).toBe(1);
    expect(sampleValue(after, 'cinegraph_predictions', { status: 'PROCESSING' })).toBe(1);
    expect(sampleValue(after, 'cinegraph_prediction_changes_total', { status: 'COMPLETED' })).toBe(1);
    // Every change (the submissions, PROCESSING twice, COMPLETED once) timed from write to publish.
    const changes = after.get('cinegraph_prediction_changes_total')?.samples.reduce((sum, s) => sum + s.value, 0);
    expect(sampleValue(after, 'cinegraph_prediction_changes_total', { status: 'PROCESSING' })).toBe(2);
    expect(sampleValue(after, 'cinegraph_event_delivery_seconds_count')).toBe(changes);
    expect(sampleValue(after, 'cinegraph_event_delivery_seconds_bucket', { le: '+Inf' })).toBe(sampleValue(after, 'cinegraph_event_delivery_seconds_count'));
    expect(sampleValue(after, 'cinegraph_upstream_requests_total', { endpoint: 'submit', outcome: 'ok' })).toBe(2);
    const polls = sampleValue(after, 'cinegraph_upstream_requests_total', { endpoint: 'result', outcome: 'ok' });
    expect(polls).toBeGreaterThanOrEqual(2);
    expect(sampleValue(after, 'cinegraph_upstream_request_duration_seconds_count', { endpoint: 'result', outcome: 'ok' })).toBe(polls);
    // The queue gauges are exported by the real server (one unlabelled sample each); their values
    // are checked exactly against a known set of rows in "measures the poller queue depth and lag" below.
    for (const name of ['cinegraph_poller_due_predictions', 'cinegraph_poller_lag_seconds']) {
      expect(after.get(name)?.samples.map((s) => s.labels), name).toEqual([{}]);
    }

    // Upstream answering 500 shows as its own outcome.
    await faults(t, { serverErrorRate: 1 });
    await create(t, 'into a wall of errors');
    await waitFor(
      () => scrape(t.url),
      (m) => sampleValueOr0(m, 'cinegraph_upstream_requests_total', { endpoint: 'submit', outcome: 'server_error' }) >= 1,
    );
    await faults(t, { serverErrorRate: 0 });
  });

  it('measures the poller queue depth and lag from nextPollAt, on a real database', async () => {
    const db = openDatabase(join(tempDir(), 'metrics.sqlite'));
    onDispose(() => db.$client.close());
    const store = new PredictionStore(db);
    const now = new Date('2026-01-01T12:00:00Z');
    const at = (offsetMs: number | null) => (offsetMs === null ? null : new Date(now.getTime() + offsetMs));
    const rows: [string, (typeof predictionStatuses)[number], number | null][] = [
      ['late-5s', 'PROCESSING', -5000],
      ['late-2s', 'CREATED', -2000],
      ['due-now', 'PROCESSING', 0],
      ['later', 'PROCESSING', 10_000],
      ['finished', 'COMPLETED', null],
    ];
    for (const [id, status, offset] of rows) {
      store.insert({ id, model: 'minimax/video-01', status: 'CREATED', prompt: id, image: null, hasImage: false, enablePromptExpansion: true, createdAt: now, updatedAt: now, nextPollAt: now });
      store.update(id, { status, nextPollAt: at(offset) }, now);
    }
    const metrics = createMetrics({ db, now: () => now, connections: () => 3, subscriptions: () => 7, authenticated: () => true });
    const m = parsePrometheus(await metrics.registry.metrics());
    expect(sampleValue(m, 'cinegraph_poller_due_predictions')).toBe(3);
    expect(sampleValue(m, 'cinegraph_poller_lag_seconds')).toBe(5);
    expect(sampleValue(m, 'cinegraph_predictions', { status: 'PROCESSING' })).toBe(3);
    expect(sampleValue(m, 'cinegraph_predictions', { status: 'CREATED' })).toBe(1);
    expect(sampleValue(m, 'cinegraph_predictions', { status: 'COMPLETED' })).toBe(1);
    expect(sampleValue(m, 'cinegraph_predictions', { status: 'FAILED' })).toBe(0);
    expect(sampleValue(m, 'cinegraph_open_connections')).toBe(3);
    expect(sampleValue(m, 'cinegraph_subscriptions')).toBe(7);
    // Nothing due: no lag.
    const quiet = createMetrics({ db, now: () => new Date(now.getTime() - 60_000), connections: () => 0, subscriptions: () => 0, authenticated: () => true });
    const q = parsePrometheus(await quiet.registry.metrics());
    expect(sampleValue(q, 'cinegraph_poller_due_predictions')).toBe(0);
    expect(sampleValue(q, 'cinegraph_poller_lag_seconds')).toBe(0);
  });

  it('labels upstream requests by endpoint and outcome, never by id', () => {
    expect(upstreamEndpoint('/api/v3/minimax/video-01?webhook=https%3A%2F%2Fx')).toBe('submit');
    expect(upstreamEndpoint('/api/v3/predictions/abc-123/result')).toBe('result');
    expect(upstreamEndpoint('/api/v3/predictions')).toBe('list');
    expect(upstreamEndpoint('/api/v3/predictions/delete')).toBe('delete');
    expect(upstreamEndpoint('/api/v3/media/upload/binary')).toBe('upload');
    expect(upstreamEndpoint('/api/v3/somewhere/else')).toBe('other');
    expect(upstreamOutcome(undefined)).toBe('ok');
    expect(upstreamOutcome(new UpstreamError('http', 'x', 429))).toBe('rate_limited');
    expect(upstreamOutcome(new UpstreamError('http', 'x', 503))).toBe('server_error');
    expect(upstreamOutcome(new UpstreamError('http', 'x', 401))).toBe('client_error');
    expect(upstreamOutcome(new UpstreamError('timeout', 'x'))).toBe('timeout');
    expect(upstreamOutcome(new UpstreamError('network', 'x'))).toBe('network');
    expect(upstreamOutcome(new UpstreamError('protocol', 'x'))).toBe('protocol');
    expect(upstreamOutcome(new Error('bug'))).toBe('error');
  });

  it('is open on loopback in open mode; once keys exist, needs a live key or METRICS_TOKEN', async () => {
    const token = 'scraper-token-0123456789';
    const t = await startApp({ METRICS_TOKEN: token });
    await scrape(t.url);
    const { key } = t.app.keys.create('ops');
    const get = (headers: Record<string, string> = {}, method = 'GET') => fetch(`${t.url}/metrics`, { method, headers });

    const none = await get();
    expect(none.status).toBe(401);
    expect(none.headers.get('www-authenticate')).toBe('Bearer');
    expect((await none.json()).errors[0].extensions.code).toBe('UNAUTHENTICATED');
    expect((await get({ authorization: 'Bearer cg_made-up' })).status).toBe(401);
    expect((await get({ authorization: `Bearer ${token.slice(0, -1)}x` })).status).toBe(401);
    expect((await get({ authorization: token })).status).toBe(401); // the scheme is part of it
    await scrape(t.url, { authorization: `Bearer ${key}` });
    await scrape(t.url, { authorization: `Bearer ${token}` });
    t.app.keys.revoke('ops');
    expect((await get({ authorization: `Bearer ${key}` })).status).toBe(401);
    await scrape(t.url, { authorization: `Bearer ${token}` });

    // Browsers from other origins are refused like on every route; only GET and HEAD are served.
    const foreign = await get({ authorization: `Bearer ${token}`, origin: 'https://evil.example' });
    expect(foreign.status).toBe(403);
    expect((await foreign.json()).errors[0].extensions.code).toBe('FORBIDDEN_ORIGIN');
    expect((await get({ authorization: `Bearer ${token}` }, 'POST')).status).toBe(405);
    const head = await get({ authorization: `Bearer ${token}` }, 'HEAD');
    expect(head.status).toBe(200);
    expect(await head.text()).toBe('');
  });

  it('refuses a METRICS_TOKEN too short to be a secret', () => {
    expect(() => loadConfig({ ...fastEnv, METRICS_TOKEN: 'short' })).toThrow(ConfigError);
    expect(() => loadConfig({ ...fastEnv, METRICS_TOKEN: 'short' })).toThrow(/METRICS_TOKEN: must be at least 16 characters/);
    expect(loadConfig({ ...fastEnv, METRICS_TOKEN: ' 0123456789abcdef ' }).metricsToken).toBe('0123456789abcdef');
  });
});
