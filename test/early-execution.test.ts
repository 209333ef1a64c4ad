import { createSchema, createYoga, type Plugin } from 'graphql-yoga';
import { expect, test } from 'vitest';
import { CONTENT_TYPES, createEarlyAnswer } from '../src/server/early-answer.js';
import { createEarlyExecution } from '../src/server/early-execution.js';
import { createHttpServer } from '../src/server/http.js';
import { createGraphqlHandler, type Yoga } from '../src/server/yoga.js';
import type { Context } from '../src/schema/context.js';
import { startApp, waitFor, type TestApp } from './helpers/app.js';
import { onDispose } from './helpers/dispose.js';
import { comparable, postBody as post, postWithoutHost, rawRequest } from './helpers/http.js';
import { bearer } from './helpers/keys.js';
import { listenOnLoopback } from './helpers/listen.js';
import { must } from './helpers/must.js';
import { parsePrometheus } from './helpers/prometheus.js';
import { capturedLogger, stubUpstream } from './helpers/stub-upstream.js';

// Early execution (src/server/early-execution.ts): plain queries and mutations executed by the HTTP
// layer outside yoga's pipeline. It must never answer differently from yoga, and never run an
// operation twice. Each answer is compared with yoga's for the same request: sent with a chunked body
// (no Content-Length), which the HTTP layer never reads, or to a server built without early execution.

const CREATE = 'mutation($p: String!) { createVideo(input: { prompt: $p }) { id status input { prompt } } }';
const GET = 'query($id: ID!) { prediction(id: $id) { id status upstreamId input { prompt hasImage } outputs createdAt updatedAt } }';
const json = { 'content-type': 'application/json' };

/** Ids and timestamps, which differ between two predictions created alike. */
const maskIds = (text: string) =>
  text.replace(/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/g, '<id>').replace(/\d{4}-\d\d-\d\dT[\d:.]+Z/g, '<time>');

/** Operations executed early so far, by outcome (GET /metrics; open mode, or with a key). */
async function executions(url: string, headers: Record<string, string> = {}): Promise<{ answered: number; handed: number }> {
  const family = parsePrometheus(await (await fetch(`${url}/metrics`, { headers })).text()).get('cinegraph_early_executions_total');
  const of = (outcome: string) => family?.samples.find((s) => s.labels.outcome === outcome)?.value ?? 0;
  return { answered: of('answered'), handed: of('handed') };
}

const quiet = { SANDBOX_TASK_SECONDS: '600', POLL_INITIAL_MS: '600000', POLL_MAX_MS: '600000' };

async function withPrediction(env: Record<string, string> = {}) {
  const t = await startApp({ ...quiet, RESPONSE_CACHE: 'false', ...env });
  const id = (await t.gql(CREATE, { p: 'a kite over dunes' })).body.data.createVideo.id as string;
  await waitFor(() => t.app.store.findById(id)?.upstreamId ?? null, (u) => u !== null);
  return { t, id };
}

