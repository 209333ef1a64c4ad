import { request } from 'node:http';
import { expect, test } from 'vitest';
import { CONTENT_TYPES, EARLY_MAX_BYTES } from '../src/server/early-answer.js';
import { startApp, waitFor, type TestApp } from './helpers/app.js';
import { must } from './helpers/must.js';
import { comparable, postBody as post, rawRequest } from './helpers/http.js';
import { countReads } from './helpers/reads.js';
import { capturedLogger } from './helpers/stub-upstream.js';

// The early answer (src/server/early-answer.ts): a cached `prediction(id)` answer written by the HTTP
// layer before yoga. What it must never do is answer differently from yoga: each test sends the same
// request twice, once in the shape answered early and once with a chunked body (no Content-Length),
// which always goes to yoga and its response-cache plugin, and compares the two answers.

const CREATE = 'mutation($p: String!) { createVideo(input: { prompt: $p }) { id } }';
const GET = 'query($id: ID!) { prediction(id: $id) { id status upstreamId input { prompt } createdAt updatedAt } }';

/** How many answers the HTTP layer has written from the cache so far (GET /metrics, open mode). */
async function earlyAnswers(t: TestApp): Promise<number> {
  const text = await (await fetch(`${t.url}/metrics`)).text();
  const line = must(text.split('\n').find((l) => l.startsWith('cinegraph_response_cache_early_answers_total ')));
  return Number(line.split(' ')[1]);
}

/** A server with one submitted prediction that nothing will change during the test, its answer cached. */
async function withCachedAnswer(overrides: Parameters<typeof startApp>[1] = {}) {
  const t = await startApp({ SANDBOX_TASK_SECONDS: '600', POLL_INITIAL_MS: '600000', POLL_MAX_MS: '600000' }, overrides);
  const id = (await t.gql(CREATE, { p: 'a kite over dunes' })).body.data.createVideo.id as string;
  // Its submission is a change too: let it be written and published before the answer is cached.
  await waitFor(() => t.app.store.findById(id)?.upstreamId ?? null, (u) => u !== null);
  await new Promise((r) => setImmediate(r));
  const body = JSON.stringify({ query: GET, variables: { id } });
  const first = await post(t.url, body, { 'content-type': 'application/json' });
  expect(first.status).toBe(200);
  expect(JSON.parse(first.text).data.prediction.id).toBe(id);
  return { t, id, body, answer: first.text, reads: countReads(t, id) };
}

test('for every Accept it answers, an early answer is byte for byte the one yoga writes from the same cache entry', async () => {
  const { t, body, reads } = await withCachedAnswer();
  const before = await earlyAnswers(t);
  const accepts = [...CONTENT_TYPES.keys()];
  expect(accepts.length).toBeGreaterThanOrEqual(5);
  for (const accept of accepts) {
    const headers = { 'content-type': 'application/json', ...(accept === undefined ? {} : { accept }) };
    const early = await post(t.url, body, headers);
    const yoga = await post(t.url, body, headers, true);
    expect(comparable(early), `Accept: ${accept}`).toEqual(comparable(yoga));
    expect(early.status).toBe(200);
    expect(early.headers['content-type']).toBe(CONTENT_TYPES.get(accept));
  }
  // Each pair was one early answer and one of yoga's, both from the cache: the resolver never ran.
  expect(await earlyAnswers(t)).toBe(before + accepts.length);
  expect(reads()).toBe(0);
  // `application/json; charset=utf-8` as the body's type is answered early too, the same way.
  const charset = { 'content-type': 'application/json; charset=utf-8' };
  expect(comparable(await post(t.url, body, charset))).toEqual(comparable(await post(t.url, body, charset, true)));
  expect(await earlyAnswers(t)).toBe(before + accepts.length + 1);
});

