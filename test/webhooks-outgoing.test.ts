import { statSync } from 'node:fs';
import type { IncomingHttpHeaders, ServerResponse } from 'node:http';
import { join } from 'node:path';
import { Webhook } from 'standardwebhooks';
import { describe, expect, test } from 'vitest';
import type { ResolveHost } from '../src/validation/address.js';
import { MAX_GAP_MS, nextAttemptAt, RETRY_WINDOW_MS, retryGapMs } from '../src/webhooks/dispatcher.js';
import { generateSigningSecret } from '../src/webhooks/secrets.js';
import { buildApp } from '../src/app.js';
import { loadConfig } from '../src/config.js';
import { fastEnv, postGraphql, startApp, tempDir, waitFor, type TestApp } from './helpers/app.js';
import { bearer, cli } from './helpers/keys.js';
import { listen } from './helpers/listen.js';
import { must } from './helpers/must.js';
import { freePort, spawnServer } from './helpers/process.js';

const CREATE = `mutation($input: CreateVideoInput!) { createVideo(input: $input) { id } }`;
const DELIVERIES = `query($id: ID!) { prediction(id: $id) { status updatedAt webhookDeliveries { id webhookId event url attemptedAt statusCode latencyMs error succeeded redelivery } } }`;
const REDELIVER = `mutation($id: ID!) { redeliverWebhook(deliveryId: $id) { id webhookId event statusCode succeeded redelivery error } }`;

interface Received {
  headers: IncomingHttpHeaders;
  body: string;
}

/** A loopback receiver that records every POST and answers `status(n)` to the n-th (1-based). */
async function receiver(status: (n: number) => number = () => 204) {
  const got: Received[] = [];
  const url = await listen((req, res) => {
    let body = '';
    req.on('data', (d) => (body += d));
    req.on('end', () => {
      got.push({ headers: req.headers, body });
      res.writeHead(status(got.length)).end();
    });
  });
  return { url: `${url}/hooks/cinegraph?tenant=7`, got };
}

/** Verifies a received delivery with the `standardwebhooks` package, as a client would; throws if it does not verify. */
function verify(secret: string, r: Received): { type: string; timestamp: string; data: Record<string, unknown> } {
  return new Webhook(secret).verify(r.body, {
    'webhook-id': String(r.headers['webhook-id']),
    'webhook-timestamp': String(r.headers['webhook-timestamp']),
    'webhook-signature': String(r.headers['webhook-signature']),
  }) as { type: string; timestamp: string; data: Record<string, unknown> };
}

const delivered = (t: TestApp) => new Promise((resolve) => t.app.webhooks.dispatcher.once('delivered', resolve));
const rows = (t: TestApp, table: string) => (t.app.db.$client.prepare(`SELECT count(*) AS n FROM ${table}`).get() as { n: number }).n;