test('a plain query executed early is byte for byte the answer yoga writes, for every Accept and kind of query', async () => {
  const { t, id } = await withPrediction();
  const reads: Array<{ query: string; variables?: Record<string, unknown> | null; operationName?: string }> = [
    { query: GET, variables: { id } },
    { query: GET, variables: { id: 'no-such-id' } },
    { query: '{ predictions(first: 5) { edges { node { id status } } pageInfo { hasNextPage } } }' },
    { query: '{ __typename }' },
    { query: 'query A { __typename } query B { prediction(id: "no-such-id") { id } }', operationName: 'B' },
    { query: 'query A { __typename } query B { prediction(id: "no-such-id") { id } }', operationName: 'A', variables: null },
  ];
  const accepts = [...CONTENT_TYPES.keys()];
  const before = await executions(t.url);
  for (const read of reads) {
    const body = JSON.stringify(read);
    // The first of a text is yoga's (it learns the text is good); every one after can be early.
    const first = await post(t.url, body, json);
    for (const accept of accepts) {
      const headers = { ...json, ...(accept === undefined ? {} : { accept }) };
      const early = await post(t.url, body, headers);
      expect(comparable(early), `${body} Accept: ${accept}`).toEqual(comparable(await post(t.url, body, headers, true)));
      expect(early.status).toBe(200);
      expect(early.headers['content-type']).toBe(CONTENT_TYPES.get(accept));
    }
    expect(first.text).toBe((await post(t.url, body, json)).text);
  }
  const after = await executions(t.url);
  // Per read: one for each Accept and the last one; and the first unless its text came earlier (the
  // first of a text went to yoga).
  const texts = new Set(reads.map((r) => r.query)).size;
  expect(after.answered - before.answered).toBe(reads.length * (accepts.length + 2) - texts);
  expect(after.handed).toBe(before.handed);
  expect(JSON.parse((await post(t.url, JSON.stringify(reads[0]))).text).data.prediction.id).toBe(id);
});

test('a mutation runs exactly once, answered early or handed to yoga with its errors, and is answered as yoga answers it', async () => {
  const stub = await stubUpstream();
  const t = await startApp({ ...quiet, WAVESPEED_API_KEY: 'stub-key', WAVESPEED_BASE_URL: stub.url });
  const plain = await startApp({ ...quiet, WAVESPEED_API_KEY: 'stub-key', WAVESPEED_BASE_URL: stub.url }, { earlyExecution: false });
  const submitted = async (n: number) => {
    await waitFor(() => stub.counts.submit, (c) => c >= n);
    // Every prediction of both servers is submitted once; a second submission would be a paid video more.
    for (const app of [t, plain]) await waitFor(() => app.app.store.list({ first: 100 }).every((p) => p.upstreamId !== null), Boolean);
    expect(stub.counts.submit).toBe(n);
  };
  const rows = (app: TestApp) => app.app.store.count();

  const body = JSON.stringify({ query: CREATE, variables: { p: 'a paper boat' } });
  const viaYoga = await post(t.url, body);
  const before = await executions(t.url);
  const early = await post(t.url, body);
  expect(await executions(t.url)).toEqual({ answered: before.answered + 1, handed: before.handed });
  expect(comparable(early, maskIds)).toEqual(comparable(viaYoga, maskIds));
  expect(early.status).toBe(200);
  expect(JSON.parse(early.text).data.createVideo).toMatchObject({ status: 'CREATED', input: { prompt: 'a paper boat' } });
  expect(rows(t)).toBe(2);
  await submitted(2);

  // The first alias creates a prediction, the second is refused by its resolver: the result has errors
  // (and, createVideo being non-null, no data), so yoga answers it, from the result executed here.
  const partial = JSON.stringify({
    query: 'mutation($p: String!, $q: String!) { ok: createVideo(input: { prompt: $p }) { id } bad: createVideo(input: { prompt: $q }) { id } }',
    variables: { p: 'a lantern', q: '   ' },
  });
  // Wrong variable types: a request error, nothing created anywhere.
  const wrongType = JSON.stringify({ query: CREATE, variables: { p: 5 } });
  for (const [name, text, status, created] of [
    ['partial', partial, 200, 1],
    ['wrong type', wrongType, 400, 0],
  ] as const) {
    const learn = await post(t.url, text); // the first of a text is yoga's
    const rowsBefore = { t: rows(t), plain: rows(plain) };
    const handedBefore = (await executions(t.url)).handed;
    const answer = await post(t.url, text);
    expect((await executions(t.url)).handed, name).toBe(handedBefore + 1);
    const baseline = await post(plain.url, text);
    expect(comparable(answer, maskIds), name).toEqual(comparable(baseline, maskIds));
    expect(comparable(answer, maskIds), name).toEqual(comparable(learn, maskIds));
    expect(answer.status, name).toBe(status);
    expect(rows(t) - rowsBefore.t, name).toBe(created);
    expect(rows(plain) - rowsBefore.plain, name).toBe(created);
  }
  expect(JSON.parse((await post(t.url, wrongType)).text).errors[0].extensions.code).toBe('BAD_USER_INPUT');
  expect(JSON.parse((await post(t.url, partial)).text)).toMatchObject({ data: null, errors: [{ path: ['bad'], extensions: { code: 'BAD_USER_INPUT' } }] });
  // t: 2 + 3 partials; plain: 1 partial. Each of them submitted once.
  expect(rows(t)).toBe(5);
  expect(rows(plain)).toBe(1);
  await submitted(6);
});

