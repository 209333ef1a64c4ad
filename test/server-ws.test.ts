import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createSchema, createYoga } from 'graphql-yoga';
import { describe, expect, test } from 'vitest';
import WebSocket from 'ws';
import { Connections } from '../src/auth/connections.js';
import type { Keys } from '../src/auth/keys.js';
import { UNAUTHENTICATED_MESSAGE, type Principal } from '../src/auth/principal.js';
import type { Quotas } from '../src/auth/quotas.js';
import { createOriginPolicy } from '../src/server/origin.js';
import { attachGraphqlWs } from '../src/server/ws.js';
import type { Yoga } from '../src/server/yoga.js';
import { MAX_REQUEST_BYTES } from '../src/validation/limits.js';
import { waitFor } from './helpers/app.js';
import { onDispose } from './helpers/dispose.js';

/**
 * attachGraphqlWs on a loopback node:http server with a minimal yoga: close codes and reasons,
 * per-key socket limits, per-socket operation limits, revocation, errors that stay per operation.
 * Clients are raw `ws` sockets speaking graphql-transport-ws, so every frame and close is seen.
 */

type Message = { id?: string; type: string; payload?: unknown };

async function rig(opts: { open?: boolean; maxSockets?: number; maxSubscriptions?: number } = {}) {
  const revoked = new Set<string>();
  const state = { open: opts.open === true };
  const keys = {
    isEmpty: () => state.open,
    verify: (t: string) => (t === 'good' || t === 'other' ? { id: t === 'good' ? 'k1' : 'k2' } : undefined),
    isLive: (id: string) => !revoked.has(id),
  } as unknown as Keys;
  const quotas = {
    maxSockets: (p: Principal) => (p.key ? (opts.maxSockets ?? 1) : undefined),
    settings: { maxSubscriptionsPerSocket: opts.maxSubscriptions ?? 2 },
  } as unknown as Quotas;
  const connections = new Connections();
  let stopped = 0;
  const yoga = createYoga({
    schema: createSchema({
      typeDefs: `
        type Query { whoami: String, echo(s: String!): String, hasSocket: Boolean, hasReq: Boolean }
        type Subscription { ticks(n: Int!): Int, forever: Int }
      `,
      resolvers: {
        Query: {
          whoami: (_: unknown, __: unknown, ctx: { principal?: Principal }) => (ctx.principal ? (ctx.principal.owner ?? 'open') : 'nobody'),
          echo: (_: unknown, { s }: { s: string }) => s,
          hasSocket: (_: unknown, __: unknown, ctx: { socket?: unknown }) => ctx.socket instanceof WebSocket,
          hasReq: (_: unknown, __: unknown, ctx: { req?: { url?: string } }) => ctx.req?.url === '/graphql',
        },
        Subscription: {
          ticks: {
            subscribe: async function* (_: unknown, { n }: { n: number }) {
              for (let i = 1; i <= n; i++) yield { ticks: i };
            },
          },
          forever: {
            // One event, then open until ended: return() is what graphql-ws calls to stop it.
            subscribe: () => {
              let sent = false;
              let end: (() => void) | undefined;
              const ended = new Promise<IteratorResult<unknown>>((resolve) => (end = () => resolve({ done: true, value: undefined })));
              return {
                next: () => {
                  if (sent) return ended;
                  sent = true;
                  return Promise.resolve({ done: false, value: { forever: 0 } });
                },
                return: () => {
                  stopped++;
                  end?.();
                  return Promise.resolve({ done: true, value: undefined });
                },
                [Symbol.asyncIterator]() {
                  return this;
                },
              };
            },
          },
        },
      },
    }),
    logging: false,
  }) as unknown as Yoga;
  const server = createServer((_req, res) => res.writeHead(404).end());
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const dispose = attachGraphqlWs(server, yoga, { keys, origins: createOriginPolicy({ corsOrigins: [] }), connections, quotas });
  let disposed = false;
  onDispose(async () => {
    if (!disposed) await dispose();
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
  });
  const port = (server.address() as AddressInfo).port;
  return {
    port,
    url: `ws://127.0.0.1:${port}/graphql`,
    connections,
    revoke: (id: string) => revoked.add(id),
    setOpen: (v: boolean) => (state.open = v),
    stopped: () => stopped,
    dispose: async () => {
      disposed = true;
      await dispose();
    },
  };
}

