import { request } from 'node:http';
import { describe, expect, test } from 'vitest';
import { Connections } from '../src/auth/connections.js';
import type { Keys } from '../src/auth/keys.js';
import { UNAUTHENTICATED_MESSAGE } from '../src/auth/principal.js';
import type { Quotas } from '../src/auth/quotas.js';
import { createAccessGate, tooManySockets } from '../src/server/access.js';
import { createOriginPolicy } from '../src/server/origin.js';
import { createRequestLogging, logFor, REQUEST_ID_HEADER, requestIdOf } from '../src/server/request-id.js';
import { waitFor } from './helpers/app.js';
import { listen } from './helpers/listen.js';
import { must } from './helpers/must.js';
import { capturedLogger } from './helpers/stub-upstream.js';

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

/** A raw request (node:http, so Host and Origin go exactly as given). */
function raw(url: string, opts: { method?: string; path?: string; headers?: Record<string, string>; body?: string }) {
  return new Promise<{ status: number; headers: Record<string, unknown>; body: string }>((resolve, reject) => {
    const req = request(`${url}${opts.path ?? '/graphql'}`, { method: opts.method ?? 'POST', headers: opts.headers }, (res) => {
      let body = '';
      res.on('data', (d) => (body += d));
      res.on('end', () => resolve({ status: must(res.statusCode), headers: res.headers, body }));
    });
    req.on('error', reject);
    req.end(opts.body);
  });
}

describe('requestIdOf', () => {
  const of = (id?: string | string[]) => requestIdOf({ headers: id === undefined ? {} : { [REQUEST_ID_HEADER]: id } } as never);
  test('keeps a sane id of 1 to 128 characters, otherwise makes a UUID', () => {
    for (const id of ['a', 'trace-42.abc:7', 'A/b+c=d@e_f', 'x'.repeat(128)]) expect(of(id)).toBe(id);
    for (const id of [undefined, '', 'has space', 'quote"d', 'x'.repeat(129), 'tab\t', 'ünï', ['a', 'b']]) {
      expect(of(id as string)).toMatch(UUID);
    }
    expect(of()).not.toBe(of());
  });
});