describe('outgoing webhooks: Standard Webhooks to the client', () => {
  test('open mode: the final status arrives at a loopback receiver, signed with the secret `cinegraph webhook-secret` prints', async () => {
    const t = await startApp({ WEBHOOK_ALLOW_PRIVATE: 'true', SANDBOX_TASK_SECONDS: '0.3' });
    const r = await receiver();
    const arrived = delivered(t);
    const { id } = (await t.gql(CREATE, { input: { prompt: 'a lighthouse', webhookUrl: r.url } })).body.data.createVideo;
    await arrived;
    expect(r.got).toHaveLength(1); // the default events are the final ones: no CREATED, no PROCESSING
    const printed = await cli(t.dataDir, ['webhook-secret']);
    expect(printed.code).toBe(0);
    const secret = printed.stdout.trim();
    expect(secret).toMatch(/^whsec_[A-Za-z0-9+/]{43}=$/);
    expect(statSync(join(t.dataDir, 'webhook-secret')).mode & 0o777).toBe(0o600);
    const msg = must(r.got[0]);
    const payload = verify(secret, msg);
    expect(payload).toMatchObject({ type: 'prediction.completed', data: { id, status: 'COMPLETED', input: { prompt: 'a lighthouse', hasImage: false } } });
    expect(payload.data.keptOutputs).toEqual([expect.stringMatching(new RegExp(`^${t.url}/media/[0-9a-f]{64}\\.mp4$`))]);
    expect(msg.headers['content-type']).toBe('application/json');
    expect(msg.headers['webhook-id']).toMatch(/^msg_[0-9a-f]{32}$/);
    // Another secret, or a body changed in transit, does not verify.
    expect(() => verify(generateSigningSecret(), msg)).toThrow();
    expect(() => verify(secret, { ...msg, body: msg.body.replace('COMPLETED', 'FAILED') })).toThrow();

    const p = (await t.gql(DELIVERIES, { id })).body.data.prediction;
    expect(p.webhookDeliveries).toEqual([
      {
        id: expect.any(String),
        webhookId: msg.headers['webhook-id'],
        event: 'COMPLETED',
        url: r.url,
        attemptedAt: expect.any(String),
        statusCode: 204,
        latencyMs: expect.any(Number),
        error: null,
        succeeded: true,
        redelivery: false,
      },
    ]);
  });

  test('webhookEvents picks the statuses: CREATED, PROCESSING and COMPLETED arrive in order, each with its own id, under WEBHOOK_SIGNING_SECRET', async () => {
    const secret = generateSigningSecret();
    // 3 s tasks: PROCESSING is 80% of a task, and a loaded machine can poll right past a 0.48 s one.
    const t = await startApp({ WEBHOOK_ALLOW_PRIVATE: 'true', WEBHOOK_SIGNING_SECRET: secret, SANDBOX_TASK_SECONDS: '3' });
    const r = await receiver();
    const { id } = (await t.gql(CREATE, { input: { prompt: 'p', webhookUrl: r.url, webhookEvents: ['COMPLETED', 'PROCESSING', 'CREATED', 'COMPLETED'] } })).body.data.createVideo;
    await waitFor(() => r.got.length, (n) => n === 3);
    const payloads = r.got.map((m) => verify(secret, m));
    expect(payloads.map((p) => [p.type, p.data.status, p.data.id])).toEqual([
      ['prediction.created', 'CREATED', id],
      ['prediction.processing', 'PROCESSING', id],
      ['prediction.completed', 'COMPLETED', id],
    ]);
    expect(new Set(r.got.map((m) => m.headers['webhook-id'])).size).toBe(3);
    expect(rows(t, 'webhook_messages')).toBe(3);
  });

  test('a receiver that fails the first 3 attempts gets the 4th, with the same webhook-id; every attempt is listed', async () => {
    const secret = generateSigningSecret();
    // A 300 ms base: each gap also holds a POST's latency, which must stay small beside the schedule's doubling.
    const t = await startApp({ WEBHOOK_ALLOW_PRIVATE: 'true', WEBHOOK_SIGNING_SECRET: secret, WEBHOOK_RETRY_BASE_MS: '300', SANDBOX_TASK_SECONDS: '0.3' });
    const r = await receiver((n) => (n <= 3 ? 503 : 200));
    const arrived = delivered(t);
    const { id } = (await t.gql(CREATE, { input: { prompt: 'p', webhookUrl: r.url } })).body.data.createVideo;
    await arrived;
    expect(r.got).toHaveLength(4);
    expect(new Set(r.got.map((m) => m.headers['webhook-id'])).size).toBe(1);
    for (const m of r.got) expect(verify(secret, m).data).toMatchObject({ id, status: 'COMPLETED' });
    const list = (await t.gql(DELIVERIES, { id })).body.data.prediction.webhookDeliveries;
    expect(list.map((d: { statusCode: number; succeeded: boolean; error: string | null }) => [d.statusCode, d.succeeded, d.error])).toEqual([
      [200, true, null],
      [503, false, 'receiver answered HTTP 503'],
      [503, false, 'receiver answered HTTP 503'],
      [503, false, 'receiver answered HTTP 503'],
    ]);
    // Backoff doubles: the n-th gap is at least base × 2^(n−1) (300, 600, 1200 ms), and the gaps grow
    // as the schedule does (a fixed delay would give three equal gaps; slack for timers and the POST).
    const times = list.map((d: { attemptedAt: string }) => Date.parse(d.attemptedAt)).reverse();
    const gaps = [times[1] - times[0], times[2] - times[1], times[3] - times[2]] as [number, number, number];
    expect(gaps[0]).toBeGreaterThanOrEqual(300);
    expect(gaps[1]).toBeGreaterThanOrEqual(600);
    expect(gaps[2]).toBeGreaterThanOrEqual(1200);
    expect(gaps[2]).toBeGreaterThan(gaps[0] * 2);
    expect(t.app.db.$client.prepare('SELECT attempts, next_attempt_at AS next, delivered_at IS NOT NULL AS done FROM webhook_messages').get()).toEqual({ attempts: 4, next: null, done: 1 });
  });

  test('redeliverWebhook replays one delivery now, same webhook-id and body; unknown, empty, huge or wrong-typed ids are refused and send nothing', async () => {
    const secret = generateSigningSecret();
    const t = await startApp({ WEBHOOK_ALLOW_PRIVATE: 'true', WEBHOOK_SIGNING_SECRET: secret, SANDBOX_TASK_SECONDS: '0.3' });
    const r = await receiver();
    const arrived = delivered(t);
    const { id } = (await t.gql(CREATE, { input: { prompt: 'p', webhookUrl: r.url } })).body.data.createVideo;
    await arrived;
    const [first] = (await t.gql(DELIVERIES, { id })).body.data.prediction.webhookDeliveries;
    const again = await t.gql(REDELIVER, { id: first.id });
    expect(again.body.data.redeliverWebhook).toEqual({ id: expect.any(String), webhookId: first.webhookId, event: 'COMPLETED', statusCode: 204, succeeded: true, redelivery: true, error: null });
    expect(again.body.data.redeliverWebhook.id).not.toBe(first.id);
    expect(r.got).toHaveLength(2);
    expect(r.got[1]?.headers['webhook-id']).toBe(r.got[0]?.headers['webhook-id']);
    expect(r.got[1]?.body).toBe(r.got[0]?.body);
    verify(secret, must(r.got[1]));
    expect((await t.gql(DELIVERIES, { id })).body.data.prediction.webhookDeliveries.map((d: { redelivery: boolean }) => d.redelivery)).toEqual([true, false]);

    const refused = async (variables: Record<string, unknown>, query = REDELIVER) => (await t.gql(query, variables)).body.errors?.[0];
    expect(await refused({ id: 'no-such-delivery' })).toMatchObject({ message: 'no webhook delivery with id "no-such-delivery"', extensions: { code: 'NOT_FOUND', field: 'deliveryId' } });
    expect(await refused({ id: '' })).toMatchObject({ message: 'no webhook delivery with id ""', extensions: { code: 'NOT_FOUND' } });
    const huge = await refused({ id: 'x'.repeat(100_000) });
    expect(huge).toMatchObject({ extensions: { code: 'NOT_FOUND' } });
    expect(huge?.message.length).toBeLessThan(200);
    expect(await refused({ id: { deliveryId: first.id } })).toMatchObject({ extensions: { code: 'BAD_USER_INPUT' }, message: expect.stringContaining('ID cannot represent value') });
    expect(await refused({}, 'mutation { redeliverWebhook { id } }')).toMatchObject({ extensions: { code: 'GRAPHQL_VALIDATION_FAILED' }, message: expect.stringContaining('"deliveryId" of type "ID!" is required') });
    expect(await refused({ id: null })).toMatchObject({ extensions: { code: 'BAD_USER_INPUT' } });
    expect(r.got).toHaveLength(2);
    expect(rows(t, 'webhook_attempts')).toBe(2);
  });

  test('keys: `keys create` prints the secret before the key, the key signs its own webhooks, rotation replaces the secret, and another key cannot see or replay them', async () => {
    const dataDir = tempDir();
    const created = await cli(dataDir, ['keys', 'create', '--name', 'alice']);
    expect(created.code).toBe(0);
    const lines = created.stdout.trimEnd().split('\n');
    const key = must(lines.at(-1));
    expect(key).toMatch(/^cg_[\w-]{43}$/);
    const secretLines = lines.filter((l) => l.startsWith('whsec_'));
    expect(secretLines).toHaveLength(1);
    const secret = must(secretLines[0]);
    expect(secret).toMatch(/^whsec_[A-Za-z0-9+/]{43}=$/);
    expect(lines.indexOf(secret)).toBeLessThan(lines.length - 1);
    const bob = must((await cli(dataDir, ['keys', 'create', '--name', 'bob'])).stdout.trimEnd().split('\n').at(-1));

    const t = await startApp({ DATA_DIR: dataDir, WEBHOOK_ALLOW_PRIVATE: 'true', SANDBOX_TASK_SECONDS: '0.3' });
    const gql = (k: string, query: string, variables: Record<string, unknown>) => postGraphql(t.url, query, variables, bearer(k));
    const r = await receiver();
    let arrived = delivered(t);
    const { id } = (await gql(key, CREATE, { input: { prompt: 'p', webhookUrl: r.url } })).body.data.createVideo;
    await arrived;
    expect(verify(secret, must(r.got[0])).data).toMatchObject({ id });

    // Bob sees neither the prediction nor its deliveries, and cannot replay one.
    const [delivery] = (await gql(key, DELIVERIES, { id })).body.data.prediction.webhookDeliveries;
    expect((await gql(bob, DELIVERIES, { id })).body.data.prediction).toBeNull();
    const stolen = await gql(bob, REDELIVER, { id: delivery.id });
    expect(stolen.body.errors?.[0]).toMatchObject({ message: `no webhook delivery with id "${delivery.id}"`, extensions: { code: 'NOT_FOUND' } });
    expect(r.got).toHaveLength(1);

    const rotated = await cli(dataDir, ['keys', 'rotate-webhook-secret', 'alice']);
    expect(rotated.code).toBe(0);
    const fresh = must(rotated.stdout.trimEnd().split('\n').at(-1));
    expect(fresh).toMatch(/^whsec_/);
    expect(fresh).not.toBe(secret);
    arrived = delivered(t);
    await gql(key, CREATE, { input: { prompt: 'p', webhookUrl: r.url } });
    await arrived;
    expect(verify(fresh, must(r.got[1])).data.status).toBe('COMPLETED');
    expect(() => verify(secret, must(r.got[1]))).toThrow();

    const unknown = await cli(dataDir, ['keys', 'rotate-webhook-secret', 'nobody']);
    expect(unknown.code).toBe(1);
    expect(unknown.stderr).toContain('no live key named "nobody"');
    const unnamed = await cli(dataDir, ['keys', 'rotate-webhook-secret']);
    expect(unnamed.code).toBe(2);
    expect(unnamed.stderr).toContain("missing required argument 'name'");
    expect(unknown.stdout + unnamed.stdout).not.toContain('whsec_');

    // A key from before webhooks (no secret) is told how to get one; nothing is created.
    t.app.db.$client.prepare('UPDATE api_keys SET webhook_secret = NULL WHERE name = ?').run('bob');
    const before = t.app.store.count();
    const noSecret = await gql(bob, CREATE, { input: { prompt: 'p', webhookUrl: r.url } });
    expect(noSecret.body.errors?.[0]).toMatchObject({ extensions: { code: 'WEBHOOK_SECRET_MISSING', field: 'input.webhookUrl' }, message: expect.stringContaining('cinegraph keys rotate-webhook-secret') });
    expect(t.app.store.count()).toBe(before);
  });
});