test('any other request goes to yoga with its body, and gets the same answer as if it had never been read here', async () => {
  const { t, id, body, answer: cached } = await withCachedAnswer();
  // The baseline for the answers that name no prediction: a server without the response cache and
  // without early execution, so where yoga answers everything, sent the very same bytes. (A chunked
  // body is no baseline for these: yoga words a malformed body's error differently when it comes chunked.)
  const plain = await startApp({ RESPONSE_CACHE: 'false' }, { earlyExecution: false });
  const json = { 'content-type': 'application/json' };
  const unknown = { id: 'no-such-id' };
  type Case = { name: string; body: string; headers: Record<string, string>; status: number; code?: string; baseline: 'uncached' | 'chunked' };
  const cases: Case[] = [
    { name: 'malformed JSON', body: '{"query": ', headers: json, status: 400, code: 'BAD_REQUEST', baseline: 'uncached' },
    { name: 'a JSON string', body: '"query"', headers: json, status: 400, code: 'BAD_REQUEST', baseline: 'uncached' },
    { name: 'null', body: 'null', headers: json, status: 400, code: 'BAD_REQUEST', baseline: 'uncached' },
    { name: 'an empty object', body: '{}', headers: json, status: 400, code: 'BAD_REQUEST', baseline: 'uncached' },
    { name: 'a batch (array)', body: JSON.stringify([{ query: GET, variables: unknown }]), headers: json, status: 400, baseline: 'uncached' },
    { name: 'an unknown field', body: JSON.stringify({ query: GET, variables: unknown, foo: 1 }), headers: json, status: 400, code: 'BAD_REQUEST', baseline: 'uncached' },
    { name: 'a query that is not a string', body: JSON.stringify({ query: 42, variables: unknown }), headers: json, status: 400, code: 'BAD_REQUEST', baseline: 'uncached' },
    { name: 'variables as an array', body: JSON.stringify({ query: GET, variables: ['no-such-id'] }), headers: json, status: 400, code: 'BAD_REQUEST', baseline: 'uncached' },
    { name: 'an operation name that is not a string', body: JSON.stringify({ query: GET, variables: unknown, operationName: 7 }), headers: json, status: 400, code: 'OPERATION_RESOLUTION_FAILURE', baseline: 'uncached' },
    { name: 'a missing variable', body: JSON.stringify({ query: GET }), headers: json, status: 400, code: 'BAD_USER_INPUT', baseline: 'uncached' },
    // yoga's content-type match is case-sensitive: 415, which an early answer must not turn into a 200.
    { name: 'a content type in capitals', body, headers: { 'content-type': 'Application/JSON' }, status: 415, baseline: 'uncached' },
    { name: 'a mutation', body: JSON.stringify({ query: 'mutation($id: ID!) { cancelPrediction(id: $id) { id } }', variables: unknown }), headers: json, status: 200, code: 'NOT_FOUND', baseline: 'uncached' },
    // These name the cached prediction: the same server, the same request with a chunked body.
    { name: 'an unknown field beside a cached operation', body: JSON.stringify({ query: GET, variables: { id }, foo: 1 }), headers: json, status: 400, code: 'BAD_REQUEST', baseline: 'chunked' },
    { name: 'an empty operation name beside a cached operation', body: JSON.stringify({ query: GET, variables: { id }, operationName: '' }), headers: json, status: 400, code: 'OPERATION_RESOLUTION_FAILURE', baseline: 'chunked' },
    { name: 'extensions (a persisted query, say)', body: JSON.stringify({ query: GET, variables: { id }, extensions: {} }), headers: json, status: 200, baseline: 'chunked' },
    { name: 'an Accept not in the table', body, headers: { ...json, accept: 'application/graphql-response+json;q=1, */*;q=0.1' }, status: 200, baseline: 'chunked' },
    { name: 'the list', body: JSON.stringify({ query: '{ predictions(first: 1) { edges { node { id } } } }' }), headers: json, status: 200, baseline: 'chunked' },
  ];
  const before = await earlyAnswers(t);
  for (const c of cases) {
    const answer = comparable(await post(t.url, c.body, c.headers));
    const baseline = c.baseline === 'uncached' ? await post(plain.url, c.body, c.headers) : await post(t.url, c.body, c.headers, true);
    expect(answer, c.name).toEqual(comparable(baseline));
    expect(answer.status, c.name).toBe(c.status);
    if (c.code) expect(JSON.parse(answer.body).errors[0].extensions.code, c.name).toBe(c.code);
  }
  expect(await earlyAnswers(t)).toBe(before);
  // Nothing the cases did changed the prediction, and its answer is still cached and answered early.
  expect((await post(t.url, body, json)).text).toBe(cached);
  expect(await earlyAnswers(t)).toBe(before + 1);
});

