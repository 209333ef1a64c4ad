import { describe, expect, test } from 'vitest';
import WebSocket from 'ws';
import { type GqlResult, startApp, tempDir } from './helpers/app.js';
import { bearer, createKey } from './helpers/keys.js';
import { rawRequest } from './helpers/http.js';

const MUTATION = 'mutation { createVideo(input: { prompt: "from a hostile page" }) { id } }';
const EVIL = 'https://evil.example';

/** A raw HTTP request (node:http, so Host and Origin are sent exactly as given, as a browser or attacker would), its body parsed when JSON. */
async function raw(url: string, opts: Parameters<typeof rawRequest>[1]) {
  const answer = await rawRequest(url, opts);
  let body: unknown = answer.text;
  try {
    body = JSON.parse(answer.text);
  } catch {}
  return { status: answer.status, headers: answer.headers as Record<string, unknown>, body };
}

const codeOf = (r: { body: unknown }) => (r.body as GqlResult<unknown> | undefined)?.errors?.[0]?.extensions?.code;

/** Opens a graphql-ws socket and tries to create a video over it; resolves with what the upgrade answered. */
function wsUpgrade(url: string, headers: Record<string, string>, connectionParams: Record<string, unknown> = {}) {
  return new Promise<{ status?: number; body?: string; acked?: boolean }>((resolve) => {
    const ws = new WebSocket(`${url.replace('http', 'ws')}/graphql`, 'graphql-transport-ws', { headers });
    ws.on('unexpected-response', (_req, res) => {
      let body = '';
      res.on('data', (d) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode, body }));
    });
    ws.on('open', () => ws.send(JSON.stringify({ type: 'connection_init', payload: connectionParams })));
    ws.on('message', (m) => {
      const msg = JSON.parse(String(m));
      if (msg.type === 'connection_ack') ws.send(JSON.stringify({ id: '1', type: 'subscribe', payload: { query: MUTATION } }));
      if (msg.type === 'next' || msg.type === 'error') {
        ws.close();
        resolve({ status: 101, acked: true });
      }
    });
    ws.on('error', () => {});
  });
}

