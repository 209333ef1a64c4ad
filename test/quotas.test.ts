import { describe, expect, test } from 'vitest';
import { ConfigError, loadConfig } from '../src/config.js';
import type { AppOverrides } from '../src/app.js';
import { type GqlResult, postGraphql, startApp, waitFor } from './helpers/app.js';
import { sseSubscribe, wsClient, wsSubscribe } from './helpers/clients.js';
import { heldClock } from './helpers/clock.js';
import { bearer } from './helpers/keys.js';
import { must } from './helpers/must.js';

const CREATE = `mutation($p: String!) { createVideo(input: { prompt: $p }) { id } }`;
const WATCH = `subscription($id: ID!) { predictionUpdated(id: $id) { status } }`;

async function keyedApp(env: Record<string, string> = {}, overrides: AppOverrides = {}) {
  const t = await startApp(env, overrides);
  const key = (name: string, limits?: { perMinute?: number; maxInFlight?: number }) => t.app.keys.create(name, limits).key;
  const create = (k: string, p = 'a prompt') => postGraphql(t.url, CREATE, { p }, bearer(k));
  return { ...t, key, create };
}

describe('per-key quotas', () => {
  test('createVideo per minute: the call over the limit gets RATE_LIMITED with retryAfter, HTTP 429 and Retry-After; other keys are unaffected', async () => {
    const t = await keyedApp({ KEY_CREATES_PER_MINUTE: '2', SANDBOX_TASK_SECONDS: '600' });
    const own = t.key('own-limit', { perMinute: 3 });
    const byDefault = t.key('default-limit');
    const other = t.key('other');
    for (let i = 0; i < 3; i++) expect((await t.create(own)).body.data.createVideo.id).toBeTypeOf('string');
    const refused = await t.create(own, 'one too many');
    expect(refused.status).toBe(429);
    expect(refused.body.data).toBeNull();
    const err = must(refused.body.errors?.[0]);
    expect(err.extensions).toMatchObject({ code: 'RATE_LIMITED' });
    expect(err.extensions?.retryAfter).toBeGreaterThanOrEqual(1);
    expect(err.extensions?.retryAfter).toBeLessThanOrEqual(60);
    expect(err.message).toContain(`retry in ${err.extensions?.retryAfter} s`);
    const res = await fetch(`${t.url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json', ...bearer(own) }, body: JSON.stringify({ query: CREATE, variables: { p: 'x' } }) });
    expect(res.headers.get('retry-after')).toMatch(/^\d+$/);
    // KEY_CREATES_PER_MINUTE for a key without a limit of its own.
    expect((await t.create(byDefault)).status).toBe(200);
    expect((await t.create(byDefault)).status).toBe(200);
    expect((await t.create(byDefault)).body.errors?.[0]?.extensions?.code).toBe('RATE_LIMITED');
    expect((await t.create(other)).body.data.createVideo.id).toBeTypeOf('string');
    expect(t.app.store.count()).toBe(3 + 2 + 1);
  });

  test('unfinished predictions: over the limit gets TOO_MANY_IN_FLIGHT and stores nothing; a finished one frees a place', async () => {
    // 3 s tasks: the first must still be unfinished when the third is refused, however slow the creates.
    const t = await keyedApp({ KEY_MAX_IN_FLIGHT: '2', SANDBOX_TASK_SECONDS: '3' });
    const k = t.key('busy');
    const first = (await t.create(k, 'one')).body.data.createVideo.id;
    await t.create(k, 'two');
    const refused = await t.create(k, 'three');
    expect(refused.body.errors?.[0]?.extensions).toMatchObject({ code: 'TOO_MANY_IN_FLIGHT', limit: 2 });
    expect(refused.status).toBe(429);
    expect(t.app.store.count()).toBe(2);
    // Another key has its own count.
    expect((await t.create(t.key('idle'))).status).toBe(200);
    await waitFor(() => t.app.store.findById(first)?.status, (s) => s === 'COMPLETED');
    expect((await t.create(k, 'three, later')).body.data.createVideo.id).toBeTypeOf('string');
    // A key's own limit overrides the default.
    const solo = t.key('solo', { maxInFlight: 1 });
    await t.create(solo);
    expect((await t.create(solo)).body.errors?.[0]?.extensions?.code).toBe('TOO_MANY_IN_FLIGHT');
  });

  test('the 101st subscription on one socket is refused; the first 100 still receive every event', async () => {
    // Held until the 101st is refused, so all 100 are still open then however long their subscribes
    // take: the refusal must be the limit's. 3 s tasks, so a poll under load still lands in PROCESSING.
    const clock = heldClock();
    const t = await keyedApp({ SANDBOX_TASK_SECONDS: '3' }, { clock });
    const k = t.key('watcher');
    const id = (await t.create(k)).body.data.createVideo.id;
    const client = wsClient(t.url, { authorization: `Bearer ${k}` });
    const subs = Array.from({ length: 100 }, () => wsSubscribe(client, WATCH, { id }));
    await waitFor(() => subs.filter((s) => s.values.length > 0).length, (n) => n === 100);
    const extra = wsSubscribe(client, WATCH, { id });
    await expect(extra.done).rejects.toEqual([expect.objectContaining({ extensions: { code: 'TOO_MANY_SUBSCRIPTIONS' } })]);
    expect(subs.filter((s) => s.values.some((v) => v.predictionUpdated.status === 'COMPLETED'))).toHaveLength(0);
    clock.release();
    const histories = await Promise.all(subs.map((s) => s.done.then((v) => [...new Set(v.map((x) => x.predictionUpdated.status))].join('>'))));
    // Each saw COMPLETED arrive after the refusal (none had it then), PROCESSING before it.
    expect(histories.filter((h) => !/(^|>)PROCESSING>COMPLETED$/.test(h))).toEqual([]);
    // Once they are done the socket takes new ones again.
    const after = wsSubscribe(client, WATCH, { id });
    expect((await after.done).at(-1).predictionUpdated.status).toBe('COMPLETED');
  });

  test('MAX_SOCKETS_PER_KEY counts graphql-ws sockets and SSE streams of one key', async () => {
    const t = await keyedApp({ MAX_SOCKETS_PER_KEY: '2', SANDBOX_TASK_SECONDS: '600' });
    const k = t.key('sockets');
    const id = (await t.create(k)).body.data.createVideo.id;
    const params = { authorization: `Bearer ${k}` };
    const one = wsSubscribe(wsClient(t.url, params), WATCH, { id });
    const two = sseSubscribe(t.url, WATCH, { id }, bearer(k));
    // Both are open once each has its first message (CREATED or, if the submission was quicker, PROCESSING).
    await waitFor(() => Math.min(one.values.length, two.values.length), (n) => n >= 1);
    const third = wsSubscribe(wsClient(t.url, params), WATCH, { id });
    await expect(third.done).rejects.toMatchObject({ code: 4429, reason: 'TOO_MANY_SOCKETS' });
    const sse = await fetch(`${t.url}/graphql`, {
      method: 'POST',
      headers: { accept: 'text/event-stream', 'content-type': 'application/json', ...bearer(k) },
      body: JSON.stringify({ query: WATCH, variables: { id } }),
    });
    expect([sse.status, ((await sse.json()) as GqlResult<unknown>).errors?.[0]?.extensions?.code]).toEqual([429, 'TOO_MANY_SOCKETS']);
    // Another key is not affected, and plain queries are not sockets.
    expect((await t.create(k)).status).toBe(200);
    const other = t.key('other');
    const fine = wsSubscribe(wsClient(t.url, { authorization: `Bearer ${other}` }), `query { predictions { nodes { id } } }`);
    expect(await fine.done).toEqual([{ predictions: { nodes: [] } }]);
  });
});

describe('limits that hold under variables', () => {
  const aliases = (n: number, args: string) => Array.from({ length: n }, (_, i) => `p${i}: predictions(${args}) { nodes { id } }`).join('\n');

  test('20 aliases of predictions(first: $f) with f = 100 are refused with QUERY_TOO_COMPLEX before any row is read', async () => {
    const t = await startApp();
    for (let i = 0; i < 3; i++) await t.gql(CREATE, { p: `row ${i}` });
    let reads = 0;
    const list = t.app.store.list.bind(t.app.store);
    t.app.store.list = (opts) => {
      reads++;
      return list(opts);
    };

    const viaVariable = await t.gql(`query($f: Int!) { ${aliases(20, 'first: $f')} }`, { f: 100 });
    expect(viaVariable.status).toBe(400);
    expect(viaVariable.body.data).toBeUndefined();
    expect(viaVariable.body.errors?.[0]?.extensions?.code).toBe('QUERY_TOO_COMPLEX');
    expect(viaVariable.body.errors?.[0]?.message).toMatch(/^operation cost \d+ exceeds 5000/);
    const viaDefault = await t.gql(`query($f: Int = 100) { ${aliases(20, 'first: $f')} }`);
    expect(viaDefault.body.errors?.[0]?.extensions?.code).toBe('QUERY_TOO_COMPLEX');
    const literal = await t.gql(`{ ${aliases(20, 'first: 100')} }`);
    expect(literal.body.errors?.[0]?.extensions?.code).toBe('QUERY_TOO_COMPLEX');
    const inFragment = await t.gql(`query($f: Int!) { ...F } fragment F on Query { ${aliases(20, 'first: $f')} }`, { f: 100 });
    expect(inFragment.body.errors?.[0]?.extensions?.code).toBe('QUERY_TOO_COMPLEX');
    const overWs = wsSubscribe(wsClient(t.url), `query($f: Int!) { ${aliases(20, 'first: $f')} }`, { f: 100 });
    await overWs.done.catch(() => {});
    expect(overWs.errors).toEqual([expect.objectContaining({ extensions: expect.objectContaining({ code: 'QUERY_TOO_COMPLEX' }) })]);
    expect(reads).toBe(0);

    // The same shape with small pages, and one full page of every field, are fine.
    const small = await t.gql(`query($f: Int!) { ${aliases(20, 'first: $f')} }`, { f: 5 });
    expect(Object.keys(small.body.data)).toHaveLength(20);
    const full = await t.gql(`query($f: Int = 100) { predictions(first: $f) { nodes { id status input { prompt hasImage } outputs keptOutputs error createdAt } pageInfo { hasNextPage endCursor } } }`);
    expect(full.body.errors).toBeUndefined();
    expect(full.body.data.predictions.nodes).toHaveLength(3);
    // A first out of range is still the resolver's BAD_USER_INPUT, not a cost refusal.
    expect((await t.gql(`query($f: Int!) { predictions(first: $f) { nodes { id } } }`, { f: 100000 })).body.errors?.[0]?.extensions?.code).toBe('BAD_USER_INPUT');
    expect(reads).toBe(21);
  });
});

describe('access configuration', () => {
  test('defaults: 30 creates a minute, 20 in flight, 100 subscriptions a socket, 50 sockets a key, no extra origins', () => {
    expect(loadConfig({}).access).toEqual({
      corsOrigins: [],
      quotas: { createsPerMinute: 30, maxInFlight: 20, maxSubscriptionsPerSocket: 100, maxSocketsPerKey: 50 },
    });
    expect(loadConfig({ CORS_ORIGINS: ' https://a.example ,http://localhost:5173/, ' }).access.corsOrigins).toEqual(['https://a.example', 'http://localhost:5173']);
  });

  test.each([
    [{ KEY_CREATES_PER_MINUTE: '0' }, 'KEY_CREATES_PER_MINUTE'],
    [{ KEY_MAX_IN_FLIGHT: 'many' }, 'KEY_MAX_IN_FLIGHT'],
    [{ MAX_SUBSCRIPTIONS_PER_SOCKET: '1.5' }, 'MAX_SUBSCRIPTIONS_PER_SOCKET'],
    [{ MAX_SOCKETS_PER_KEY: '-3' }, 'MAX_SOCKETS_PER_KEY'],
    [{ CORS_ORIGINS: 'https://a.example,ftp://b.example' }, 'CORS_ORIGINS: "ftp://b.example" is not an origin'],
    [{ CORS_ORIGINS: 'https://a.example/app' }, 'CORS_ORIGINS: "https://a.example/app" is not an origin'],
  ])('%j is refused, naming the variable', (env, names) => {
    expect(() => loadConfig(env)).toThrow(ConfigError);
    expect(() => loadConfig(env)).toThrow(names);
  });
});