describe('createRequestLogging', () => {
  async function server(status = 200) {
    const { log, lines } = capturedLogger();
    const handle = createRequestLogging(log);
    const url = await listen((req, res) =>
      handle(req, res, () => {
        req.log.info('through the request logger');
        // At debug (capturedLogger's level) the request is known to code handed the base logger, after an await too.
        logFor(log).info('through logFor');
        void Promise.resolve().then(() => {
          logFor(log).debug('through logFor, later');
          res.statusCode = status;
          res.end('done');
        });
      }),
    );
    const parsed = () => lines.map((l) => JSON.parse(l) as Record<string, unknown>);
    return { url, log, parsed };
  }

  test('each line of a request carries its id, echoed on the response; the completion has the path only', async () => {
    const { url, parsed } = await server();
    const res = await raw(url, { method: 'GET', path: '/graphql?token=secret', headers: { [REQUEST_ID_HEADER]: 'req-1' } });
    expect(res.headers[REQUEST_ID_HEADER]).toBe('req-1');
    const done = await waitFor(parsed, (ls) => ls.some((l) => l.msg === 'request completed'));
    const mine = done.filter((l) => l.requestId === 'req-1').map((l) => l.msg);
    expect(mine).toEqual(['through the request logger', 'through logFor', 'through logFor, later', 'request completed']);
    const completed = must(done.find((l) => l.msg === 'request completed'));
    expect(completed).toMatchObject({ level: 30, req: { method: 'GET', path: '/graphql' }, res: { statusCode: 200 } });
    expect(JSON.stringify(done)).not.toContain('secret');
    expect(Object.keys(completed.req as object).sort()).toEqual(['method', 'path']);
  });

  test('a fresh UUID without an id; a 500 completes at error level', async () => {
    const { url, parsed } = await server(500);
    const res = await raw(url, { method: 'POST', path: '/x' });
    expect(res.headers[REQUEST_ID_HEADER]).toMatch(UUID);
    const done = await waitFor(parsed, (ls) => ls.some((l) => l.res !== undefined));
    const last = must(done.find((l) => l.res !== undefined));
    expect(last).toMatchObject({ level: 50, requestId: res.headers[REQUEST_ID_HEADER], req: { path: '/x' }, res: { statusCode: 500 } });
  });

  test('probes and scrapers are not logged on completion; other paths are', async () => {
    const { url, parsed } = await server();
    for (const path of ['/healthz', '/readyz', '/metrics?x=1']) await raw(url, { method: 'GET', path });
    await raw(url, { method: 'GET', path: '/healthzz' });
    const done = await waitFor(parsed, (ls) => ls.some((l) => l.msg === 'request completed'));
    expect(done.filter((l) => l.msg === 'request completed').map((l) => (l.req as { path: string }).path)).toEqual(['/healthzz']);
    // The handler's own lines were still written for all four.
    expect(done.filter((l) => l.msg === 'through the request logger')).toHaveLength(4);
  });

  test('a client gone before the answer completes as "request aborted"; each request logs through its own child', async () => {
    const { log, lines } = capturedLogger();
    const handle = createRequestLogging(log);
    let gone!: () => void;
    const closed = new Promise<void>((resolve) => (gone = resolve));
    const url = await listen((req, res) =>
      handle(req, res, () => {
        req.log.info('holding');
        // The same child for every line of one request.
        expect(req.log).toBe(req.log);
        req.once('close', () =>
          setImmediate(() => {
            res.end();
            gone();
          }),
        );
      }),
    );
    const r = request(`${url}/slow`, { headers: { [REQUEST_ID_HEADER]: 'gone-1' } });
    r.on('error', () => {});
    r.end();
    const parsed = () => lines.map((l) => JSON.parse(l) as Record<string, unknown>);
    await waitFor(parsed, (ls) => ls.some((l) => l.msg === 'holding'));
    r.destroy();
    await closed;
    const done = await waitFor(parsed, (ls) => ls.some((l) => l.res !== undefined));
    expect(done.find((l) => l.res !== undefined)).toMatchObject({ level: 30, msg: 'request aborted', requestId: 'gone-1', req: { method: 'GET', path: '/slow' } });
  });

  test("every 'error' on a response is logged as \"request errored\", on quiet paths too, and none ends the process (each late write emits one)", async () => {
    const { log, lines } = capturedLogger();
    const handle = createRequestLogging(log);
    const url = await listen((req, res) =>
      handle(req, res, () => {
        res.end('done');
        // Each late write emits ERR_STREAM_WRITE_AFTER_END on the response, in a tick of its own.
        res.write('too late');
        if (req.url === '/twice') res.write('later still');
      }),
    );
    for (const path of ['/late', '/healthz', '/twice']) expect((await raw(url, { method: 'GET', path })).body).toBe('done');
    const parsed = () => lines.map((l) => JSON.parse(l) as { msg: string; req: { path: string }; err?: { code?: string } });
    const done = await waitFor(parsed, (ls) => ls.filter((l) => l.msg === 'request errored').length === 4);
    expect(done.filter((l) => l.msg === 'request errored').map((l) => [l.req.path, l.err?.code])).toEqual([
      ['/late', 'ERR_STREAM_WRITE_AFTER_END'],
      ['/healthz', 'ERR_STREAM_WRITE_AFTER_END'],
      ['/twice', 'ERR_STREAM_WRITE_AFTER_END'],
      ['/twice', 'ERR_STREAM_WRITE_AFTER_END'],
    ]);
    // A marker request: the process still answers, and the completion lines of all three are
    // written by the time its own error line is (none, since each errored).
    await raw(url, { method: 'GET', path: '/marker' });
    await waitFor(parsed, (ls) => ls.filter((l) => l.msg === 'request errored').length === 5);
    expect(parsed().filter((l) => l.msg === 'request completed')).toEqual([]);
  });

  test('the completion line follows the log level: at warn only 5xx are logged', async () => {
    const { log, lines } = capturedLogger();
    log.level = 'warn';
    const handle = createRequestLogging(log);
    const url = await listen((req, res) =>
      handle(req, res, () => {
        res.statusCode = Number(req.url?.slice(1));
        res.end();
      }),
    );
    for (const status of [200, 404, 503]) expect((await raw(url, { method: 'GET', path: `/${status}` })).status).toBe(status);
    // A marker after the three: every completion line of theirs is written by then.
    await raw(url, { method: 'GET', path: '/500' });
    const statuses = () => lines.map((l) => (JSON.parse(l) as { res: { statusCode: number } }).res.statusCode);
    expect(await waitFor(statuses, (s) => s.includes(500))).toEqual([503, 500]);
    expect(JSON.parse(must(lines[0]))).toMatchObject({ level: 50, msg: 'request errored', err: { message: 'failed with status code 503' } });
  });

  test('outside a request logFor is the base logger; below debug it is inside one too (no AsyncLocalStorage)', async () => {
    const { log } = capturedLogger();
    expect(logFor(log)).toBe(log);
    expect(logFor(log, new Error('not from any request'))).toBe(log);
    log.level = 'info';
    const handle = createRequestLogging(log);
    const seen: unknown[] = [];
    const url = await listen((req, res) =>
      handle(req, res, () => {
        seen.push(logFor(log), req.log === log);
        res.end();
      }),
    );
    await raw(url, { method: 'GET', path: '/x' });
    // The request still has its own child logger; only the lookup through the async context is off.
    expect(seen).toEqual([log, false]);
  });
});

