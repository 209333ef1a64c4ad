import { createHash } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { request, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, test } from 'vitest';
import { createHttpServer, type HttpDeps } from '../src/server/http.js';
import { sendJson } from '../src/server/json.js';
import { listenOnLoopback } from './helpers/listen.js';
import { must } from './helpers/must.js';
import { capturedLogger } from './helpers/stub-upstream.js';

/**
 * createHttpServer's routing on a loopback port, every dependency a fake that records its calls
 * and answers with its own name: which route each path reaches, with which arguments, in which
 * order against the access gate; /healthz, /readyz, kept media, 404s and the 500 of a failing route.
 */

type Call = { who: string; path?: string; args?: unknown[] };

async function start(overrides: Partial<HttpDeps> = {}, opts: { screen?: boolean; caller?: boolean } = {}) {
  const calls: Call[] = [];
  const mark = (who: string, res: ServerResponse, ...args: unknown[]) => {
    calls.push({ who, args });
    sendJson(res, 200, { who });
  };
  const mediaDir = mkdtempSync(join(tmpdir(), 'cg-http-'));
  writeFileSync(join(mediaDir, 'abc.mp4'), '0123456789');
  writeFileSync(join(mediaDir, '.hidden'), 'secret');
  const yoga = Object.assign(
    (req: IncomingMessage, res: ServerResponse, caller: unknown) => {
      calls.push({ who: 'yoga', path: req.url, args: [caller] });
      sendJson(res, 200, { who: 'yoga' });
    },
    { graphqlEndpoint: '/graphql' },
  );
  const { log, lines } = capturedLogger();
  const deps: HttpDeps = {
    yoga: yoga as unknown as HttpDeps['yoga'],
    log,
    notReady: () => [],
    access: {
      screen: (_req: IncomingMessage, res: ServerResponse, pathname: string) => {
        calls.push({ who: 'screen', path: pathname });
        if (opts.screen === false) sendJson(res, 403, { who: 'screen' });
        return opts.screen !== false;
      },
      graphql: (_req: IncomingMessage, res: ServerResponse) => {
        calls.push({ who: 'access.graphql' });
        if (opts.caller === false) {
          sendJson(res, 401, { who: 'access.graphql' });
          return undefined;
        }
        return { owner: 'k1' };
      },
    } as unknown as HttpDeps['access'],
    sandbox: { handle: async (req: IncomingMessage, res: ServerResponse, path: string, mount: string) => mark('sandbox', res, req.url, path, mount) } as unknown as HttpDeps['sandbox'],
    media: { dir: mediaDir, has: (name: string) => name === 'abc.mp4' || name === '.hidden' } as unknown as HttpDeps['media'],
    onWebhook: (req, res, url) => mark('webhook', res, req.url, url.href),
    page: { handles: (p: string) => p === '/' || p === '/app.js', serve: async (_req: IncomingMessage, res: ServerResponse, p: string) => mark('page', res, p) },
    metrics: async (_req, res) => mark('metrics', res),
    ...overrides,
  };
  const server = createHttpServer(deps);
  const port = await listenOnLoopback(server);
  return { server, port, calls, lines };
}