/** A raw graphql-transport-ws client: every message queued, the close recorded. */
function client(url: string, headers: Record<string, string> = {}) {
  const ws = new WebSocket(url, 'graphql-transport-ws', { headers });
  const queue: Message[] = [];
  let waiter: (() => void) | undefined;
  ws.on('message', (data) => {
    queue.push(JSON.parse(String(data)) as Message);
    waiter?.();
  });
  const closedP = new Promise<{ code: number; reason: string }>((resolve) => ws.on('close', (code, reason) => resolve({ code, reason: String(reason) })));
  const refusedP = new Promise<{ status: number; body: string }>((resolve) =>
    ws.on('unexpected-response', (_req, res) => {
      let body = '';
      res.on('data', (d) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    }),
  );
  ws.on('error', () => {});
  const openedP = new Promise<void>((resolve) => ws.on('open', () => resolve()));
  async function next(): Promise<Message> {
    const deadline = Date.now() + 5000;
    while (!queue.length) {
      if (Date.now() > deadline) throw new Error('no message within 5 s');
      await new Promise<void>((r) => {
        waiter = r;
        setTimeout(r, 100);
      });
    }
    return queue.shift() as Message;
  }
  const send = (m: Message | Record<string, unknown>) => ws.send(JSON.stringify(m));
  async function init(params?: Record<string, unknown>) {
    await openedP;
    send({ type: 'connection_init', payload: params });
  }
  /** Runs one operation to its end: every `next` payload, then the closing message. */
  async function run(id: string, query: string, variables?: Record<string, unknown>, operationName?: string) {
    send({ id, type: 'subscribe', payload: { query, variables, operationName } });
    const payloads: unknown[] = [];
    for (;;) {
      const m = await next();
      expect(m.id).toBe(id);
      if (m.type === 'next') payloads.push(m.payload);
      else return { payloads, end: m };
    }
  }
  onDispose(() => ws.terminate());
  return {
    ws,
    next,
    send,
    init,
    run,
    closed: () => within(closedP, 'the close'),
    refused: () => within(refusedP, 'a refused upgrade'),
    opened: () => within(openedP, 'the open'),
    queue,
  };
}

const authorization = 'Bearer good';

/** The promise, or a failure after 5 s: a socket event that never comes fails the test at once instead of hanging it. */
function within<T>(promise: Promise<T>, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no ${what} within 5 s`)), 5000);
  });
  return Promise.race([promise, deadline]).finally(() => clearTimeout(timer));
}

describe('graphql over WebSocket', () => {
  test('a key in connection_init is acked; queries and subscriptions run with its principal, the socket and the upgrade request', async () => {
    const r = await rig();
    const c = client(r.url);
    await c.init({ authorization });
    expect(await c.next()).toEqual({ type: 'connection_ack' });
    expect(await c.run('1', '{ whoami hasSocket hasReq }')).toEqual({ payloads: [{ data: { whoami: 'k1', hasSocket: true, hasReq: true } }], end: { id: '1', type: 'complete' } });
    expect(await c.run('2', 'subscription T($n: Int!) { ticks(n: $n) }', { n: 3 })).toEqual({
      payloads: [{ data: { ticks: 1 } }, { data: { ticks: 2 } }, { data: { ticks: 3 } }],
      end: { id: '2', type: 'complete' },
    });
    const two = 'query A { echo(s: "a") } query B { echo(s: "b") }';
    expect((await c.run('3', two, undefined, 'B')).payloads).toEqual([{ data: { echo: 'b' } }]);
    expect(r.connections.count('k1')).toBe(1);
  });

  test('a missing, malformed or unknown key is closed 4401 UNAUTHENTICATED and not tracked', async () => {
    const r = await rig();
    for (const params of [undefined, {}, { authorization: 'Bearer nope' }, { authorization: 'good' }, { authorization: 42 }]) {
      const c = client(r.url);
      await c.init(params);
      expect(await c.closed(), JSON.stringify(params)).toEqual({ code: 4401, reason: 'UNAUTHENTICATED' });
      expect(c.queue).toEqual([]);
    }
    expect(r.connections.owners()).toEqual([]);
  });

  test('open mode needs no key; its sockets are not limited in number', async () => {
    const r = await rig({ open: true, maxSockets: 1 });
    const a = client(r.url.replace('127.0.0.1', 'localhost'));
    const b = client(r.url);
    for (const c of [a, b]) {
      await c.init();
      expect(await c.next()).toEqual({ type: 'connection_ack' });
      expect((await c.run('1', '{ whoami }')).payloads).toEqual([{ data: { whoami: 'open' } }]);
    }
    expect(r.connections.count(null)).toBe(2);
  });

  test("a key's sockets beyond MAX_SOCKETS_PER_KEY are closed 4429 TOO_MANY_SOCKETS; a closed one frees its place", async () => {
    const r = await rig({ maxSockets: 2 });
    const a = client(r.url);
    await a.init({ authorization });
    expect(await a.next()).toEqual({ type: 'connection_ack' });
    const b = client(r.url);
    await b.init({ authorization });
    expect(await b.next()).toEqual({ type: 'connection_ack' });
    const c = client(r.url);
    await c.init({ authorization });
    expect(await c.closed()).toEqual({ code: 4429, reason: 'TOO_MANY_SOCKETS' });
    // Another key is counted on its own.
    const other = client(r.url);
    await other.init({ authorization: 'Bearer other' });
    expect(await other.next()).toEqual({ type: 'connection_ack' });
    expect(r.connections.count('k1')).toBe(2);
    a.ws.close(1000);
    await a.closed();
    await waitFor(
      () => r.connections.count('k1'),
      (n) => n === 1,
      5000,
    );
    const d = client(r.url);
    await d.init({ authorization });
    expect(await d.next()).toEqual({ type: 'connection_ack' });
    expect(r.connections.count('k1')).toBe(2);
  });

  test('a revoked key: its sockets are closed 4401 by the watcher, and its next operation is refused before that', async () => {
    const r = await rig({ maxSockets: 5 });
    const a = client(r.url);
    await a.init({ authorization });
    expect(await a.next()).toEqual({ type: 'connection_ack' });
    const sub = client(r.url);
    await sub.init({ authorization });
    expect(await sub.next()).toEqual({ type: 'connection_ack' });
    sub.send({ id: 's', type: 'subscribe', payload: { query: 'subscription { forever }' } });
    expect(await sub.next()).toEqual({ id: 's', type: 'next', payload: { data: { forever: 0 } } });

    r.revoke('k1');
    a.send({ id: '1', type: 'subscribe', payload: { query: '{ whoami }' } });
    expect(await a.closed()).toEqual({ code: 4401, reason: 'UNAUTHENTICATED' });
    // Closed first: an error frame may or may not get out, but never an answer.
    expect(a.queue.filter((m) => m.type !== 'error')).toEqual([]);
    for (const m of a.queue) expect(m).toEqual({ id: '1', type: 'error', payload: [{ message: UNAUTHENTICATED_MESSAGE, extensions: { code: 'UNAUTHENTICATED' } }] });

    // Its close released its place.
    await waitFor(
      () => r.connections.count('k1'),
      (n) => n === 1,
      5000,
    );
    // The watcher's part: the connections of the owner are closed, and their operations stopped.
    expect(r.connections.closeOwners(['k1'])).toBe(1);
    expect(await sub.closed()).toEqual({ code: 4401, reason: 'UNAUTHENTICATED' });
    await waitFor(r.stopped, (n) => n === 1, 5000);
    await waitFor(
      () => r.connections.owners().length,
      (n) => n === 0,
      5000,
    );
  });

  test('a revoked socket whose client never answers the close is cut off after 1 s, and its place released', async () => {
    const r = await rig({ maxSockets: 5 });
    const c = client(r.url);
    await c.init({ authorization });
    expect(await c.next()).toEqual({ type: 'connection_ack' });
    // The client stops reading: it never sees the close frame, so never answers it (ws itself would wait 30 s).
    (c.ws as unknown as { _socket: { pause(): void } })._socket.pause();
    const started = Date.now();
    expect(r.connections.closeOwners(['k1'])).toBe(1);
    await waitFor(
      () => r.connections.count('k1'),
      (n) => n === 0,
      10_000,
    );
    const took = Date.now() - started;
    expect(took).toBeGreaterThanOrEqual(900);
    expect(took).toBeLessThan(10_000);
  });

  test('an open-mode socket is refused from its next operation once a key exists', async () => {
    const r = await rig({ open: true });
    const c = client(r.url);
    await c.init();
    expect(await c.next()).toEqual({ type: 'connection_ack' });
    r.setOpen(false);
    c.send({ id: '1', type: 'subscribe', payload: { query: '{ whoami }' } });
    expect(await c.closed()).toEqual({ code: 4401, reason: 'UNAUTHENTICATED' });
    expect(c.queue.filter((m) => m.type !== 'error')).toEqual([]);
  });

  test('at most MAX_SUBSCRIPTIONS_PER_SOCKET operations at once; the one over is refused alone', async () => {
    const r = await rig({ maxSubscriptions: 2 });
    const c = client(r.url);
    await c.init({ authorization });
    expect(await c.next()).toEqual({ type: 'connection_ack' });
    for (const id of ['a', 'b']) {
      c.send({ id, type: 'subscribe', payload: { query: 'subscription { forever }' } });
      expect(await c.next()).toEqual({ id, type: 'next', payload: { data: { forever: 0 } } });
    }
    expect(await c.run('c', '{ whoami }')).toEqual({
      payloads: [],
      end: {
        id: 'c',
        type: 'error',
        payload: [{ message: 'at most 2 operations at once on one socket (MAX_SUBSCRIPTIONS_PER_SOCKET)', extensions: { code: 'TOO_MANY_SUBSCRIPTIONS' } }],
      },
    });
    // Ending one makes room again; the socket stayed open throughout.
    c.send({ id: 'a', type: 'complete' });
    await waitFor(r.stopped, (n) => n === 1, 5000);
    expect((await c.run('d', '{ whoami }')).payloads).toEqual([{ data: { whoami: 'k1' } }]);
    expect(c.ws.readyState).toBe(WebSocket.OPEN);
  });

  test('a syntax error or an invalid operation is that operation’s error; the socket stays open', async () => {
    const r = await rig();
    const c = client(r.url);
    await c.init({ authorization });
    expect(await c.next()).toEqual({ type: 'connection_ack' });
    const syntax = await c.run('1', '{ whoami ');
    expect(syntax.end).toMatchObject({ id: '1', type: 'error', payload: [{ message: 'Syntax Error: Expected Name, found <EOF>.' }] });
    const invalid = await c.run('2', '{ nope }');
    expect(invalid.end).toMatchObject({ id: '2', type: 'error', payload: [{ message: 'Cannot query field "nope" on type "Query".' }] });
    expect((await c.run('3', '{ echo(s: "still here") }')).payloads).toEqual([{ data: { echo: 'still here' } }]);
  });

  test('a foreign Origin is refused 403 FORBIDDEN_ORIGIN at the upgrade; in open mode so is a Host that is not this machine', async () => {
    const r = await rig();
    const foreign = client(r.url, { origin: 'https://evil.example' });
    expect(await foreign.refused()).toEqual({ status: 403, body: 'FORBIDDEN_ORIGIN' });
    const same = client(r.url, { origin: `http://127.0.0.1:${r.port}` });
    await same.opened();
    const open = await rig({ open: true });
    const host = client(open.url, { host: 'gw.example' });
    expect(await host.refused()).toEqual({ status: 403, body: 'FORBIDDEN_HOST' });
  });

  test('a frame over MAX_REQUEST_BYTES closes the socket 1009; one at the limit is read', async () => {
    const r = await rig();
    const c = client(r.url);
    await c.init({ authorization });
    expect(await c.next()).toEqual({ type: 'connection_ack' });
    const frame = (size: number) => {
      const base = JSON.stringify({ id: 'x', type: 'subscribe', payload: { query: '{ nope(s: "") }' } });
      const text = JSON.stringify({ id: 'x', type: 'subscribe', payload: { query: `{ nope(s: "${'y'.repeat(size - base.length)}") }` } });
      expect(text.length).toBe(size);
      return text;
    };
    c.ws.send(frame(MAX_REQUEST_BYTES));
    const m = await c.next();
    expect(m).toMatchObject({ id: 'x', type: 'error' });
    c.ws.send(frame(MAX_REQUEST_BYTES + 1));
    expect((await c.closed()).code).toBe(1009);
  });

  test('the disposer closes every socket (1001) and the WebSocket server', async () => {
    const r = await rig();
    const c = client(r.url);
    await c.init({ authorization });
    expect(await c.next()).toEqual({ type: 'connection_ack' });
    await r.dispose();
    expect((await c.closed()).code).toBe(1001);
    const late = client(r.url);
    const outcome = await Promise.race([late.opened().then(() => 'opened'), late.closed().then(() => 'closed'), late.refused().then(() => 'refused')]);
    expect(outcome).not.toBe('opened');
  });
});
