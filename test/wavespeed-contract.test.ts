import { getEventListeners } from 'node:events';
import type { IncomingHttpHeaders, IncomingMessage, ServerResponse } from 'node:http';
import { describe, expect, test, vi } from 'vitest';
import {
  MAX_UPSTREAM_BODY_BYTES,
  MODEL,
  UpstreamError,
  type UpstreamObservation,
  WaveSpeedClient,
  type WaveSpeedClientOptions,
  upstreamEndpoint,
} from '../src/upstream/wavespeed.js';
import { listen } from './helpers/listen.js';
import { freePort } from './helpers/process.js';
import { must } from './helpers/must.js';

/**
 * The WaveSpeed v3 client's contract, each part against a loopback server that records what it was
 * sent: the request shapes (paths, methods, headers, bodies), the reading of records, the body size
 * cap at its exact limit, and the classification of every failure (kind, status, message).
 */

interface Seen {
  method: string;
  url: string;
  headers: IncomingHttpHeaders;
  body: Buffer;
}

/** A loopback server that records every request and answers with `answer`. */
async function recorder(answer: (res: ServerResponse, seen: Seen, req: IncomingMessage) => void) {
  const seen: Seen[] = [];
  const url = await listen((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (d: Buffer) => chunks.push(d));
    req.on('end', () => {
      const s = { method: must(req.method), url: must(req.url), headers: req.headers, body: Buffer.concat(chunks) };
      seen.push(s);
      answer(res, s, req);
    });
  });
  return { url, seen };
}

const envelope = (data: unknown, code = 200, message: string | null = 'success') => JSON.stringify({ code, message, data });
const answerWith =
  (data: unknown) =>
  (res: ServerResponse): void =>
    void res.writeHead(200, { 'content-type': 'application/json' }).end(envelope(data));

const fullRecord = {
  id: 'task-1',
  model: 'minimax/video-01',
  status: 'completed',
  outputs: ['https://cdn.example/a.mp4'],
  urls: { get: 'https://api.example/api/v3/predictions/task-1/result' },
  has_nsfw_contents: [false],
  created_at: '2026-11-29T00:00:00.000Z',
  error: 'boom',
  timings: { inference: 1234 },
  input: { prompt: 'a cat', image: 'https://img.example/a.png', seed: 7 },
};

const client = (baseUrl: WaveSpeedClientOptions['baseUrl'], more: Partial<WaveSpeedClientOptions> = {}) =>
  new WaveSpeedClient({ baseUrl, apiKey: 'test-key-123', timeoutMs: 5000, ...more });

async function failure(p: Promise<unknown>): Promise<UpstreamError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(UpstreamError);
  return err as UpstreamError;
}

describe('upstreamEndpoint names each route without its ids or query', () => {
  test.each([
    ['/api/v3/minimax/video-01', 'submit'],
    ['/api/v3/minimax/video-01?webhook=http%3A%2F%2Fh', 'submit'],
    ['/api/v3/predictions', 'list'],
    ['/api/v3/predictions?page=2', 'list'],
    ['/api/v3/predictions/delete', 'delete'],
    ['/api/v3/predictions/abc-123/result', 'result'],
    ['/api/v3/predictions/abc-123/result?x=1', 'result'],
    ['/api/v3/media/upload/binary', 'upload'],
    ['/api/v3/webhook/secret', 'webhook_secret'],
    // Anchored and exact: a prefix, a suffix, an empty id or a nested id is none of them.
    ['/sandbox/api/v3/predictions/abc/result', 'other'],
    ['/api/v3/predictions/abc/result/more', 'other'],
    ['/api/v3/predictions//result', 'other'],
    ['/api/v3/predictions/a/b/result', 'other'],
    ['/api/v3/predictions/', 'other'],
    ['/api/v3/minimax/video-01/x', 'other'],
    ['/api/v3/media/upload', 'other'],
    ['/api/v3/webhook/secret/', 'other'],
    ['', 'other'],
  ])('%s is %s', (path, endpoint) => {
    expect(upstreamEndpoint(path)).toBe(endpoint);
  });
});