describe('browser origins (open mode, as the existing setup on 127.0.0.1)', () => {
  test('a form-encoded POST from a foreign Origin is refused with 403 FORBIDDEN_ORIGIN and stores nothing', async () => {
    const { url, app } = await startApp();
    const form = `query=${encodeURIComponent(MUTATION)}`;
    const r = await raw(url, { headers: { origin: EVIL, 'content-type': 'application/x-www-form-urlencoded' }, body: form });
    expect([r.status, codeOf(r)]).toEqual([403, 'FORBIDDEN_ORIGIN']);
    const json = await raw(url, { headers: { origin: EVIL, 'content-type': 'application/json' }, body: JSON.stringify({ query: MUTATION }) });
    expect([json.status, codeOf(json)]).toEqual([403, 'FORBIDDEN_ORIGIN']);
    const preflight = await raw(url, { method: 'OPTIONS', headers: { origin: EVIL, 'access-control-request-method': 'POST' } });
    expect(preflight.status).toBe(403);
    expect(preflight.headers['access-control-allow-origin']).toBeUndefined();
    const nullOrigin = await raw(url, { headers: { origin: 'null', 'content-type': 'application/json' }, body: JSON.stringify({ query: MUTATION }) });
    expect(codeOf(nullOrigin)).toBe('FORBIDDEN_ORIGIN');
    expect(app.store.count()).toBe(0);
    expect(app.sandbox?.stats.submissions).toBe(0);
  });

  test('form-encoded, multipart and text/plain bodies never run an operation, whatever their Origin', async () => {
    const { url, app } = await startApp();
    const form = `query=${encodeURIComponent(MUTATION)}`;
    const csrf = await raw(url, { headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: form });
    expect([csrf.status, codeOf(csrf)]).toEqual([403, 'CSRF_HEADER_REQUIRED']);
    const plain = await raw(url, { headers: { 'content-type': 'text/plain' }, body: JSON.stringify({ query: MUTATION }) });
    expect([plain.status, codeOf(plain)]).toEqual([403, 'CSRF_HEADER_REQUIRED']);
    // Even with the CSRF header (which a page cannot send without a preflight), forms are refused.
    const withHeader = await raw(url, { headers: { 'content-type': 'application/x-www-form-urlencoded', 'x-graphql-yoga-csrf': '1' }, body: form });
    expect([withHeader.status, codeOf(withHeader)]).toEqual([415, 'UNSUPPORTED_MEDIA_TYPE']);
    const boundary = 'xyz';
    const multipart = `--${boundary}\r\nContent-Disposition: form-data; name="operations"\r\n\r\n${JSON.stringify({ query: MUTATION })}\r\n--${boundary}--\r\n`;
    const mp = await raw(url, { headers: { 'content-type': `multipart/form-data; boundary=${boundary}`, 'x-graphql-yoga-csrf': '1' }, body: multipart });
    expect([mp.status, codeOf(mp)]).toEqual([415, 'UNSUPPORTED_MEDIA_TYPE']);
    expect(app.store.count()).toBe(0);
    // Same-origin JSON (what the gateway's own pages send) still works.
    const own = await raw(url, { headers: { origin: url, 'content-type': 'application/json' }, body: JSON.stringify({ query: MUTATION }) });
    expect(own.status).toBe(200);
    expect((own.body as GqlResult<{ createVideo: { id: string } }>).data?.createVideo.id).toBeTypeOf('string');
    expect(app.store.count()).toBe(1);
  });

  test('a WebSocket upgrade from a foreign Origin (even with a fake Host) is refused with 403 and creates nothing', async () => {
    const { url, app } = await startApp();
    const host = new URL(url).host;
    expect(await wsUpgrade(url, { origin: EVIL })).toEqual({ status: 403, body: 'FORBIDDEN_ORIGIN' });
    // A fake Host that matches the Origin (as on a domain rebound to 127.0.0.1): the Host is not this machine.
    expect(await wsUpgrade(url, { origin: EVIL, host: 'evil.example' })).toEqual({ status: 403, body: 'FORBIDDEN_HOST' });
    expect(await wsUpgrade(url, { origin: EVIL, host: 'localhost' })).toEqual({ status: 403, body: 'FORBIDDEN_ORIGIN' });
    expect(await wsUpgrade(url, { origin: 'http://rebound.example', host: 'rebound.example' })).toEqual({ status: 403, body: 'FORBIDDEN_HOST' });
    expect(app.store.count()).toBe(0);
    // The control: the same upgrade from the server's own origin runs.
    expect(await wsUpgrade(url, { origin: `http://${host}` })).toEqual({ status: 101, acked: true });
    expect(app.store.count()).toBe(1);
  });

  test('DNS rebinding: in open mode a request addressed to a foreign Host name is refused, with or without an Origin', async () => {
    const { url, app } = await startApp();
    const body = JSON.stringify({ query: MUTATION });
    const r = await raw(url, { headers: { host: 'rebound.example:80', 'content-type': 'application/json' }, body });
    expect([r.status, codeOf(r)]).toEqual([403, 'FORBIDDEN_HOST']);
    const get = await raw(url, { method: 'GET', path: '/graphql?query={predictions{nodes{id}}}', headers: { host: 'rebound.example' } });
    expect(codeOf(get)).toBe('FORBIDDEN_HOST');
    const local = await raw(url, { headers: { host: `localhost:${new URL(url).port}`, 'content-type': 'application/json' }, body });
    expect(local.status).toBe(200);
    expect(app.store.count()).toBe(1);
  });

  test('CORS_ORIGINS lets exactly the listed origins in, with CORS headers and no credentials', async () => {
    const { url } = await startApp({ CORS_ORIGINS: 'https://app.example, http://localhost:5173' });
    const preflight = await raw(url, { method: 'OPTIONS', headers: { origin: 'https://app.example', 'access-control-request-method': 'POST', 'access-control-request-headers': 'content-type,authorization' } });
    expect(preflight.status).toBeLessThan(300);
    expect(preflight.headers['access-control-allow-origin']).toBe('https://app.example');
    expect(preflight.headers['access-control-allow-credentials']).toBeUndefined();
    expect(String(preflight.headers['access-control-allow-headers'])).toContain('authorization');
    const post = await raw(url, { headers: { origin: 'http://localhost:5173', 'content-type': 'application/json' }, body: JSON.stringify({ query: '{ __typename }' }) });
    expect([post.status, post.headers['access-control-allow-origin']]).toEqual([200, 'http://localhost:5173']);
    for (const near of ['https://app.example.evil.example', 'http://app.example', 'https://app.example:444', 'http://localhost:5174']) {
      const r = await raw(url, { headers: { origin: near, 'content-type': 'application/json' }, body: JSON.stringify({ query: '{ __typename }' }) });
      expect([near, r.status, codeOf(r)]).toEqual([near, 403, 'FORBIDDEN_ORIGIN']);
    }
  });

  test('CORS_ORIGINS entries that are not bare origins stop the server from starting', async () => {
    await expect(startApp({ CORS_ORIGINS: 'https://app.example/path' })).rejects.toThrow(/CORS_ORIGINS.*not an origin/s);
    await expect(startApp({ CORS_ORIGINS: 'app.example' })).rejects.toThrow(/not an origin/);
    await expect(startApp({ CORS_ORIGINS: '*' })).rejects.toThrow(/not an origin/);
  });
});

test('with keys, a foreign Origin is refused even with a valid key; behind a proxy the Host may be any name', async () => {
  const dataDir = tempDir();
  const key = await createKey(dataDir, 'web');
  const { url, app } = await startApp({ DATA_DIR: dataDir });
  const body = JSON.stringify({ query: MUTATION });
  const evil = await raw(url, { headers: { origin: EVIL, 'content-type': 'application/json', ...bearer(key) }, body });
  expect([evil.status, codeOf(evil)]).toEqual([403, 'FORBIDDEN_ORIGIN']);
  expect(await wsUpgrade(url, { origin: EVIL }, { authorization: `Bearer ${key}` })).toEqual({ status: 403, body: 'FORBIDDEN_ORIGIN' });
  expect(app.store.count()).toBe(0);
  // A browser on https://cine.example behind a TLS proxy that keeps the Host: same origin.
  const proxied = await raw(url, { headers: { host: 'cine.example', origin: 'https://cine.example', 'content-type': 'application/json', ...bearer(key) }, body });
  expect(proxied.status).toBe(200);
  expect(app.store.count()).toBe(1);
});