/** A raw request (node:http), so the path and headers go exactly as given. */
function raw(port: number, path: string, opts: { method?: string; headers?: Record<string, string> } = {}) {
  return new Promise<{ status: number; headers: IncomingMessage['headers']; body: string }>((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path, method: opts.method ?? 'GET', headers: opts.headers }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d) => (body += d));
      res.on('end', () => resolve({ status: must(res.statusCode), headers: res.headers, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

const json = 'application/json; charset=utf-8';

describe('createHttpServer', () => {
  test('keeps idle connections 65 s and waits 66 s for headers', async () => {
    const { server } = await start();
    expect((server as Server).keepAliveTimeout).toBe(65_000);
    expect((server as Server).headersTimeout).toBe(66_000);
    const res = await raw((server.address() as AddressInfo).port, '/healthz');
    expect(res.headers['keep-alive']).toBe('timeout=65');
  });

  test('/healthz is 200 {"status":"ok"} before any screening, with or without a query', async () => {
    const s = await start({}, { screen: false });
    for (const path of ['/healthz', '/healthz?probe=1']) {
      const res = await raw(s.port, path);
      expect(res.status).toBe(200);
      expect(res.headers['content-type']).toBe(json);
      expect(res.body).toBe('{"status":"ok"}');
    }
    expect(s.calls).toEqual([]);
  });

  test('/readyz is 200 ready or 503 with the reasons, never cached, before any screening', async () => {
    let reasons: string[] = [];
    const s = await start({ notReady: async () => reasons }, { screen: false });
    const ready = await raw(s.port, '/readyz');
    expect([ready.status, ready.body, ready.headers['cache-control'], ready.headers['content-type']]).toEqual([200, '{"status":"ready"}', 'no-store', json]);
    reasons = ['storage unavailable', 'poller stopped'];
    const not = await raw(s.port, '/readyz?x');
    expect([not.status, JSON.parse(not.body), not.headers['cache-control']]).toEqual([503, { status: 'unavailable', reasons }, 'no-store']);
    expect(s.calls).toEqual([]);
  });

  test('a request the access gate refuses gets its answer only, whatever the route', async () => {
    const s = await start({}, { screen: false });
    for (const path of ['/metrics', '/sandbox/x', '/media/abc.mp4', '/webhooks/wavespeed/p?token=t', '/', '/graphql', '/nope']) {
      const res = await raw(s.port, path);
      expect([res.status, res.body]).toEqual([403, '{"who":"screen"}']);
    }
    expect(s.calls.map((c) => c.who)).toEqual(Array(7).fill('screen'));
    expect(s.calls.map((c) => c.path)).toEqual(['/metrics', '/sandbox/x', '/media/abc.mp4', '/webhooks/wavespeed/p', '/', '/graphql', '/nope']);
  });

  test('each path reaches its route after screening, with the arguments it needs', async () => {
    const s = await start();
    const who = async (path: string, method = 'GET') => {
      const res = await raw(s.port, path, { method });
      return res.status === 200 ? (JSON.parse(res.body) as { who: string }).who : res.status;
    };
    expect(await who('/metrics')).toBe('metrics');
    expect(await who('/sandbox')).toBe('sandbox');
    expect(await who('/sandbox/api/v3/x?y=1')).toBe('sandbox');
    expect(await who('/sandboxes')).toBe(404);
    expect(await who('/webhooks/wavespeed/p%201?token=t')).toBe('webhook');
    expect(await who('/')).toBe('page');
    expect(await who('/app.js?v=2')).toBe('page');
    expect(await who('/graphql?query=%7B__typename%7D')).toBe('yoga');
    expect(await who('/graphqlx')).toBe(404);
    const routed = s.calls.filter((c) => c.who !== 'screen');
    expect(routed).toEqual([
      { who: 'metrics', args: [] },
      { who: 'sandbox', args: ['/sandbox', '/', `http://127.0.0.1:${s.port}/sandbox`] },
      { who: 'sandbox', args: ['/sandbox/api/v3/x?y=1', '/api/v3/x?y=1', `http://127.0.0.1:${s.port}/sandbox`] },
      { who: 'webhook', args: ['/webhooks/wavespeed/p%201?token=t', 'http://gateway/webhooks/wavespeed/p%201?token=t'] },
      { who: 'page', args: ['/'] },
      { who: 'page', args: ['/app.js'] },
      { who: 'access.graphql' },
      { who: 'yoga', path: '/graphql?query=%7B__typename%7D', args: [{ owner: 'k1' }] },
    ]);
  });

  test('a 404 is {"error":"not found"} as JSON', async () => {
    const s = await start();
    const res = await raw(s.port, '/nope');
    expect([res.status, res.headers['content-type'], res.body]).toEqual([404, json, '{"error":"not found"}']);
  });

  test('/graphql refused by the access gate is not passed to yoga', async () => {
    const s = await start({}, { caller: false });
    const res = await raw(s.port, '/graphql');
    expect([res.status, res.body]).toEqual([401, '{"who":"access.graphql"}']);
    expect(s.calls.map((c) => c.who)).toEqual(['screen', 'access.graphql']);
  });

  test('without the optional parts their paths are 404', async () => {
    const s = await start({ metrics: undefined, sandbox: undefined, media: undefined, onWebhook: undefined, page: undefined });
    for (const path of ['/metrics', '/sandbox/x', '/media/abc.mp4', '/webhooks/wavespeed/p?token=t', '/']) {
      const res = await raw(s.port, path);
      expect([path, res.status, res.body]).toEqual([path, 404, '{"error":"not found"}']);
    }
  });

  test('kept media: GET and HEAD with ranges, cached for good; unknown names, dotfiles and other methods are 404', async () => {
    const s = await start();
    const full = await raw(s.port, '/media/abc.mp4');
    expect([full.status, full.body, full.headers['accept-ranges'], full.headers['cache-control'], full.headers['content-type']]).toEqual([
      200,
      '0123456789',
      'bytes',
      'public, max-age=31536000, immutable',
      'video/mp4',
    ]);
    const part = await raw(s.port, '/media/abc.mp4', { headers: { range: 'bytes=2-4' } });
    expect([part.status, part.body, part.headers['content-range']]).toEqual([206, '234', 'bytes 2-4/10']);
    const head = await raw(s.port, '/media/abc.mp4', { method: 'HEAD' });
    expect([head.status, head.body, head.headers['content-length']]).toEqual([200, '', '10']);
    expect((await raw(s.port, '/media/other.mp4')).status).toBe(404);
    expect((await raw(s.port, '/media/other.mp4')).body).toBe('{"error":"not found"}');
    expect((await raw(s.port, '/media/.hidden')).status).toBe(404);
    const post = await raw(s.port, '/media/abc.mp4', { method: 'POST' });
    expect([post.status, post.body]).toEqual([404, '{"error":"not found"}']);
    expect((await raw(s.port, '/media/abc.mp4', { method: 'DELETE' })).status).toBe(404);
  });

  test('a route that throws is 500 "internal error", logged with the path but not the query', async () => {
    const s = await start({
      page: {
        handles: () => true,
        serve: async () => {
          throw new Error('page exploded');
        },
      },
    });
    const res = await raw(s.port, '/boom?token=secret');
    expect([res.status, res.headers['content-type'], res.body]).toEqual([500, 'text/plain', 'internal error']);
    const line = s.lines.map((l) => JSON.parse(l) as { msg: string; path?: string; err?: { message: string }; level: number }).find((l) => l.msg === 'request failed');
    expect(line).toMatchObject({ path: '/boom', err: { message: 'page exploded' }, level: 50 });
    expect(s.lines.join('\n')).not.toContain('secret');
  });

  test('a route that throws after its headers went out only ends the response', async () => {
    const s = await start({
      page: {
        handles: () => true,
        serve: async (_req, res) => {
          res.writeHead(200, { 'content-type': 'text/plain' });
          res.write('partial ');
          throw new Error('late failure');
        },
      },
    });
    const res = await raw(s.port, '/late');
    expect([res.status, res.body]).toEqual([200, 'partial internal error']);
  });
});

/** The webhook handler of server/webhooks.ts on a loopback server, with fakes for store, secret and dedupe. */
async function webhookRig(opts: { secret?: string | undefined; refreshed?: string | undefined; storeFails?: boolean } = {}) {
  const { createWebhookHandler, WEBHOOK_PREFIX, webhookUrl } = await import('../src/server/webhooks.js');
  const polled: string[] = [];
  const seen = new Set<string>();
  const refreshes: number[] = [];
  const secretNow = 'secret' in opts ? opts.secret : 'whsec_current';
  const { log, lines } = capturedLogger();
  const handler = createWebhookHandler({
    store: {
      findById: async (id: string) => {
        if (opts.storeFails) throw new Error('database is locked');
        return id === 'p 1' ? { id, webhookToken: 'tok123' } : id === 'p2' ? { id, webhookToken: null } : undefined;
      },
    } as never,
    pollNow: (id) => polled.push(id),
    secret: {
      get: async () => secretNow,
      refresh: async () => {
        refreshes.push(1);
        return 'refreshed' in opts ? opts.refreshed : secretNow;
      },
    } as never,
    firstDelivery: (id) => {
      if (seen.has(id)) return false;
      seen.add(id);
      return true;
    },
    now: () => new Date(1_800_000_000_000),
  });
  const server = createHttpServer({
    yoga: Object.assign(() => {}, { graphqlEndpoint: '/graphql' }) as never,
    log,
    notReady: () => [],
    access: { screen: () => true } as never,
    onWebhook: handler,
  });
  const port = await listenOnLoopback(server);
  const { signUpstreamDelivery } = await import('../src/webhooks/incoming.js');
  /** POSTs a delivery signed with `secret` (the current one unless given). */
  function deliver(path: string, o: { id?: string; body?: string; secret?: string; method?: string; headers?: Record<string, string> } = {}) {
    const body = o.body ?? '{"id":"task-1","status":"completed"}';
    const ts = 1_800_000_000;
    const id = o.id ?? 'msg-1';
    const headers = { 'webhook-id': id, 'webhook-timestamp': String(ts), 'webhook-signature': signUpstreamDelivery(o.secret ?? 'whsec_current', id, ts, body), ...o.headers };
    return new Promise<{ status: number; body: unknown; type: string | undefined }>((resolve, reject) => {
      const req = request({ host: '127.0.0.1', port, path, method: o.method ?? 'POST', headers }, (res) => {
        let text = '';
        res.on('data', (d) => (text += d));
        res.on('end', () => resolve({ status: must(res.statusCode), body: JSON.parse(text), type: res.headers['content-type'] }));
      });
      req.on('error', reject);
      req.end(o.method === 'GET' ? undefined : body);
    });
  }
  return { deliver, polled, refreshes, lines, WEBHOOK_PREFIX, webhookUrl };
}

describe('upstream webhook handler', () => {
  const path = '/webhooks/wavespeed/p%201?token=tok123';

  test('the URL of a prediction: prefix, encoded id, token', async () => {
    const { webhookUrl, WEBHOOK_PREFIX } = await import('../src/server/webhooks.js');
    expect(WEBHOOK_PREFIX).toBe('/webhooks/wavespeed/');
    expect(webhookUrl('https://gw.example', 'p 1/x', 'tok')).toBe('https://gw.example/webhooks/wavespeed/p%201%2Fx?token=tok');
  });

  test('a verified delivery with the right token is 202 and makes the poller re-read; a repeat is 200 and does not', async () => {
    const w = await webhookRig();
    expect(await w.deliver(path)).toEqual({ status: 202, body: { message: 'accepted' }, type: 'application/json; charset=utf-8' });
    expect(w.polled).toEqual(['p 1']);
    expect(await w.deliver(path)).toEqual({ status: 200, body: { message: 'duplicate delivery: already acted on' }, type: 'application/json; charset=utf-8' });
    expect(await w.deliver(path, { id: 'msg-2' })).toMatchObject({ status: 202 });
    expect(w.polled).toEqual(['p 1', 'p 1']);
    expect(w.refreshes).toEqual([]);
  });

  test('another method is 405; a body over 256 KiB is 413; exactly 256 KiB is read', async () => {
    const w = await webhookRig();
    expect(await w.deliver(path, { method: 'GET' })).toEqual({ status: 405, body: { message: 'webhooks are POSTed' }, type: 'application/json; charset=utf-8' });
    expect(await w.deliver(path, { body: 'x'.repeat(256 * 1024 + 1) })).toEqual({ status: 413, body: { message: 'a delivery is at most 262144 bytes' }, type: 'application/json; charset=utf-8' });
    expect(await w.deliver(path, { body: 'x'.repeat(256 * 1024) })).toMatchObject({ status: 202 });
    expect(w.polled).toEqual(['p 1']);
  });

  test('a wrong token, no token, an unknown prediction or one without a token is 404, after the signature', async () => {
    const w = await webhookRig();
    for (const p of ['/webhooks/wavespeed/p%201?token=tok124', '/webhooks/wavespeed/p%201?token=tok12', '/webhooks/wavespeed/p%201', '/webhooks/wavespeed/p3?token=tok123', '/webhooks/wavespeed/p2?token=', '/webhooks/wavespeed/p2']) {
      expect(await w.deliver(p, { id: `m${p}` }), p).toEqual({ status: 404, body: { message: 'no such webhook' }, type: 'application/json; charset=utf-8' });
    }
    expect(w.polled).toEqual([]);
    // A 404 does not use up the delivery id: the right URL with it is still acted on.
    expect(await w.deliver(path, { id: 'm/webhooks/wavespeed/p3?token=tok123' })).toMatchObject({ status: 202 });
  });

  test('an unsigned or wrongly signed delivery is 401 with the reason, logged; a bad signature fetches the secret again', async () => {
    const w = await webhookRig();
    expect(await w.deliver(path, { headers: { 'webhook-signature': '' } })).toEqual({
      status: 401,
      body: { message: 'delivery not verified: missing webhook-id, webhook-timestamp or webhook-signature' },
      type: 'application/json; charset=utf-8',
    });
    expect(w.refreshes).toEqual([]);
    expect(await w.deliver(path, { secret: 'whsec_other' })).toEqual({ status: 401, body: { message: 'delivery not verified: no valid signature' }, type: 'application/json; charset=utf-8' });
    expect(w.refreshes).toEqual([1]);
    expect(w.polled).toEqual([]);
    const warn = w.lines.map((l) => JSON.parse(l) as { msg: string; reason?: string; level: number }).filter((l) => l.msg === 'refused an unverified webhook delivery');
    expect(warn.map((l) => [l.reason, l.level])).toEqual([
      ['missing webhook-id, webhook-timestamp or webhook-signature', 40],
      ['no valid signature', 40],
    ]);
  });

  test('a delivery signed with a rotated secret is accepted once the fresh secret verifies it', async () => {
    const w = await webhookRig({ refreshed: 'whsec_rotated' });
    expect(await w.deliver(path, { secret: 'whsec_rotated' })).toMatchObject({ status: 202 });
    expect(w.refreshes).toEqual([1]);
    expect(w.polled).toEqual(['p 1']);
    // A refresh that gives nothing leaves the refusal.
    const none = await webhookRig({ refreshed: undefined });
    expect(await none.deliver(path, { secret: 'whsec_rotated' })).toMatchObject({ status: 401 });
  });

  test('without a secret from upstream a delivery is 503', async () => {
    const w = await webhookRig({ secret: undefined });
    expect(await w.deliver(path)).toEqual({
      status: 503,
      body: { message: 'the webhook secret could not be fetched from upstream; deliveries cannot be verified right now' },
      type: 'application/json; charset=utf-8',
    });
    expect(w.polled).toEqual([]);
  });

  test('a storage failure is 500 {"message":"internal error"}, logged', async () => {
    const w = await webhookRig({ storeFails: true });
    expect(await w.deliver(path)).toEqual({ status: 500, body: { message: 'internal error' }, type: 'application/json; charset=utf-8' });
    const line = w.lines.map((l) => JSON.parse(l) as { msg: string; err?: { message: string }; level: number }).find((l) => l.msg === 'handling a webhook delivery failed');
    expect(line).toMatchObject({ level: 50, err: { message: 'database is locked' } });
    expect(w.polled).toEqual([]);
  });
});

describe('web page', () => {
  async function pageRig() {
    const { createWebPage } = await import('../src/server/page.js');
    const dir = mkdtempSync(join(tmpdir(), 'cg-page-'));
    writeFileSync(join(dir, 'index.html'), '<!doctype html><title>t</title>');
    writeFileSync(join(dir, 'style.css'), 'body { color: red }');
    writeFileSync(join(dir, 'main.ts'), "const answer: number = 6 * 7;\nexport function shown(): string { return 'answer ' + answer; }\ndocument.title = shown();\n");
    const { log, lines } = capturedLogger();
    const page = createWebPage({ dir });
    const server = createHttpServer({
      yoga: Object.assign(() => {}, { graphqlEndpoint: '/graphql' }) as never,
      log,
      notReady: () => [],
      access: { screen: () => true } as never,
      page: { handles: (p: string) => p !== '/graphql', serve: (req, res, p) => page.serve(req, res, p) },
    });
    return { page, dir, lines, port: await listenOnLoopback(server) };
  }
  const etagOf = (body: string) => `"${createHash('sha256').update(body).digest('base64url').slice(0, 27)}"`;

  test('handles exactly its three paths', async () => {
    const { page } = await pageRig();
    expect(['/', '/app.css', '/app.js', '/index.html', '/app', '/toString', '/constructor', ''].map((p) => page.handles(p))).toEqual([true, true, true, false, false, false, false, false]);
  });

  test('/ is the HTML with its CSP, ETag and no-cache; the CSS has no CSP; the script is bundled and minified', async () => {
    const p = await pageRig();
    const html = await raw(p.port, '/');
    expect(html.status).toBe(200);
    expect(html.body).toBe('<!doctype html><title>t</title>');
    expect(html.headers).toMatchObject({
      'content-type': 'text/html; charset=utf-8',
      etag: etagOf('<!doctype html><title>t</title>'),
      'cache-control': 'no-cache',
      'x-content-type-options': 'nosniff',
      'referrer-policy': 'no-referrer',
      'content-length': '31',
      'content-security-policy':
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; media-src 'self' https:; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    });
    const css = await raw(p.port, '/app.css');
    expect([css.status, css.body, css.headers['content-type'], css.headers['content-security-policy'], css.headers.etag]).toEqual([
      200,
      'body { color: red }',
      'text/css; charset=utf-8',
      undefined,
      etagOf('body { color: red }'),
    ]);
    const js = await raw(p.port, '/app.js');
    expect(js.status).toBe(200);
    expect(js.headers['content-type']).toBe('text/javascript; charset=utf-8');
    expect(js.headers.etag).toBe(etagOf(js.body));
    expect(js.body).not.toContain(': number');
    expect(js.body).not.toContain('\n  ');
    expect(js.body).toContain('document.title=');
    // ESM: the export stays an export.
    expect(js.body).toMatch(/export\{/);
  });

  test('If-None-Match with the ETag is 304 with the headers and no body; HEAD has the length but no body; other methods 405', async () => {
    const p = await pageRig();
    const etag = etagOf('<!doctype html><title>t</title>');
    const not = await raw(p.port, '/', { headers: { 'if-none-match': etag } });
    expect([not.status, not.body, not.headers.etag, not.headers['cache-control']]).toEqual([304, '', etag, 'no-cache']);
    const other = await raw(p.port, '/', { headers: { 'if-none-match': '"something else"' } });
    expect(other.status).toBe(200);
    const head = await raw(p.port, '/', { method: 'HEAD' });
    expect([head.status, head.body, head.headers['content-length']]).toEqual([200, '', '31']);
    const post = await raw(p.port, '/', { method: 'POST' });
    expect([post.status, post.headers.allow, post.body]).toEqual([405, 'GET, HEAD', '{"error":"method not allowed"}']);
  });

  test('an asset is read once; a failed build is 500, logged, and tried again on the next request', async () => {
    const p = await pageRig();
    expect((await raw(p.port, '/app.css')).body).toBe('body { color: red }');
    writeFileSync(join(p.dir, 'style.css'), 'body { color: blue }');
    expect((await raw(p.port, '/app.css')).body).toBe('body { color: red }');

    writeFileSync(join(p.dir, 'main.ts'), 'const = ;');
    const failed = await raw(p.port, '/app.js');
    expect([failed.status, failed.headers['content-type'], failed.body]).toEqual([500, 'text/plain', 'the web page could not be built; see the server log']);
    const line = p.lines.map((l) => JSON.parse(l) as { msg: string; pathname?: string; level: number }).find((l) => l.msg === 'web page asset failed to build');
    expect(line).toMatchObject({ pathname: '/app.js', level: 50 });
    writeFileSync(join(p.dir, 'main.ts'), 'document.title = "fixed";');
    const fixed = await raw(p.port, '/app.js');
    expect(fixed.status).toBe(200);
    expect(fixed.body).toContain('fixed');
  });

  test('a path it does not handle is a 500 with the reason logged', async () => {
    const p = await pageRig();
    const res = await raw(p.port, '/nope');
    expect(res.status).toBe(500);
    const line = p.lines.map((l) => JSON.parse(l) as { msg: string; err?: { message: string } }).find((l) => l.msg === 'web page asset failed to build');
    expect(line?.err?.message).toBe('no web page asset at /nope');
  });
});