describe('UpstreamError', () => {
  test('is named, and transient unless an HTTP status says a retry cannot help', () => {
    const e = new UpstreamError('http', 'msg', 400, 1500, 'X');
    expect(e).toBeInstanceOf(Error);
    expect(e.name).toBe('UpstreamError');
    expect(e.message).toBe('msg');
    expect([e.status, e.retryAfterMs, e.networkCode]).toEqual([400, 1500, 'X']);
    expect(e.transient).toBe(false);
    for (const status of [408, 429, 500, 503]) expect(new UpstreamError('http', 'm', status).transient).toBe(true);
    for (const status of [400, 401, 404, 422]) expect(new UpstreamError('http', 'm', status).transient).toBe(false);
    // An HTTP error without a status is not known to be retryable.
    expect(new UpstreamError('http', 'm').transient).toBe(false);
    for (const kind of ['network', 'timeout', 'protocol'] as const) expect(new UpstreamError(kind, 'm', 400).transient).toBe(true);
  });

  test.each(['ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH', 'ENETUNREACH', 'EADDRNOTAVAIL', 'UND_ERR_CONNECT_TIMEOUT'])(
    'a network failure %s happens before anything is sent',
    (code) => {
      expect(new UpstreamError('network', 'm', undefined, undefined, code).notSent).toBe(true);
      // The same code on another kind says nothing about what was sent.
      expect(new UpstreamError('timeout', 'm', undefined, undefined, code).notSent).toBe(false);
      expect(new UpstreamError('http', 'm', 500, undefined, code).notSent).toBe(false);
    },
  );

  test('a reset, a broken pipe or an unknown failure may have reached upstream', () => {
    for (const code of ['ECONNRESET', 'EPIPE', 'UND_ERR_SOCKET', '', undefined]) {
      expect(new UpstreamError('network', 'm', undefined, undefined, code).notSent).toBe(false);
    }
  });
});

