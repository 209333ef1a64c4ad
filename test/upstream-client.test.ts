import { describe, expect, test } from 'vitest';
import { systemClock } from '../src/clock.js';
import { parseRetryAfter } from '../src/http-helpers.js';
import { UpstreamError, WaveSpeedClient } from '../src/upstream/wavespeed.js';
import { startApp } from './helpers/app.js';
import { listen } from './helpers/listen.js';
import { freePort } from './helpers/process.js';
import { must } from './helpers/must.js';


const client = (baseUrl: string, apiKey = 'k', timeoutMs = 2000) => new WaveSpeedClient({ baseUrl, apiKey, timeoutMs });

async function failure(p: Promise<unknown>): Promise<UpstreamError> {
  const err = await p.then(() => undefined, (e) => e);
  expect(err).toBeInstanceOf(UpstreamError);
  return err as UpstreamError;
}

describe('WaveSpeedClient against the sandbox', () => {
  test('submits, then reads the record back in our naming', async () => {
    // The sandbox's time stands still until the test moves it: a task is 'created' for its first
    // fifth, then 'processing', then 'completed', however slow the machine is between requests.
    const base = Date.now();
    let offset = 0;
    const clock = { now: () => new Date(base + offset), setTimeout: systemClock.setTimeout };
    const { url } = await startApp({ SANDBOX_TASK_SECONDS: '10' }, { clock });
    const c = client(`${url}/sandbox/`);
    const submitted = await c.submit({ prompt: 'x', enablePromptExpansion: false });
    expect(submitted).toMatchObject({ model: 'minimax/video-01', status: 'created', outputs: [], hasNsfwContents: [] });
    expect(submitted.urlsGet).toBe(`${url}/sandbox/api/v3/predictions/${submitted.id}/result`);
    expect(await c.getResult(submitted.id)).toMatchObject({ id: submitted.id, status: 'created', outputs: [] });
    offset = 2_000; // a fifth of the 10 s task
    expect(await c.getResult(submitted.id)).toMatchObject({ id: submitted.id, status: 'processing', outputs: [] });
    offset = 10_000;
    const done = await c.getResult(submitted.id);
    expect(done).toMatchObject({ id: submitted.id, status: 'completed', hasNsfwContents: [false] });
    expect(done.outputs).toEqual([`${url}/sandbox/media/${submitted.id}.mp4`]);
  });

  test('an empty key is a permanent 401; an unknown id a permanent 404', async () => {
    const { url } = await startApp();
    const noKey = await failure(client(`${url}/sandbox`, '').submit({ prompt: 'x', enablePromptExpansion: true }));
    expect(noKey).toMatchObject({ kind: 'http', status: 401, transient: false });
    const unknown = await failure(client(`${url}/sandbox`).getResult('sbx-nope'));
    expect(unknown).toMatchObject({ kind: 'http', status: 404, transient: false });
    expect(unknown.message).toContain('prediction not found');
  });
});

describe('WaveSpeedClient error mapping', () => {
  test('5xx with Retry-After is transient and carries the delay', async () => {
    const base = await listen((_req, res) => res.writeHead(503, { 'retry-after': '3' }).end('{"code":503,"message":"busy"}'));
    const err = await failure(client(base).getResult('a'));
    expect(err).toMatchObject({ kind: 'http', status: 503, retryAfterMs: 3000, transient: true });
    expect(err.message).toBe('upstream answered HTTP 503: busy');
  });

  test('429 is transient', async () => {
    const base = await listen((_req, res) => res.writeHead(429).end('slow down'));
    expect(await failure(client(base).getResult('a'))).toMatchObject({ kind: 'http', status: 429, transient: true });
  });

  test('an error code inside a 200 envelope is an error', async () => {
    const base = await listen((_req, res) => res.end('{"code":400,"message":"prompt is required","data":null}'));
    const err = await failure(client(base).submit({ prompt: '', enablePromptExpansion: true }));
    expect(err).toMatchObject({ kind: 'http', status: 400, transient: false, message: 'upstream answered code 400: prompt is required' });
  });

  test('a body that is not JSON, or lacks a record, is a protocol error', async () => {
    const notJson = await listen((_req, res) => res.end('<html>oops'));
    expect(await failure(client(notJson).getResult('a'))).toMatchObject({ kind: 'protocol', transient: true });
    const noRecord = await listen((_req, res) => res.end('{"code":200,"message":"success","data":{"status":"created"}}'));
    expect(await failure(client(noRecord).getResult('a'))).toMatchObject({ kind: 'protocol' });
  });

  test('no answer within the timeout is a timeout; a refused connection a network error', async () => {
    const silent = await listen(() => {});
    const err = await failure(client(silent, 'k', 150).getResult('a'));
    expect(err).toMatchObject({ kind: 'timeout', transient: true });
    const closed = `http://127.0.0.1:${await freePort()}`;
    expect(await failure(client(closed).getResult('a'))).toMatchObject({ kind: 'network', transient: true });
  });

  test('sends Bearer auth, JSON body and the webhook query parameter', async () => {
    let seen: { url?: string; auth?: string; body?: string } = {};
    const base = await listen((req, res) => {
      let body = '';
      req.on('data', (d) => (body += d));
      req.on('end', () => {
        seen = { url: req.url, auth: req.headers.authorization, body };
        res.end(JSON.stringify({ code: 200, message: 'success', data: { id: 't1', status: 'created' } }));
      });
    });
    await client(base, 'secret').submit({ prompt: 'p', image: 'https://example.invalid/a.png', enablePromptExpansion: false }, { webhook: 'http://h/w?t=1' });
    expect(seen.url).toBe('/api/v3/minimax/video-01?webhook=http%3A%2F%2Fh%2Fw%3Ft%3D1');
    expect(seen.auth).toBe('Bearer secret');
    expect(JSON.parse(must(seen.body))).toEqual({ prompt: 'p', image: 'https://example.invalid/a.png', enable_prompt_expansion: false });
  });
});

test('parseRetryAfter reads seconds and HTTP dates', () => {
  expect(parseRetryAfter('2')).toBe(2000);
  expect(parseRetryAfter(new Date(10_000).toUTCString(), 4_000)).toBe(6000);
  expect(parseRetryAfter('soon')).toBeUndefined();
  expect(parseRetryAfter(null)).toBeUndefined();
});