test('a limit enforced while executing (the result cost) is answered by yoga from the result executed here; another owner gets what yoga gives it', async () => {
  const { t, id } = await withPrediction();
  const aliases = Array.from({ length: 20 }, (_, i) => `p${i}: predictions(first: $f) { edges { node { id input { prompt } } } }`).join(' ');
  const costly = JSON.stringify({ query: `query($f: Int!) { ${aliases} }`, variables: { f: 100 } });
  await post(t.url, costly);
  const before = await executions(t.url);
  const answer = await post(t.url, costly);
  expect((await executions(t.url)).handed).toBe(before.handed + 1);
  expect(comparable(answer)).toEqual(comparable(await post(t.url, costly, json, true)));
  expect(answer.status).toBe(400);
  expect(JSON.parse(answer.text).errors[0].extensions.code).toBe('QUERY_TOO_COMPLEX');

  // Keys: each caller's context is its own; another key's prediction is not found.
  const alice = t.app.keys.create('alice').key;
  const bob = t.app.keys.create('bob').key;
  const mine = (await post(t.url, JSON.stringify({ query: CREATE, variables: { p: 'mine' } }), { ...json, ...bearer(alice) })).text;
  const aliceId = JSON.parse(mine).data.createVideo.id as string;
  await waitFor(() => t.app.store.findById(aliceId)?.upstreamId ?? null, (u) => u !== null);
  const read = JSON.stringify({ query: GET, variables: { id: aliceId } });
  await post(t.url, read, { ...json, ...bearer(alice) });
  for (const [key, found] of [
    [alice, true],
    [bob, false],
  ] as const) {
    const headers = { ...json, ...bearer(key) };
    const early = await post(t.url, read, headers);
    expect(comparable(early)).toEqual(comparable(await post(t.url, read, headers, true)));
    const prediction = JSON.parse(early.text).data?.prediction;
    expect(prediction?.id ?? null).toBe(found ? aliceId : null);
  }
  expect(must(t.app.store.findById(aliceId)).owner).not.toBeNull();
  expect(JSON.parse((await post(t.url, JSON.stringify({ query: GET, variables: { id } }), { ...json, ...bearer(bob) })).text).data.prediction).toBeNull();
});