describe('requests: paths, methods, headers and bodies', () => {
  test('submit posts the JSON body with Bearer auth, and the webhook only in the query', async () => {
    const up = await recorder(answerWith({ id: 't1', status: 'created' }));
    const c = client(up.url);
    await c.submit({ prompt: 'p', image: 'https://img.example/a.png', enablePromptExpansion: false }, { webhook: 'http://h/w?t=1&u=2' });
    await c.submit({ prompt: 'q', enablePromptExpansion: true });
    const [withHook, plain] = up.seen;
    expect(withHook?.method).toBe('POST');
    expect(withHook?.url).toBe('/api/v3/minimax/video-01?webhook=http%3A%2F%2Fh%2Fw%3Ft%3D1%26u%3D2');
    expect(withHook?.headers.authorization).toBe('Bearer test-key-123');
    expect(withHook?.headers.accept).toBe('application/json');
    expect(withHook?.headers['content-type']).toBe('application/json');
    expect(JSON.parse(String(withHook?.body))).toStrictEqual({ prompt: 'p', enable_prompt_expansion: false, image: 'https://img.example/a.png' });
    // No webhook: no query at all; no image: no image key.
    expect(plain?.url).toBe('/api/v3/minimax/video-01');
    expect(JSON.parse(String(plain?.body))).toStrictEqual({ prompt: 'q', enable_prompt_expansion: true });
    expect(up.seen).toHaveLength(2);
  });

  test('an empty webhook is no webhook', async () => {
    const up = await recorder(answerWith({ id: 't1', status: 'created' }));
    await client(up.url).submit({ prompt: 'p', enablePromptExpansion: false }, { webhook: '' });
    expect(up.seen[0]?.url).toBe('/api/v3/minimax/video-01');
  });

  test('getResult GETs the encoded id without a body or a content type', async () => {
    const up = await recorder(answerWith({ id: 'a/b?c', status: 'processing' }));
    const r = await client(up.url).getResult('a/b?c');
    expect(r.id).toBe('a/b?c');
    expect(up.seen[0]).toMatchObject({ method: 'GET', url: '/api/v3/predictions/a%2Fb%3Fc/result' });
    expect(up.seen[0]?.headers.authorization).toBe('Bearer test-key-123');
    expect(up.seen[0]?.headers.accept).toBe('application/json');
    expect(up.seen[0]?.headers['content-type']).toBeUndefined();
    expect(up.seen[0]?.body.length).toBe(0);
  });

  test('listPredictions posts the page and its size, and maps every item', async () => {
    const up = await recorder(answerWith({ page: 3, items: [fullRecord, { id: 'task-0', status: 'created' }] }));
    const items = await client(up.url).listPredictions(3, 50);
    expect(up.seen[0]).toMatchObject({ method: 'POST', url: '/api/v3/predictions' });
    expect(up.seen[0]?.headers['content-type']).toBe('application/json');
    expect(JSON.parse(String(up.seen[0]?.body))).toStrictEqual({ page: 3, page_size: 50 });
    expect(items.map((i) => [i.id, i.status])).toEqual([
      ['task-1', 'completed'],
      ['task-0', 'created'],
    ]);
    expect(items[0]?.input).toEqual({ prompt: 'a cat', image: 'https://img.example/a.png', seed: 7 });
  });

  test('a list without items, or with null items, is an empty page; a list that is not an object is refused', async () => {
    expect(await client((await recorder(answerWith({ page: 1 }))).url).listPredictions(1, 10)).toEqual([]);
    expect(await client((await recorder(answerWith({ page: null, items: null }))).url).listPredictions(1, 10)).toEqual([]);
    const notAList = await failure(client((await recorder(answerWith('nope'))).url).listPredictions(1, 10));
    expect(notAList).toMatchObject({ kind: 'protocol', message: 'upstream answered POST /api/v3/predictions without a list of predictions' });
    const badPage = await failure(client((await recorder(answerWith({ page: 'one', items: [] }))).url).listPredictions(1, 10));
    expect(badPage.message).toBe('upstream answered POST /api/v3/predictions without a list of predictions');
    const badItems = await failure(client((await recorder(answerWith({ items: 'x' }))).url).listPredictions(1, 10));
    expect(badItems.kind).toBe('protocol');
    const badItem = await failure(client((await recorder(answerWith({ items: [{ status: 'created' }] }))).url).listPredictions(1, 10));
    expect(badItem).toMatchObject({ kind: 'protocol', message: 'upstream answered POST /api/v3/predictions without a valid prediction record' });
  });

  test('deletePredictions posts the ids', async () => {
    const up = await recorder(answerWith(null));
    await expect(client(up.url).deletePredictions(['a', 'b'])).resolves.toBeUndefined();
    expect(up.seen[0]).toMatchObject({ method: 'POST', url: '/api/v3/predictions/delete' });
    expect(up.seen[0]?.headers['content-type']).toBe('application/json');
    expect(JSON.parse(String(up.seen[0]?.body))).toStrictEqual({ ids: ['a', 'b'] });
  });

  test('deletePredictions fails as the request does', async () => {
    const up = await recorder((res) => void res.writeHead(200).end(envelope(null, 404, 'no such task')));
    expect(await failure(client(up.url).deletePredictions(['a']))).toMatchObject({ kind: 'http', status: 404, message: 'upstream answered code 404: no such task' });
  });

  test('uploadMedia sends the bytes as multipart `file` with its name and type, and returns the download URL', async () => {
    const up = await recorder(answerWith({ download_url: 'https://media.example/u/1.png', filename: 'x' }));
    const bytes = new Uint8Array([0, 1, 2, 250, 255, 10, 13]);
    const url = await client(up.url).uploadMedia(bytes, 'pic.png', 'image/png');
    expect(url).toBe('https://media.example/u/1.png');
    const seen = must(up.seen[0]);
    expect(seen).toMatchObject({ method: 'POST', url: '/api/v3/media/upload/binary' });
    expect(seen.headers.authorization).toBe('Bearer test-key-123');
    expect(seen.headers.accept).toBe('application/json');
    expect(seen.headers['content-type']).toMatch(/^multipart\/form-data; boundary=/);
    const form = await new Response(new Uint8Array(seen.body), { headers: { 'content-type': must(seen.headers['content-type']) } }).formData();
    expect([...form.keys()]).toEqual(['file']);
    const file = form.get('file') as File;
    expect(file.name).toBe('pic.png');
    expect(file.type).toBe('image/png');
    expect(new Uint8Array(await file.arrayBuffer())).toEqual(bytes);
  });

  test('uploadMedia refuses an answer without a usable download URL', async () => {
    for (const data of [null, {}, { download_url: 5 }, { download_url: 'not a url' }, { download_url: ['https://media.example/a'] }, 'https://media.example/a']) {
      const err = await failure(client((await recorder(answerWith(data))).url).uploadMedia(new Uint8Array([1]), 'a.png', 'image/png'));
      expect(err).toMatchObject({ kind: 'protocol', message: 'upstream answered POST /api/v3/media/upload/binary without a download_url' });
    }
  });

  test('an upload is given at least two minutes, or the client timeout when that is longer', async () => {
    const up = await recorder(answerWith({ download_url: 'https://media.example/a' }));
    // The client's one deadline timer per request (its callback is `onDeadline`; undici and the server set timers of their own).
    const timeout = vi.spyOn(globalThis, 'setTimeout');
    try {
      await client(up.url, { timeoutMs: 1000 }).uploadMedia(new Uint8Array([1]), 'a.png', 'image/png');
      await client(up.url, { timeoutMs: 300_000 }).uploadMedia(new Uint8Array([1]), 'a.png', 'image/png');
      await client(up.url, { timeoutMs: 1000 }).deletePredictions(['x']);
      expect(timeout.mock.calls.filter(([fn]) => fn.name === 'onDeadline').map(([, ms]) => ms)).toEqual([120_000, 300_000, 1000]);
    } finally {
      timeout.mockRestore();
    }
  });

  test('getWebhookSecret takes the secret as a string or as `secret`, of 8 characters at least', async () => {
    const up = await recorder(answerWith('whsec_ab'));
    expect(await client(up.url).getWebhookSecret()).toBe('whsec_ab');
    expect(up.seen[0]).toMatchObject({ method: 'GET', url: '/api/v3/webhook/secret' });
    expect(up.seen[0]?.headers['content-type']).toBeUndefined();
    expect(await client((await recorder(answerWith({ secret: 'whsec_0123456789' }))).url).getWebhookSecret()).toBe('whsec_0123456789');
    for (const data of ['whsec_a', { secret: 'whsec_a' }, { secret: 12345678 }, null, {}, 12345678]) {
      const err = await failure(client((await recorder(answerWith(data))).url).getWebhookSecret());
      expect(err).toMatchObject({ kind: 'protocol', message: 'upstream answered GET /api/v3/webhook/secret without a secret' });
    }
  });

  test('trailing slashes of the base URL are dropped, and a path prefix kept', async () => {
    const up = await recorder(answerWith({ id: 't', status: 'created' }));
    await client(`${up.url}/sandbox///`).getResult('t');
    await client(`${up.url}/`).getResult('t');
    expect(up.seen.map((s) => s.url)).toEqual(['/sandbox/api/v3/predictions/t/result', '/api/v3/predictions/t/result']);
  });

  test('a late-bound base URL is asked for at the first request, once, and trimmed', async () => {
    const up = await recorder(answerWith({ id: 't', status: 'created' }));
    let asked = 0;
    const c = client(() => {
      asked++;
      return `${up.url}/p//`;
    });
    expect(asked).toBe(0);
    await c.getResult('t');
    await c.getResult('u');
    expect(asked).toBe(1);
    expect(up.seen.map((s) => s.url)).toEqual(['/p/api/v3/predictions/t/result', '/p/api/v3/predictions/u/result']);
  });

  test('a redirect is not followed: it is an HTTP error', async () => {
    const up = await recorder((res, seen) => {
      if (seen.url === '/elsewhere') return void res.end(envelope({ id: 't', status: 'created' }));
      res.writeHead(302, { location: '/elsewhere' }).end();
    });
    const err = await failure(client(up.url).submit({ prompt: 'p', enablePromptExpansion: false }));
    expect(err).toMatchObject({ kind: 'http', status: 302, transient: false });
    expect(up.seen.map((s) => s.url)).toEqual(['/api/v3/minimax/video-01']);
  });
});