describe('access gate', () => {
  const KEY = { id: 'key-1' };
  async function gate(opts: { open?: boolean; maxSockets?: number }) {
    const keys = { isEmpty: () => opts.open === true, verify: (t: string) => (t === 'good' ? KEY : undefined) } as unknown as Keys;
    const quotas = { maxSockets: () => opts.maxSockets } as unknown as Quotas;
    const connections = new Connections();
    const g = createAccessGate({ keys, origins: createOriginPolicy({ corsOrigins: [] }), connections, quotas });
    const url = await listen((req, res) => {
      const pathname = new URL(req.url ?? '/', 'http://x').pathname;
      if (!g.screen(req, res, pathname)) return;
      if (pathname !== '/graphql') return void res.end('passed');
      const who = g.graphql(req, res);
      if (!who) return;
      if ((req.headers.accept ?? '').includes('text/event-stream')) {
        res.writeHead(200, { 'content-type': 'text/event-stream' });
        res.write(`data: ${JSON.stringify(who)}\n\n`);
        return; // held open, as a stream is
      }
      res.end(JSON.stringify(who));
    });
    return { url, connections };
  }
  const codeOf = (body: string) => (JSON.parse(body) as { errors: { extensions: { code: string }; message: string }[] }).errors[0];

  test('screen: a foreign origin is 403 except for GET and HEAD of kept media', async () => {
    const { url } = await gate({});
    const evil = { origin: 'https://evil.example' };
    expect((await raw(url, { method: 'GET', path: '/media/a.mp4', headers: evil })).body).toBe('passed');
    expect((await raw(url, { method: 'HEAD', path: '/media/a.mp4', headers: evil })).status).toBe(200);
    for (const [method, path] of [['POST', '/media/a.mp4'], ['GET', '/other/media/a.mp4'], ['GET', '/graphql']]) {
      const res = await raw(url, { method, path, headers: evil, body: method === 'POST' ? 'x'.repeat(100_000) : undefined });
      expect(res.status, `${method} ${path}`).toBe(403);
      expect(codeOf(res.body)).toEqual({ message: 'requests from origin https://evil.example are not allowed (see CORS_ORIGINS)', extensions: { code: 'FORBIDDEN_ORIGIN' } });
    }
    expect((await raw(url, { method: 'GET', path: '/page' })).body).toBe('passed');
  });

  test('screen: in open mode a Host that is not this machine is 403 FORBIDDEN_HOST', async () => {
    const open = await gate({ open: true });
    const res = await raw(open.url, { method: 'GET', path: '/page', headers: { host: 'rebound.example' } });
    expect(res.status).toBe(403);
    expect(codeOf(res.body)?.extensions.code).toBe('FORBIDDEN_HOST');
    expect((await raw(open.url, { method: 'GET', path: '/page', headers: { host: 'localhost' } })).body).toBe('passed');
    // With keys, the Host is not judged.
    const closed = await gate({});
    expect((await raw(closed.url, { method: 'GET', path: '/page', headers: { host: 'rebound.example' } })).body).toBe('passed');
  });

  test('graphql: a key is needed except for the GraphiQL page; a bad one is 401 with a Bearer challenge', async () => {
    const { url } = await gate({});
    expect(JSON.parse((await raw(url, { method: 'GET', headers: { accept: 'text/html' } })).body)).toEqual({});
    for (const [method, headers] of [
      ['GET', { accept: 'application/json' }],
      ['POST', { accept: 'text/html' }],
      ['POST', { authorization: 'Bearer bad' }],
      ['POST', {}],
    ] as [string, Record<string, string>][]) {
      const res = await raw(url, { method, headers, body: method === 'POST' ? '{}' : undefined });
      expect(res.status, JSON.stringify(headers)).toBe(401);
      expect(res.headers['www-authenticate']).toBe('Bearer');
      expect(codeOf(res.body)).toEqual({ message: UNAUTHENTICATED_MESSAGE, extensions: { code: 'UNAUTHENTICATED' } });
    }
    const ok = await raw(url, { method: 'POST', headers: { authorization: 'Bearer good' }, body: '{}' });
    expect(JSON.parse(ok.body)).toEqual({ principal: { owner: 'key-1', key: KEY } });
    // Open mode: everyone is the open-mode principal.
    const open = await gate({ open: true });
    expect(JSON.parse((await raw(open.url, { method: 'POST', body: '{}' })).body)).toEqual({ principal: { owner: null } });
  });

  /** Opens an SSE request and resolves once its first event (or a refusal) is in. */
  function sse(url: string) {
    return new Promise<{ status: number; first: string; close: () => void; ended: Promise<void> }>((resolve, reject) => {
      const req = request(`${url}/graphql`, { method: 'POST', headers: { authorization: 'Bearer good', accept: 'text/event-stream' } }, (res) => {
        const ended = new Promise<void>((r) => res.once('close', () => r()));
        res.once('data', (d) => resolve({ status: must(res.statusCode), first: String(d), close: () => req.destroy(), ended }));
        res.on('error', () => {}); // the server cutting the stream
      });
      req.on('error', reject);
      req.end('{}');
    });
  }

  test('graphql: SSE streams of one key are counted up to MAX_SOCKETS_PER_KEY, and released when they close', async () => {
    const { url, connections } = await gate({ maxSockets: 2 });
    const a = await sse(url);
    const b = await sse(url);
    expect([a.status, b.status]).toEqual([200, 200]);
    expect(connections.count('key-1')).toBe(2);
    // A plain request of the same key is no stream: neither counted against the limit nor refused.
    const plain = await raw(url, { method: 'POST', headers: { authorization: 'Bearer good' }, body: '{}' });
    expect(plain.status).toBe(200);
    const refused = await sse(url);
    expect(refused.status).toBe(429);
    expect(codeOf(refused.first)).toEqual({ message: tooManySockets(2), extensions: { code: 'TOO_MANY_SOCKETS' } });
    expect(tooManySockets(2)).toBe('this key already holds 2 WebSocket connections and SSE streams (MAX_SOCKETS_PER_KEY)');
    a.close();
    await waitFor(() => connections.count('key-1'), (n) => n === 1);
    const c = await sse(url);
    expect(c.status).toBe(200);
    // A revoked key's streams are cut: closing the owner's connections ends both responses.
    expect(connections.closeOwners(['key-1'])).toBe(2);
    await Promise.all([b.ended, c.ended]);
    await waitFor(() => connections.count('key-1'), (n) => n === 0);
  });

  test('graphql: without a socket limit SSE streams are tracked but never refused; plain requests are not tracked', async () => {
    const { url, connections } = await gate({});
    const streams = [await sse(url), await sse(url), await sse(url)];
    expect(streams.map((s) => s.status)).toEqual([200, 200, 200]);
    expect(connections.count('key-1')).toBe(3);
    await raw(url, { method: 'POST', headers: { authorization: 'Bearer good' }, body: '{}' });
    expect(connections.count('key-1')).toBe(3);
    for (const s of streams) s.close();
    await waitFor(() => connections.count('key-1'), (n) => n === 0);
  });
});