describe('outgoing webhooks: the retry schedule', () => {
  const HOUR = 3_600_000;

  test.each([
    // base, failed attempts so far, pause before the next attempt
    [50, 1, 50],
    [50, 2, 100],
    [50, 3, 200],
    [50, 4, 400],
    [1000, 1, 1000],
    [1000, 5, 16_000],
    [1000, 12, 2_048_000],
    [1000, 13, HOUR], // 4,096,000 would pass the hour: capped
    [1000, 40, HOUR],
    [HOUR, 1, HOUR],
    [2 * HOUR, 1, HOUR],
  ])('base %i ms, after %i failures: %i ms', (base, attempts, gap) => {
    expect(retryGapMs(base, attempts)).toBe(gap);
  });

  test('the gap is capped at one hour', () => {
    expect(MAX_GAP_MS).toBe(HOUR);
  });

  test('the next attempt is the gap after the failure, until that would be more than 24 h after the event', () => {
    expect(RETRY_WINDOW_MS).toBe(24 * HOUR);
    const created = new Date('2026-01-01T00:00:00Z');
    const at = (msAfterEvent: number, attempts: number, base = 1000) => nextAttemptAt(base, attempts, new Date(created.getTime() + msAfterEvent), created)?.toISOString() ?? null;
    expect(at(0, 1)).toBe('2026-01-01T00:00:01.000Z');
    expect(at(10_000, 3)).toBe('2026-01-01T00:00:14.000Z');
    expect(at(5 * HOUR, 20)).toBe('2026-01-01T06:00:00.000Z');
    // Exactly at the end of the window is still tried; a millisecond later is not.
    expect(at(23 * HOUR, 20)).toBe('2026-01-02T00:00:00.000Z');
    expect(at(23 * HOUR + 1, 20)).toBeNull();
    expect(at(24 * HOUR - 1000, 1)).toBe('2026-01-02T00:00:00.000Z');
    expect(at(24 * HOUR - 999, 1)).toBeNull();
  });

  test('a receiver that always fails is tried 35 times over the 24 h with base 1 s (doubling to the hourly cap), then given up', () => {
    const created = new Date(0);
    let now = 0;
    const pauses: number[] = [];
    for (let attempts = 1; ; attempts++) {
      const next = nextAttemptAt(1000, attempts, new Date(now), created);
      if (next === null) break;
      pauses.push(next.getTime() - now);
      now = next.getTime();
    }
    expect(pauses.slice(0, 13)).toEqual([1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 3600].map((s) => s * 1000));
    expect(pauses.slice(12).every((p) => p === HOUR)).toBe(true);
    expect(now).toBeLessThanOrEqual(24 * HOUR);
    expect(now + HOUR).toBeGreaterThan(24 * HOUR);
    expect(pauses.length + 1).toBe(35);
  });
});