test('requests of other shapes go to yoga: a browser Origin (CORS headers), a conditional request, a body over the limit, another URL, SSE', async () => {
  const { t, body } = await withCachedAnswer();
  const json = { 'content-type': 'application/json' };
  const before = await earlyAnswers(t);

  // A same-origin browser request: yoga adds CORS headers the early answer would not have.
  const fromPage = await post(t.url, body, { ...json, origin: t.url });
  expect(fromPage.status).toBe(200);
  expect(fromPage.headers['access-control-allow-origin']).toBe(t.url);

  expect((await post(t.url, body, { ...json, 'if-none-match': '"x"' })).status).toBe(200);

  // Padded past EARLY_MAX_BYTES with whitespace: the same operation, not read here.
  const padded = body.replace('{', `{${' '.repeat(EARLY_MAX_BYTES)}`);
  expect(Buffer.byteLength(padded)).toBeGreaterThan(EARLY_MAX_BYTES);
  const big = await post(t.url, padded, json);
  expect(comparable(big)).toEqual(comparable(await post(t.url, body, json, true)));

  // Any URL but the endpoint's own: yoga's health check answers one ending in /health, before anything.
  const health = await rawRequest(t.url, { path: '/graphql?/health', body, headers: { ...json, 'content-length': String(Buffer.byteLength(body)) } });
  expect([health.status, health.text]).toEqual([200, '']);

  const sse = await post(t.url, body, { ...json, accept: 'text/event-stream' });
  expect(sse.headers['content-type']).toMatch(/^text\/event-stream/);
  expect(sse.text).toContain('"prediction"');

  expect(await earlyAnswers(t)).toBe(before);
});

test('a client that goes away before sending its whole body gets nothing, is no server error, and the server goes on answering', async () => {
  const captured = capturedLogger();
  const { t, body, answer: cached } = await withCachedAnswer({ log: captured.log });
  const { port } = new URL(t.url);
  await new Promise<void>((resolve) => {
    // `Expect: 100-continue`: Node's server answers 100 just before it hands the request to the
    // handler, which reaches the body read in the same turn; so once 'continue' is here, the body is
    // being read, and half of it is sent before hanging up.
    const req = request({
      host: '127.0.0.1',
      port,
      path: '/graphql',
      method: 'POST',
      headers: { 'content-type': 'application/json', 'content-length': '200', expect: '100-continue' },
    });
    req.on('error', () => resolve()); // destroyed below: the expected end of this request
    req.on('close', () => resolve());
    req.on('continue', () => req.write(body.slice(0, 50), () => req.destroy()));
  });
  const lines = () => captured.lines.map((l) => JSON.parse(l) as { level: number; msg: string });
  await waitFor(lines, (ls) => ls.some((l) => l.msg === 'request aborted'));
  const after = await post(t.url, body, { 'content-type': 'application/json' });
  expect(after.status).toBe(200);
  expect(after.text).toBe(cached);
  // The abort is the client's doing: an info line, not "request failed" at error level and a 500.
  expect(lines().filter((l) => l.level >= 50)).toEqual([]);
});