describe('records are read in our naming', () => {
  test('every field is carried over', async () => {
    const r = await client((await recorder(answerWith(fullRecord))).url).getResult('task-1');
    expect(r).toStrictEqual({
      id: 'task-1',
      model: 'minimax/video-01',
      status: 'completed',
      outputs: ['https://cdn.example/a.mp4'],
      hasNsfwContents: [false],
      urlsGet: 'https://api.example/api/v3/predictions/task-1/result',
      createdAt: '2026-11-29T00:00:00.000Z',
      error: 'boom',
      inferenceMs: 1234,
      input: { prompt: 'a cat', image: 'https://img.example/a.png', seed: 7 },
    });
  });

  test('absent, null and empty fields become defaults or undefined', async () => {
    const minimal = await client((await recorder(answerWith({ id: 'm', status: 'created' }))).url).getResult('m');
    expect(minimal).toStrictEqual({
      id: 'm',
      model: MODEL,
      status: 'created',
      outputs: [],
      hasNsfwContents: [],
      urlsGet: undefined,
      createdAt: undefined,
      error: undefined,
      inferenceMs: undefined,
      input: undefined,
    });
    const nulls = await client(
      (
        await recorder(
          answerWith({ id: 'n', model: 'other/model', status: 'failed', outputs: null, urls: null, has_nsfw_contents: null, created_at: null, error: '', timings: null, input: null }),
        )
      ).url,
    ).getResult('n');
    expect(nulls).toStrictEqual({
      id: 'n',
      model: 'other/model',
      status: 'failed',
      outputs: [],
      hasNsfwContents: [],
      urlsGet: undefined,
      createdAt: undefined,
      error: undefined,
      inferenceMs: undefined,
      input: undefined,
    });
    const partial = await client((await recorder(answerWith({ id: 'p', status: 'processing', urls: {}, timings: {}, input: {} }))).url).getResult('p');
    expect(partial).toMatchObject({ urlsGet: undefined, inferenceMs: undefined, input: {} });
    const nullGet = await client((await recorder(answerWith({ id: 'q', status: 'processing', urls: { get: null }, timings: { inference: null } }))).url).getResult('q');
    expect(nullGet).toMatchObject({ urlsGet: undefined, inferenceMs: undefined });
  });

  test.each([
    ['no id', { status: 'created' }],
    ['an empty id', { id: '', status: 'created' }],
    ['no status', { id: 'x' }],
    ['outputs that are not strings', { id: 'x', status: 'created', outputs: [1] }],
    ['a non-string model', { id: 'x', model: 5, status: 'created' }],
    ['nsfw flags that are not booleans', { id: 'x', status: 'created', has_nsfw_contents: ['no'] }],
    ['a non-string created_at', { id: 'x', status: 'created', created_at: 5 }],
    ['a non-string error', { id: 'x', status: 'created', error: 5 }],
    ['a non-numeric inference time', { id: 'x', status: 'created', timings: { inference: 'slow' } }],
    ['a non-string result URL', { id: 'x', status: 'created', urls: { get: 5 } }],
    ['an input that is not an object', { id: 'x', status: 'created', input: 'p' }],
    ['no data', undefined],
  ])('a record with %s is a protocol error naming the route', async (_what, data) => {
    const up = await recorder((res) => void res.end(JSON.stringify({ code: 200, message: 'success', ...(data === undefined ? {} : { data }) })));
    const err = await failure(client(up.url).getResult('x'));
    expect(err).toMatchObject({ kind: 'protocol', transient: true, message: 'upstream answered GET /api/v3/predictions/x/result without a valid prediction record' });
  });

  test('a submission answered without a record names the route without its query', async () => {
    const up = await recorder(answerWith({ status: 'created' }));
    const err = await failure(client(up.url).submit({ prompt: 'p', enablePromptExpansion: false }, { webhook: 'http://h/w?token=secret' }));
    expect(err.message).toBe('upstream answered POST /api/v3/minimax/video-01 without a valid prediction record');
  });
});