describe('outgoing webhooks: giving up', () => {
  test('a receiver that never succeeds is given up 24 h after the event, and contacted no more', async () => {
    const t = await startApp({ WEBHOOK_ALLOW_PRIVATE: 'true', WEBHOOK_RETRY_BASE_MS: '50', SANDBOX_TASK_SECONDS: '0.3' });
    const r = await receiver(() => 500);
    const firstFailure = new Promise((resolve) => t.app.webhooks.dispatcher.once('attempted', resolve));
    const { id } = (await t.gql(CREATE, { input: { prompt: 'p', webhookUrl: r.url } })).body.data.createVideo;
    await firstFailure;
    // As if the event were a day old: the next failure is past the retry window.
    t.app.db.$client.prepare('UPDATE webhook_messages SET created_at = created_at - 86400000').run();
    const gaveUp = await new Promise<{ reason: string; predictionId: string }>((resolve) => t.app.webhooks.dispatcher.once('gaveUp', resolve));
    expect(gaveUp).toMatchObject({ predictionId: id, reason: 'no success in 24 h' });
    const attempts = r.got.length;
    expect(t.app.db.$client.prepare('SELECT next_attempt_at AS next, delivered_at AS done FROM webhook_messages').get()).toEqual({ next: null, done: null });
    await t.app.webhooks.dispatcher.stop(); // nothing is due any more: stop returns with nothing sent
    expect(r.got.length).toBe(attempts);
    const list = (await t.gql(DELIVERIES, { id })).body.data.prediction.webhookDeliveries;
    expect(list).toHaveLength(attempts);
    expect(list.every((d: { succeeded: boolean }) => !d.succeeded)).toBe(true);
  });

  test('a host that resolves to a private address by delivery time is refused then, without a connection, and not retried', async () => {
    const dns: Record<string, string[]> = { 'rebind.invalid': ['93.184.216.34'] };
    const t = await startApp({ SANDBOX_TASK_SECONDS: '0.3' }, { resolveHost: async (host) => dns[host] ?? Promise.reject(new Error('no DNS')) });
    const gaveUp = new Promise<{ reason: string }>((resolve) => t.app.webhooks.dispatcher.once('gaveUp', resolve));
    const { id } = (await t.gql(CREATE, { input: { prompt: 'p', webhookUrl: 'http://rebind.invalid/hook' } })).body.data.createVideo;
    dns['rebind.invalid'] = ['127.0.0.1']; // before the prediction completes: the only event is COMPLETED
    expect((await gaveUp).reason).toBe('refused: rebind.invalid points at a non-public address (127.0.0.1)');
    const [attempt] = (await t.gql(DELIVERIES, { id })).body.data.prediction.webhookDeliveries;
    expect(attempt).toMatchObject({ statusCode: null, succeeded: false, error: 'refused: rebind.invalid points at a non-public address (127.0.0.1)' });
  });

  test('webhookDeliveries(first:) outside 1–100 is refused', async () => {
    const t = await startApp({ WEBHOOK_ALLOW_PRIVATE: 'true' });
    const { id } = (await t.gql(CREATE, { input: { prompt: 'p', webhookUrl: 'http://127.0.0.1:9/h' } })).body.data.createVideo;
    for (const first of [0, 101, -1]) {
      const res = await t.gql(`query($id: ID!, $f: Int) { prediction(id: $id) { webhookDeliveries(first: $f) { id } } }`, { id, f: first });
      expect(res.body.errors?.[0]).toMatchObject({ message: 'first must be between 1 and 100', extensions: { code: 'BAD_USER_INPUT', field: 'first' } });
    }
  });
});