test('what early execution leaves to yoga gets the same answer as from a server without it, and nothing runs here', async () => {
  const { t, id } = await withPrediction();
  const plain = await startApp({ ...quiet, RESPONSE_CACHE: 'false' }, { earlyExecution: false });
  const cases: Array<{ name: string; body: string; status?: number; code?: string }> = [
    { name: 'an unknown operation name', body: JSON.stringify({ query: 'query A { __typename }', operationName: 'B' }), status: 400, code: 'OPERATION_RESOLUTION_FAILURE' },
    { name: 'two operations and no name', body: JSON.stringify({ query: 'query A { __typename } query B { __typename }' }), status: 400, code: 'OPERATION_RESOLUTION_FAILURE' },
    { name: 'a syntax error', body: JSON.stringify({ query: '{ prediction(id: ' }), status: 400, code: 'GRAPHQL_PARSE_FAILED' },
    { name: 'an unknown field', body: JSON.stringify({ query: '{ nope }' }), status: 400, code: 'GRAPHQL_VALIDATION_FAILED' },
    { name: 'too many aliases', body: JSON.stringify({ query: `{ ${Array.from({ length: 21 }, (_, i) => `a${i}: prediction(id: "x") { id }`).join(' ')} }` }), status: 400, code: 'QUERY_TOO_COMPLEX' },
    // Over plain JSON, yoga answers a subscription as it sees fit (not with a stream): never here.
    { name: 'a subscription', body: JSON.stringify({ query: 'subscription($id: ID!) { predictionUpdated(id: $id) { id } }', variables: { id: 'no-such-id' } }) },
  ];
  const before = await executions(t.url);
  for (const c of cases) {
    // Twice: the second time the text has been seen by yoga, which learns only texts that are good.
    for (const round of [1, 2]) {
      const answer = comparable(await post(t.url, c.body));
      expect(answer, `${c.name}, ${round}`).toEqual(comparable(await post(plain.url, c.body)));
      if (c.status) expect(answer.status, c.name).toBe(c.status);
      if (c.code) expect(JSON.parse(answer.body).errors[0].extensions.code, c.name).toBe(c.code);
    }
  }
  expect(await executions(t.url)).toEqual(before);

  // Without a Host header (HTTP/1.0) yoga builds links from the socket's address: yoga's alone. (In
  // open mode such a request is refused, FORBIDDEN_HOST; with a key it is answered.)
  const key = t.app.keys.create('http10').key;
  for (let i = 0; i < 2; i++) {
    const answer = await postWithoutHost(t.url, GET, { id }, bearer(key));
    expect(answer.status).toBe(200);
    expect(JSON.parse(answer.body).data).toEqual({ prediction: null }); // not the key's
  }
  expect(await executions(t.url, bearer(key))).toEqual(before);
});

test('a mutation is executed here only at exactly /graphql under a plain Host: yoga answers its health check, other URLs and odd Hosts as its own', async () => {
  const t = await startApp({ ...quiet, RESPONSE_CACHE: 'false' });
  const plain = await startApp({ ...quiet, RESPONSE_CACHE: 'false' }, { earlyExecution: false });
  const create = JSON.stringify({ query: CREATE, variables: { p: 'a route test' } });
  const send = (url: string, path: string, headers: Record<string, string> = json) =>
    rawRequest(url, { path, body: create, headers: { ...headers, 'content-length': String(Buffer.byteLength(create)) } });
  await post(t.url, create); // yoga learns the text
  const check = async (name: string, path: string, headers: Record<string, string>, created: number, auth: Record<string, string> = {}) => {
    const rows = [t.app.store.count(), plain.app.store.count()];
    const before = await executions(t.url, auth);
    const answer = await send(t.url, path, headers);
    expect(comparable(answer, maskIds), name).toEqual(comparable(await send(plain.url, path, headers), maskIds));
    expect([t.app.store.count() - (rows[0] ?? 0), plain.app.store.count() - (rows[1] ?? 0)], name).toEqual([created, created]);
    expect(await executions(t.url, auth), name).toEqual(before);
    return answer;
  };
  // yoga's health check answers any URL ending in /health, before parsing: nothing is created.
  const health = await check('health check', '/graphql?/health', json, 0);
  expect(health.status).toBe(200);
  expect(health.text).toBe('');
  // A query string: yoga runs it (the path is /graphql), and only yoga.
  expect((await check('query string', '/graphql?x=1', json, 1)).status).toBe(200);
  // A Host holding a path (with a key: open mode refuses such a Host). yoga's URL is then
  // http://a/b/graphql, which it still takes for its endpoint, but where an authority ends is yoga's
  // business: such a request is yoga's alone.
  const keyT = t.app.keys.create('odd-host').key;
  const keyPlain = plain.app.keys.create('odd-host').key;
  const rows = [t.app.store.count(), plain.app.store.count()];
  const beforeOdd = await executions(t.url, bearer(keyT));
  const odd = await send(t.url, '/graphql', { ...json, ...bearer(keyT), host: 'a/b' });
  expect(comparable(odd, maskIds)).toEqual(comparable(await send(plain.url, '/graphql', { ...json, ...bearer(keyPlain), host: 'a/b' }), maskIds));
  expect(odd.status).toBe(200);
  expect([t.app.store.count(), plain.app.store.count()]).toEqual([(rows[0] ?? 0) + 1, (rows[1] ?? 0) + 1]);
  expect(await executions(t.url, bearer(keyT))).toEqual(beforeOdd);
  // The same key and text at a plain Host is executed here, once.
  await send(t.url, '/graphql', { ...json, ...bearer(keyT) });
  const before = await executions(t.url, bearer(keyT));
  expect((await send(t.url, '/graphql', { ...json, ...bearer(keyT) })).status).toBe(200);
  expect(await executions(t.url, bearer(keyT))).toEqual({ ...before, answered: before.answered + 1 });
  expect(t.app.store.count()).toBe((rows[0] ?? 0) + 3);
});