describe('answers that are errors', () => {
  test('an HTTP error says upstream’s message, else the start of its body, else the status text', async () => {
    const withMessage = await recorder((res) => void res.writeHead(500).end(envelope(null, 500, 'internal trouble')));
    expect(await failure(client(withMessage.url).getResult('a'))).toMatchObject({
      kind: 'http',
      status: 500,
      transient: true,
      retryAfterMs: undefined,
      message: 'upstream answered HTTP 500: internal trouble',
    });
    const long = 'x'.repeat(150) + 'y'.repeat(150);
    const plain = await recorder((res) => void res.writeHead(502).end(long));
    expect((await failure(client(plain.url).getResult('a'))).message).toBe(`upstream answered HTTP 502: ${long.slice(0, 200)}`);
    const emptyMessage = await recorder((res) => void res.writeHead(400).end(envelope(null, 400, '')));
    expect((await failure(client(emptyMessage.url).getResult('a'))).message).toBe(`upstream answered HTTP 400: ${envelope(null, 400, '')}`);
    const empty = await recorder((res) => void res.writeHead(503).end());
    expect(await failure(client(empty.url).getResult('a'))).toMatchObject({ status: 503, message: 'upstream answered HTTP 503: Service Unavailable' });
  });

  test('Retry-After comes with an HTTP error and with an error code in a 200 envelope', async () => {
    const http = await recorder((res) => void res.writeHead(429, { 'retry-after': '7' }).end('slow down'));
    expect(await failure(client(http.url).getResult('a'))).toMatchObject({ kind: 'http', status: 429, retryAfterMs: 7000, message: 'upstream answered HTTP 429: slow down' });
    const coded = await recorder((res) => void res.writeHead(200, { 'retry-after': '2' }).end(envelope(null, 429, 'too many')));
    expect(await failure(client(coded.url).getResult('a'))).toMatchObject({ kind: 'http', status: 429, retryAfterMs: 2000, transient: true, message: 'upstream answered code 429: too many' });
  });

  test('an error code without a message says so', async () => {
    const up = await recorder((res) => void res.end(JSON.stringify({ code: 401 })));
    expect(await failure(client(up.url).getResult('a'))).toMatchObject({ kind: 'http', status: 401, transient: false, message: 'upstream answered code 401: no message' });
    const nullMessage = await recorder((res) => void res.end(envelope({ id: 'x', status: 'created' }, 422, null)));
    expect((await failure(client(nullMessage.url).getResult('a'))).message).toBe('upstream answered code 422: no message');
  });

  test('a 200 whose body is not a v3 envelope is a protocol error naming the route without its query', async () => {
    for (const body of ['<html>oops', '{"message":"success","data":{}}', '{"code":"200","data":{}}', '{"code":200,"message":5}', '[]', '']) {
      const up = await recorder((res) => void res.end(body));
      const err = await failure(client(up.url).submit({ prompt: 'p', enablePromptExpansion: false }, { webhook: 'http://h/w?token=secret' }));
      expect(err).toMatchObject({ kind: 'protocol', status: undefined, message: 'upstream answered POST /api/v3/minimax/video-01 with a body that is not a v3 envelope' });
    }
  });

  test('a 204 has no body: a protocol error, not a crash', async () => {
    const up = await recorder((res) => void res.writeHead(204).end());
    expect(await failure(client(up.url).getResult('a'))).toMatchObject({ kind: 'protocol', message: 'upstream answered GET /api/v3/predictions/a/result with a body that is not a v3 envelope' });
  });

  test('a 304 has no body either: its status text is the detail', async () => {
    const up = await recorder((res) => void res.writeHead(304).end());
    expect(await failure(client(up.url).getResult('a'))).toMatchObject({ kind: 'http', status: 304, message: 'upstream answered HTTP 304: Not Modified' });
  });

  test('a bodiless answer declaring a length over the cap is refused by its size, not a crash', async () => {
    const up = await recorder((res) => void res.writeHead(204, { 'content-length': 2_000_000 }).end());
    expect(await failure(client(up.url).getResult('a'))).toMatchObject({ kind: 'protocol', status: 204, message: 'upstream sent a body of 2000000 bytes; at most 1048576 are read' });
  });

  test('an API key that upstream echoes is redacted, every time it appears', async () => {
    const key = 'k3y-4567';
    const up = await recorder((res) => void res.writeHead(401).end(envelope(null, 401, `bad key ${key}; again ${key}`)));
    expect((await failure(client(up.url, { apiKey: key }).getResult('a'))).message).toBe('upstream answered HTTP 401: bad key [redacted]; again [redacted]');
    // A key shorter than 8 characters is not looked for: replacing so short a string could mangle any message.
    const short = await recorder((res) => void res.writeHead(401).end(envelope(null, 401, 'bad key k3y-456')));
    expect((await failure(client(short.url, { apiKey: 'k3y-456' }).getResult('a'))).message).toBe('upstream answered HTTP 401: bad key k3y-456');
  });

  test('a body that is not UTF-8 across chunk boundaries is still read as one text', async () => {
    const message = 'é'.repeat(1000);
    const bytes = Buffer.from(envelope(null, 400, message));
    const up = await recorder((res) => {
      res.writeHead(200);
      // Split inside a two-byte character, in small writes.
      for (let i = 0; i < bytes.length; i += 333) res.write(bytes.subarray(i, i + 333));
      res.end();
    });
    expect((await failure(client(up.url).getResult('a'))).message).toBe(`upstream answered code 400: ${message}`);
  });
});