describe('outgoing webhooks: refused inputs', () => {
  const dns: Record<string, string[]> = { 'hooks.example': ['10.0.0.7'], 'mixed.example': ['93.184.216.34', '127.0.0.1'], 'v6.example': ['fd00::1'] };
  const resolveHost: ResolveHost = async (host) => dns[host] ?? Promise.reject(new Error(`test: no DNS for ${host}`));

  test.each([
    ['loopback', 'http://127.0.0.1:9/hook', 'WEBHOOK_URL_FORBIDDEN', 'webhookUrl points at a non-public address (127.0.0.1)'],
    ['IPv6 loopback', 'http://[::1]:9/hook', 'WEBHOOK_URL_FORBIDDEN', 'non-public address (::1)'],
    ['cloud metadata', 'http://169.254.169.254/latest/meta-data', 'WEBHOOK_URL_FORBIDDEN', 'non-public address (169.254.169.254)'],
    ['a name on a private network', 'https://hooks.example/h', 'WEBHOOK_URL_FORBIDDEN', 'non-public address (10.0.0.7)'],
    ['a name with one private address among public ones', 'https://mixed.example/h', 'WEBHOOK_URL_FORBIDDEN', 'non-public address (127.0.0.1)'],
    ['a name on a private IPv6 network', 'https://v6.example/h', 'WEBHOOK_URL_FORBIDDEN', 'non-public address (fd00::1)'],
    ['an unresolvable name', 'https://gone.example/h', 'WEBHOOK_URL_UNRESOLVABLE', 'webhookUrl host gone.example could not be resolved: test: no DNS for gone.example'],
    ['empty', '', 'WEBHOOK_URL_INVALID', 'webhookUrl must not be empty'],
    ['blank', '   ', 'WEBHOOK_URL_INVALID', 'webhookUrl must not be empty'],
    ['not a URL', 'hooks.example/h', 'WEBHOOK_URL_INVALID', 'webhookUrl must be an absolute http(s) URL'],
    ['another scheme', 'ftp://hooks.example/h', 'WEBHOOK_URL_INVALID', 'webhookUrl scheme ftp: is not allowed; use http or https'],
    ['credentials', 'https://user:pw@hooks.example/h', 'WEBHOOK_URL_INVALID', 'webhookUrl must not contain credentials'],
    ['huge', `https://hooks.example/${'a'.repeat(3000)}`, 'WEBHOOK_URL_INVALID', 'webhookUrl is longer than 2048 characters'],
  ])('%s is refused at createVideo; nothing is stored or sent', async (_name, webhookUrl, code, message) => {
    const t = await startApp({}, { resolveHost });
    const res = await t.gql(CREATE, { input: { prompt: 'p', webhookUrl } });
    expect(res.body.data?.createVideo ?? null).toBeNull();
    expect(res.body.errors?.[0]).toMatchObject({ extensions: { code, field: 'input.webhookUrl' }, message: expect.stringContaining(message) });
    await t.app.poller.runOnce();
    expect(t.app.store.count()).toBe(0);
    expect(t.app.sandbox?.stats.submissions).toBe(0);
    expect([rows(t, 'prediction_webhooks'), rows(t, 'webhook_messages'), rows(t, 'webhook_attempts')]).toEqual([0, 0, 0]);
  });

  test.each([
    ['no events', { webhookUrl: 'http://127.0.0.1:9/h', webhookEvents: [] }, 'BAD_USER_INPUT', 'webhookEvents must name at least one status'],
    ['events without a URL', { webhookEvents: ['COMPLETED'] }, 'BAD_USER_INPUT', 'webhookEvents needs a webhookUrl'],
    ['an unknown event', { webhookUrl: 'http://127.0.0.1:9/h', webhookEvents: ['DONE'] }, 'BAD_USER_INPUT', 'Value "DONE" does not exist in "PredictionStatus" enum'],
    ['a number for the URL', { webhookUrl: 42 }, 'BAD_USER_INPUT', 'String cannot represent a non string value'],
    ['an object for the events', { webhookUrl: 'http://127.0.0.1:9/h', webhookEvents: { COMPLETED: true } }, 'BAD_USER_INPUT', 'Enum "PredictionStatus" cannot represent non-string value'],
  ])('%s is refused; nothing is stored or sent', async (_name, extra, code, message) => {
    // Private addresses allowed: the refusal is about the events, not the address.
    const t = await startApp({ WEBHOOK_ALLOW_PRIVATE: 'true' }, { resolveHost });
    const res = await t.gql(CREATE, { input: { prompt: 'p', ...extra } });
    expect(res.body.errors?.[0]).toMatchObject({ extensions: { code }, message: expect.stringContaining(message) });
    await t.app.poller.runOnce();
    expect(t.app.store.count()).toBe(0);
    expect(t.app.sandbox?.stats.submissions).toBe(0);
    expect([rows(t, 'prediction_webhooks'), rows(t, 'webhook_messages')]).toEqual([0, 0]);
  });

  test('WEBHOOK_ALLOW_PRIVATE=true accepts the loopback URL that is refused without it', async () => {
    const t = await startApp({ WEBHOOK_ALLOW_PRIVATE: 'true' }, { resolveHost });
    const res = await t.gql(CREATE, { input: { prompt: 'p', webhookUrl: 'http://127.0.0.1:9/hook' } });
    expect(res.body.errors).toBeUndefined();
    expect(rows(t, 'prediction_webhooks')).toBe(1);
  });

  test('WEBHOOK_SIGNING_SECRET must look like a Standard Webhooks secret', async () => {
    const { loadConfig } = await import('../src/config.js');
    expect(() => loadConfig({ WEBHOOK_SIGNING_SECRET: 'hunter2' })).toThrow(/WEBHOOK_SIGNING_SECRET: must be whsec_/);
    expect(() => loadConfig({ WEBHOOK_RETRY_BASE_MS: '0' })).toThrow(/WEBHOOK_RETRY_BASE_MS/);
    expect(() => loadConfig({ WEBHOOK_ALLOW_PRIVATE: 'perhaps' })).toThrow(/WEBHOOK_ALLOW_PRIVATE/);
    expect(() => loadConfig({ WEBHOOK_TIMEOUT_MS: 'soon' })).toThrow(/WEBHOOK_TIMEOUT_MS/);
    expect(loadConfig({ WEBHOOK_SIGNING_SECRET: `whsec_${'A'.repeat(43)}=` }).webhooks.signingSecret).toBe(`whsec_${'A'.repeat(43)}=`);
  });
});