test('links are built from the Host as yoga builds them (lower-cased), not from the header as sent', async () => {
  const t = await startApp({ RESPONSE_CACHE: 'false', SANDBOX_TASK_SECONDS: '0.3' });
  const id = (await t.gql(CREATE, { p: 'a heron in reeds' })).body.data.createVideo.id as string;
  // Completed, and its output kept here: its link is then built from the request's Host.
  const KEPT = 'query($id: ID!) { prediction(id: $id) { id keptOutputs } }';
  await waitFor(async () => (await t.gql(KEPT, { id })).body.data.prediction.keptOutputs.length, (n) => n > 0);
  const { port } = new URL(t.url);
  const headers = { ...json, host: `LocalHost:${port}` };
  const read = JSON.stringify({ query: KEPT, variables: { id } });
  await post(t.url, read, headers);
  const before = await executions(t.url);
  const early = await post(t.url, read, headers);
  expect((await executions(t.url)).answered).toBe(before.answered + 1);
  expect(comparable(early)).toEqual(comparable(await post(t.url, read, headers, true)));
  const outputs = JSON.parse(early.text).data.prediction.keptOutputs as string[];
  expect(outputs.length).toBeGreaterThan(0);
  for (const link of outputs) expect(link).toMatch(new RegExp(`^http://localhost:${port}/media/`));
});

/** http.ts with yoga and nothing else of the gateway: open access, one principal. */
async function gatewayOf(yoga: Yoga, execution?: ReturnType<typeof createEarlyExecution>, log = capturedLogger().log) {
  const server = createHttpServer({
    yoga,
    log,
    notReady: () => [],
    access: { screen: () => true, graphql: () => ({ principal: { owner: undefined } as never }) } as never,
    early: createEarlyAnswer(undefined),
    execution,
  });
  const port = await listenOnLoopback(server);
  onDispose(() => new Promise<void>((resolve) => server.close(() => resolve())));
  return `http://127.0.0.1:${port}`;
}