describe('network failures, timeouts and cancellation', () => {
  test('a refused connection is a network error that was certainly not sent', async () => {
    const closed = `http://127.0.0.1:${await freePort()}`;
    const err = await failure(client(closed).getResult('a'));
    expect(err).toMatchObject({ kind: 'network', networkCode: 'ECONNREFUSED', notSent: true, transient: true, status: undefined });
    expect(err.message).toMatch(/^GET \/api\/v3\/predictions\/a\/result: connect ECONNREFUSED 127\.0\.0\.1:\d+$/);
  });

  test('a connection reset after the request was sent may have reached upstream', async () => {
    const up = await recorder((_res, _seen, req) => req.socket.destroy());
    const err = await failure(client(up.url).submit({ prompt: 'p', enablePromptExpansion: false }, { webhook: 'http://h/?token=t' }));
    expect(err.kind).toBe('network');
    expect(err.notSent).toBe(false);
    expect(err.message).toMatch(/^POST \/api\/v3\/minimax\/video-01: /);
    expect(err.message).not.toContain('token');
  });

  test('an error with its own code, or with none, from the fetch', async () => {
    const own = client('http://127.0.0.1:1', { request: async () => Promise.reject(Object.assign(new Error('boom'), { code: 'EPIPE' })) });
    expect(await failure(own.deletePredictions(['x']))).toMatchObject({ kind: 'network', networkCode: 'EPIPE', message: 'POST /api/v3/predictions/delete: boom (EPIPE)' });
    const none = client('http://127.0.0.1:1', { request: async () => Promise.reject(new Error('plain')) });
    expect(await failure(none.getWebhookSecret())).toMatchObject({ kind: 'network', networkCode: undefined, message: 'GET /api/v3/webhook/secret: plain' });
  });

  test('an abort that is not ours is a timeout', async () => {
    const c = client('http://127.0.0.1:1', { request: async () => Promise.reject(new DOMException('aborted', 'AbortError')) });
    expect(await failure(c.getResult('a'))).toMatchObject({ kind: 'timeout', transient: true, message: 'GET /api/v3/predictions/a/result: no answer within 5000 ms' });
  });

  test('no answer within the timeout is a timeout naming the limit', async () => {
    const silent = await listen(() => {});
    const err = await failure(client(silent, { timeoutMs: 100 }).submit({ prompt: 'p', enablePromptExpansion: false }, { webhook: 'http://h/?token=t' }));
    expect(err).toMatchObject({ kind: 'timeout', transient: true, notSent: false, message: 'POST /api/v3/minimax/video-01: no answer within 100 ms' });
  });

  test('a body that stalls after the headers times out too', async () => {
    const stalls = await listen((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.write('{"code":200,');
    });
    expect(await failure(client(stalls, { timeoutMs: 100 }).getResult('a'))).toMatchObject({ kind: 'timeout' });
  });

  test.each([
    ['getResult', (c: WaveSpeedClient, signal: AbortSignal) => c.getResult('a', { signal }), 'GET /api/v3/predictions/a/result'],
    ['listPredictions', (c: WaveSpeedClient, signal: AbortSignal) => c.listPredictions(1, 10, { signal }), 'POST /api/v3/predictions'],
    ['uploadMedia', (c: WaveSpeedClient, signal: AbortSignal) => c.uploadMedia(new Uint8Array([1]), 'a.png', 'image/png', { signal }), 'POST /api/v3/media/upload/binary'],
    ['deletePredictions', (c: WaveSpeedClient, signal: AbortSignal) => c.deletePredictions(['a'], { signal }), 'POST /api/v3/predictions/delete'],
    ['getWebhookSecret', (c: WaveSpeedClient, signal: AbortSignal) => c.getWebhookSecret({ signal }), 'GET /api/v3/webhook/secret'],
  ])('%s stops when its signal aborts (shutdown), as a network error', async (_name, call, route) => {
    let arrive = () => {};
    const arrived = new Promise<void>((r) => (arrive = r));
    const silent = await listen(() => arrive());
    const ac = new AbortController();
    const pending = failure(call(client(silent, { timeoutMs: 30_000 }), ac.signal));
    await arrived;
    ac.abort();
    expect(await pending).toMatchObject({ kind: 'network', transient: true, message: `${route}: cancelled (shutting down)` });
  });
});