describe('outgoing webhooks: durable', () => {
  test('stop() does not wait for a receiver that never answers: the cut-off POST is no attempt, and the next process sends it', async () => {
    const secret = generateSigningSecret();
    const dataDir = tempDir();
    let answering = false;
    const got: Received[] = [];
    const hook = await listen((req, res) => {
      let body = '';
      req.on('data', (d) => (body += d));
      req.on('end', () => {
        got.push({ headers: req.headers, body });
        if (answering) res.writeHead(204).end(); // else never answered: the socket closes when the sender gives up
      });
    });
    const env = { ...fastEnv, DATA_DIR: dataDir, WEBHOOK_ALLOW_PRIVATE: 'true', WEBHOOK_SIGNING_SECRET: secret, SANDBOX_TASK_SECONDS: '0.3', WEBHOOK_TIMEOUT_MS: '600000' };
    const first = buildApp(loadConfig(env));
    const firstUrl = await first.start();
    const { id } = (await postGraphql(firstUrl, CREATE, { input: { prompt: 'p', webhookUrl: `${hook}/h` } })).body.data.createVideo;
    await waitFor(() => got.length, (n) => n === 1, 15_000);
    await first.stop(); // returns although the receiver holds the POST for up to 10 minutes
    answering = true;
    const t = await startApp(env);
    const list = await waitFor(
      async () => (await t.gql(DELIVERIES, { id })).body.data.prediction.webhookDeliveries,
      (l) => l.length > 0,
    );
    expect(list.map((d: { statusCode: number }) => d.statusCode)).toEqual([204]);
    expect(got).toHaveLength(2);
    expect(got[1]?.headers['webhook-id']).toBe(got[0]?.headers['webhook-id']);
  });

  test('a SIGKILL while the final status is being delivered still delivers it, once the server is back', async () => {
    const secret = generateSigningSecret();
    const dataDir = tempDir();
    // Answers nothing until the server has been killed and restarted; then 204.
    let answering = false;
    const held: ServerResponse[] = [];
    const got: Received[] = [];
    const hook = await listen((req, res) => {
      let body = '';
      req.on('data', (d) => (body += d));
      req.on('end', () => {
        got.push({ headers: req.headers, body });
        if (answering) res.writeHead(204).end();
        else held.push(res);
      });
    });
    const env = { DATA_DIR: dataDir, WEBHOOK_ALLOW_PRIVATE: 'true', WEBHOOK_SIGNING_SECRET: secret, SANDBOX_TASK_SECONDS: '0.3', WEBHOOK_TIMEOUT_MS: '60000' };
    const first = await spawnServer({ ...env, PORT: String(await freePort()) });
    const { id } = (await postGraphql(first.url, CREATE, { input: { prompt: 'p', webhookUrl: `${hook}/h` } })).body.data.createVideo;
    // The COMPLETED delivery is in flight: its status write (and outbox message) committed before the POST left.
    await waitFor(() => got.length, (n) => n === 1, 15_000);
    const before = (await postGraphql(first.url, DELIVERIES, { id })).body.data.prediction;
    expect(before.status).toBe('COMPLETED');
    expect(before.webhookDeliveries).toEqual([]); // no attempt recorded yet
    first.child.kill('SIGKILL');
    await first.exited;
    for (const res of held) res.destroy();
    answering = true;

    const second = await spawnServer({ ...env, PORT: String(await freePort()) });
    await waitFor(() => got.length, (n) => n === 2, 15_000);
    const [lost, resent] = got as [Received, Received];
    expect(resent.headers['webhook-id']).toBe(lost.headers['webhook-id']);
    expect(verify(secret, resent).data).toMatchObject({ id, status: 'COMPLETED' });
    const after = await waitFor(
      async () => (await postGraphql(second.url, DELIVERIES, { id })).body.data.prediction,
      (p) => p.webhookDeliveries.length === 1,
    );
    expect(after.webhookDeliveries[0]).toMatchObject({ statusCode: 204, succeeded: true, webhookId: lost.headers['webhook-id'] });
    // The prediction itself was not written again.
    expect(after.updatedAt).toBe(before.updatedAt);
  });
});