test('an execution that throws is handed to yoga, which masks and answers it as its own; it ran once', async () => {
  let runs = 0;
  const throwing: Plugin = {
    onExecute({ args }) {
      if ((args.document.definitions[0] as { name?: { value: string } }).name?.value !== 'Throws') return;
      runs++;
      throw new Error('a plugin failed');
    },
  };
  const schema = createSchema({ typeDefs: 'type Query { ok: String }', resolvers: { Query: { ok: () => 'fine' } } });
  const execution = createEarlyExecution();
  const withEarly = await gatewayOf(createYoga({ schema, logging: false, plugins: [execution.plugin, throwing] }) as never, execution);
  const without = await gatewayOf(createYoga({ schema, logging: false, plugins: [throwing] }) as never);
  const body = JSON.stringify({ query: 'query Throws { ok }' });
  await post(withEarly, body); // yoga learns the text
  runs = 0;
  const answer = await post(withEarly, body);
  expect(runs).toBe(1);
  expect(comparable(answer)).toEqual(comparable(await post(without, body)));
  expect(answer.status).toBe(500);
  expect(JSON.parse(answer.text).errors[0].message).toBe('Unexpected error.');
  const ok = JSON.stringify({ query: '{ ok }' });
  await post(withEarly, ok);
  expect((await post(withEarly, ok)).text).toBe('{"data":{"ok":"fine"}}');
  // An early execution whose plugin is not in yoga's list would have yoga run a handed-over operation
  // again: it executes nothing.
  const outcomes: string[] = [];
  const stray = createEarlyExecution((o) => outcomes.push(o));
  const unwired = await gatewayOf(createYoga({ schema, logging: false, plugins: [throwing] }) as never, stray);
  runs = 0;
  for (let i = 0; i < 3; i++) expect(comparable(await post(unwired, body))).toEqual(comparable(answer));
  expect(runs).toBe(3);
  expect(outcomes).toEqual([]);
});

test('a success with extensions is handed to yoga; an unexpected error is masked and logged with its request id, as by yoga', async () => {
  const extend: Plugin = {
    onExecute({ args }) {
      if ((args.document.definitions[0] as { name?: { value: string } }).name?.value !== 'Ext') return;
      return { onExecuteDone: ({ result, setResult }) => setResult({ ...(result as object), extensions: { note: 'added' } }) };
    },
  };
  const schema = createSchema({
    typeDefs: 'type Query { ok: String, boom(s: String!): String }',
    resolvers: { Query: { ok: () => 'fine', boom: async (_: unknown, { s }: { s: string }) => Promise.reject(new Error(`unexpected ${s}`)) } },
  });
  const outcomes: string[] = [];
  const execution = createEarlyExecution((o) => outcomes.push(o));
  const ext = JSON.stringify({ query: 'query Ext { ok }' });
  const withEarly = await gatewayOf(createYoga({ schema, logging: false, plugins: [execution.plugin, extend] }) as never, execution);
  const without = await gatewayOf(createYoga({ schema, logging: false, plugins: [extend] }) as never);
  await post(withEarly, ext);
  const answer = await post(withEarly, ext);
  expect(outcomes).toEqual(['handed']);
  expect(comparable(answer)).toEqual(comparable(await post(without, ext)));
  expect(JSON.parse(answer.text)).toEqual({ data: { ok: 'fine' }, extensions: { note: 'added' } });

  // The gateway's own yoga (its masking and error logging), early and not.
  const captured = capturedLogger();
  captured.log.level = 'info';
  const ours = createEarlyExecution();
  const gateway = await gatewayOf(
    createGraphqlHandler(schema as never, (initial) => initial as unknown as Context, captured.log, { apiKeys: false }, undefined, ours.plugin),
    ours,
    captured.log,
  );
  const boom = (s: string) => post(gateway, JSON.stringify({ query: 'query($s: String!) { boom(s: $s) }', variables: { s } }), { ...json, 'x-request-id': `req-${s}` });
  const first = await boom('a'); // yoga's
  const second = await boom('b'); // executed here, handed to yoga with its error
  expect(comparable(second)).toEqual(comparable(first));
  expect(JSON.parse(second.text).errors[0]).toMatchObject({ message: 'Unexpected error.', path: ['boom'] });
  const yogaLines = captured.lines.map((l) => JSON.parse(l)).filter((l) => l.msg === 'yoga');
  expect(Object.fromEntries(yogaLines.map((l) => [l.requestId, l.args[0].message]))).toEqual({ 'req-a': 'unexpected a', 'req-b': 'unexpected b' });
});