describe('what a request leaves behind', () => {
  test('a signal aborted before the call sends nothing', async () => {
    const up = await recorder(answerWith({ id: 'x', status: 'created' }));
    const ac = new AbortController();
    ac.abort();
    expect(await failure(client(up.url).getResult('a', { signal: ac.signal }))).toMatchObject({ kind: 'network', message: 'GET /api/v3/predictions/a/result: cancelled (shutting down)' });
    expect(up.seen).toEqual([]);
  });

  test('once answered, its deadline timer is cleared and its listener taken off the shutdown signal', async () => {
    const up = await recorder(answerWith({ id: 'x', status: 'created' }));
    const ac = new AbortController();
    const set = vi.spyOn(globalThis, 'setTimeout');
    const cleared = vi.spyOn(globalThis, 'clearTimeout');
    try {
      await client(up.url).getResult('a', { signal: ac.signal });
      const deadline = set.mock.results[set.mock.calls.findIndex(([fn]) => fn.name === 'onDeadline')]?.value;
      expect(deadline).toBeDefined();
      expect(cleared.mock.calls.some(([t]) => t === deadline)).toBe(true);
    } finally {
      set.mockRestore();
      cleared.mockRestore();
    }
    expect(getEventListeners(ac.signal, 'abort')).toEqual([]);
    // A failed request leaves nothing behind either.
    await failure(client(`http://127.0.0.1:${await freePort()}`).getResult('a', { signal: ac.signal }));
    expect(getEventListeners(ac.signal, 'abort')).toEqual([]);
  });

  test('any 2xx is an answer (299 too); an unnamed status with no body says just its number', async () => {
    const ok = await recorder((res) => res.writeHead(299, { 'content-type': 'application/json' }).end(envelope({ id: 'x', status: 'created' })));
    expect(await client(ok.url).getResult('x')).toMatchObject({ id: 'x', status: 'created' });
    const odd = await recorder((res) => res.writeHead(599).end());
    expect(await failure(client(odd.url).getResult('x'))).toMatchObject({ kind: 'http', status: 599, message: 'upstream answered HTTP 599: ' });
  });
});

describe('bodies are read up to exactly 1 MiB', () => {
  /** A valid envelope of exactly `size` bytes (padded with spaces inside the JSON). */
  const envelopeOf = (size: number) => {
    const body = envelope({ id: 'big', status: 'created' });
    return Buffer.from(body.slice(0, -1) + ' '.repeat(size - Buffer.byteLength(body)) + body.slice(-1));
  };

  test('a declared length of exactly the limit is read; one byte more is refused unread', async () => {
    expect(MAX_UPSTREAM_BODY_BYTES).toBe(1024 * 1024);
    const exact = await recorder((res) => void res.writeHead(200, { 'content-length': MAX_UPSTREAM_BODY_BYTES }).end(envelopeOf(MAX_UPSTREAM_BODY_BYTES)));
    expect((await client(exact.url).getResult('big')).id).toBe('big');
    const over = await recorder((res) => {
      res.writeHead(201, { 'content-length': MAX_UPSTREAM_BODY_BYTES + 1 });
      // Only the start is ever written: a client that waited for the rest would time out.
      res.write('{"code":200');
    });
    expect(await failure(client(over.url, { timeoutMs: 10_000 }).getResult('big'))).toMatchObject({
      kind: 'protocol',
      status: 201,
      message: 'upstream sent a body of 1048577 bytes; at most 1048576 are read',
    });
  });

  test('an undeclared (chunked) body of exactly the limit is read; one byte more is cut off', async () => {
    const send = (size: number) => (res: ServerResponse) => {
      const body = envelopeOf(size);
      res.writeHead(200, { 'content-type': 'application/json' });
      for (let i = 0; i < body.length; i += 64 * 1024) res.write(body.subarray(i, i + 64 * 1024));
      res.end();
    };
    const exact = await recorder(send(MAX_UPSTREAM_BODY_BYTES));
    expect((await client(exact.url).getResult('big')).id).toBe('big');
    const over = await recorder(send(MAX_UPSTREAM_BODY_BYTES + 1));
    expect(await failure(client(over.url).getResult('big'))).toMatchObject({
      kind: 'protocol',
      status: 200,
      message: 'upstream sent a body of over 1048576 bytes; at most 1048576 are read',
    });
  });

  test('an HTTP error with an oversized body is refused by its size first', async () => {
    const over = await recorder((res) => void res.writeHead(500, { 'content-length': 5 * 1024 * 1024 }).write('x'));
    expect(await failure(client(over.url).getResult('a'))).toMatchObject({ kind: 'protocol', status: 500, message: 'upstream sent a body of 5242880 bytes; at most 1048576 are read' });
  });
});

describe('observe: every request reported once it is done', () => {
  test('names the endpoint of each call, with its duration, and its error when it failed', async () => {
    const up = await recorder((res, seen) => {
      const path = seen.url.split('?')[0];
      if (path === '/api/v3/predictions/missing/result') return void res.writeHead(404).end(envelope(null, 404, 'not found'));
      if (path === '/api/v3/predictions') return void res.end(envelope({ items: [] }));
      if (path === '/api/v3/media/upload/binary') return void res.end(envelope({ download_url: 'https://m.example/a' }));
      if (path === '/api/v3/webhook/secret') return void res.end(envelope('whsec_12345678'));
      if (path === '/api/v3/predictions/delete') return void res.end(envelope(null));
      res.end(envelope({ id: 't', status: 'created' }));
    });
    const seen: UpstreamObservation[] = [];
    const c = client(up.url, { observe: (o) => seen.push(o) });
    const started = performance.now();
    await c.submit({ prompt: 'p', enablePromptExpansion: false }, { webhook: 'http://h/' });
    await c.getResult('t');
    await c.listPredictions(1, 1);
    await c.uploadMedia(new Uint8Array([1]), 'a.png', 'image/png');
    await c.deletePredictions(['t']);
    await c.getWebhookSecret();
    const err = await failure(c.getResult('missing'));
    const elapsed = performance.now() - started;
    expect(seen.map((o) => o.endpoint)).toEqual(['submit', 'result', 'list', 'upload', 'delete', 'webhook_secret', 'result']);
    expect(seen.slice(0, -1).map((o) => o.error)).toEqual([undefined, undefined, undefined, undefined, undefined, undefined]);
    expect(seen.at(-1)?.error).toBe(err);
    expect(err).toMatchObject({ kind: 'http', status: 404 });
    for (const o of seen) {
      expect(o.durationMs).toBeGreaterThanOrEqual(0);
      expect(o.durationMs).toBeLessThanOrEqual(elapsed);
    }
    expect(Object.keys(must(seen[0])).sort()).toEqual(['durationMs', 'endpoint', 'error']);
  });

  test('a network failure is reported and still thrown', async () => {
    const seen: UpstreamObservation[] = [];
    const c = client(`http://127.0.0.1:${await freePort()}`, { observe: (o) => seen.push(o) });
    const err = await failure(c.getResult('a'));
    expect(seen).toHaveLength(1);
    expect(seen[0]).toMatchObject({ endpoint: 'result', error: err });
  });

  test('without observe, requests still work (nothing wraps them)', async () => {
    const up = await recorder(answerWith({ id: 't', status: 'created' }));
    expect((await client(up.url).getResult('t')).id).toBe('t');
  });
});
