import { readFileSync } from 'node:fs';
import type { Duplex } from 'node:stream';
import { type ExecutionResult, parse } from 'graphql';
import { MessageType, stringifyMessage } from 'graphql-ws';
import { describe, expect, test, vi } from 'vitest';
import WebSocket, { WebSocketServer } from 'ws';
import { PUSHES, type Pushable, type PushSink } from '../src/pushable.js';
import type { Context } from '../src/schema/context.js';
import { type FrameTarget, writeFramesTo } from '../src/server/shared-execution.js';
import { MAX_BUFFERED_BYTES, SocketFrames, textFrame } from '../src/server/ws.js';
import { startApp, waitFor } from './helpers/app.js';
import { onDispose } from './helpers/dispose.js';
import { must } from './helpers/must.js';
import { sharedSubscribeFn, watchedSchema } from './helpers/shared-execution.js';

/**
 * Issue 18: graphql-ws `next` frames written from inside the publish. Part one drives the plugin's
 * subscribe function directly with a source that pushes and a recording frame target; part two runs
 * the real server with a raw graphql-transport-ws socket and publishes rows itself.
 */

type Event = { n: number; fail?: boolean; slow?: boolean };

/** A source that pushes, as watch.ts's does: values emitted before `push` wait for it. */
function pushSource({ returnStops = true } = {}) {
  let sink: PushSink<Event> | undefined;
  const early: Array<[Event, boolean]> = [];
  let returned = false;
  const stream: Pushable<Event> = {
    [PUSHES]: true,
    push(to) {
      sink = to;
      for (const [e, last] of early.splice(0)) to.take(e, last);
    },
    next: () => Promise.reject(new Error('a pushing source is never iterated')),
    return: async () => {
      returned = true;
      // A source whose return() takes effect late goes on pushing.
      if (returnStops) sink = undefined;
      return { done: true, value: undefined };
    },
    [Symbol.asyncIterator]() {
      return this;
    },
  };
  return {
    stream,
    emit(e: Event, last = false) {
      if (sink) sink.take(e, last);
      else early.push([e, last]);
    },
    returned: () => returned,
  };
}

function rig() {
  let executions = 0;
  const sources: ReturnType<typeof pushSource>[] = [];
  /** Emitted by the next source as soon as it exists, before the plugin attaches (watch.ts's current row). */
  const preload: Event[] = [];
  const sourceOptions = { returnStops: true };
  const schema = watchedSchema<Event>(
    ['tag'],
    () => {
      const s = pushSource(sourceOptions);
      sources.push(s);
      for (const e of preload.splice(0)) s.emit(e);
      return s.stream;
    },
    (event, args) => {
      executions++;
      if (event.fail) throw new Error(`resolver failed on ${event.n}`);
      const value = { n: event.n, tag: args.tag ?? null };
      return event.slow ? Promise.resolve(value) : value;
    },
  );
  const run = sharedSubscribeFn();

  /** A recording frame target; `open` and `fail` can be switched. */
  const target = (id: string) => {
    const frames: string[] = [];
    const state = { open: true, fail: false };
    const t: FrameTarget = {
      id,
      open: () => state.open,
      send: (head, tail) => {
        if (state.fail) throw new Error('the socket refused the write');
        frames.push(Buffer.concat([head, tail]).toString());
      },
    };
    return { t, frames, state };
  };

  /** Subscribes with a frame target (graphql-ws) or without (SSE); returns the iterator graphql-ws would read. */
  async function subscribe(to?: FrameTarget, variables: Record<string, unknown> = {}) {
    const contextValue = { principal: { owner: 'alice' }, baseUrl: () => 'http://gw.example' } as unknown as Context;
    if (to) writeFramesTo(contextValue, to);
    const stream = await run({ schema, document: DOC, contextValue, variableValues: variables });
    if (!(Symbol.asyncIterator in stream)) throw new Error(`not a stream: ${JSON.stringify(stream)}`);
    return { stream, source: must(sources.at(-1)) };
  }
  return { subscribe, target, preload, sourceOptions, executions: () => executions };
}

const DOC = parse('subscription W($tag: String) { watched(tag: $tag) { n tag } }');

/** The frame graphql-ws itself would send for this result. */
const graphqlWsFrame = (id: string, payload: ExecutionResult) => stringifyMessage({ id, type: MessageType.Next, payload });

describe('frames written from inside the publish', () => {
  test('a value is written as the frame graphql-ws would send, synchronously inside the emit, with the id escaped', async () => {
    const r = rig();
    const id = 'a"b\\c\u2028';
    const to = r.target(id);
    const { stream, source } = await r.subscribe(to.t, { tag: 'x' });
    void stream.next(); // graphql-ws starts reading
    source.emit({ n: 1 });
    // No await between the emit and this line: the frame is already written.
    expect(to.frames).toEqual([graphqlWsFrame(id, { data: { watched: { n: 1, tag: 'x' } } })]);
    expect(JSON.parse(must(to.frames[0]))).toEqual({ id, type: 'next', payload: { data: { watched: { n: 1, tag: 'x' } } } });
  });

  test("a subscriber's part of the frame is bytes of its own, not a slice of Node's shared Buffer pool (whose 8 KB slab it would keep alive)", async () => {
    const r = rig();
    const heads: Uint8Array[] = [];
    const { stream, source } = await r.subscribe({ id: 'op-1', open: () => true, send: (head) => heads.push(head) });
    void stream.next();
    source.emit({ n: 1 });
    source.emit({ n: 2 });
    const head = must(heads[0]);
    expect(Buffer.from(head).toString()).toBe('{"id":"op-1","type":"next","payload":');
    expect(head.buffer.byteLength).toBe(head.byteLength);
    expect(heads[1]).toBe(head); // encoded once
  });

  test('subscribers of one operation share one execution and one JSON serialisation; each frame carries its own id', async () => {
    const r = rig();
    const targets = ['1', '2', '3'].map((id) => r.target(id));
    const subs = [];
    for (const to of targets) subs.push(await r.subscribe(to.t));
    for (const s of subs) void s.stream.next();
    const event = { n: 5 };
    const stringify = vi.spyOn(JSON, 'stringify');
    try {
      for (const s of subs) s.source.emit(event);
      expect(stringify).toHaveBeenCalledTimes(1);
    } finally {
      stringify.mockRestore();
    }
    expect(r.executions()).toBe(1);
    expect(targets.map((to) => to.frames)).toEqual(['1', '2', '3'].map((id) => [graphqlWsFrame(id, { data: { watched: { n: 5, tag: null } } })]));
  });

  test('values emitted before the subscription is set up are written first, in order', async () => {
    const r = rig();
    const to = r.target('early');
    r.preload.push({ n: 1 }, { n: 2 });
    const sub = await r.subscribe(to.t);
    // Nothing before graphql-ws reads the iterator: it does so only once it has registered the
    // operation, so a client's `complete` that came first gets no frame after it.
    expect(to.frames).toEqual([]);
    void sub.stream.next();
    expect(to.frames.map((f) => JSON.parse(f).payload.data.watched.n)).toEqual([1, 2]);
    sub.source.emit({ n: 3 });
    expect(to.frames.map((f) => JSON.parse(f).payload.data.watched.n)).toEqual([1, 2, 3]);
  });

  test('the iterator ends after the last value (so graphql-ws sends complete after the last frame), and not before', async () => {
    const r = rig();
    const to = r.target('1');
    const { stream, source } = await r.subscribe(to.t);
    const first = stream.next();
    source.emit({ n: 1 });
    let settled = false;
    void first.then(() => (settled = true));
    await Promise.resolve();
    await Promise.resolve();
    expect(settled).toBe(false); // a value written directly is not also handed to graphql-ws
    source.emit({ n: 2 }, true);
    expect(await first).toEqual({ done: true, value: undefined });
    expect(to.frames).toHaveLength(2);
    expect(await stream.next()).toEqual({ done: true, value: undefined });
  });

  test('every subscription ended in one publish ends, its last frame written first; one that owed a value hands it over, then ends', async () => {
    const r = rig();
    const subs: Array<{ to: ReturnType<typeof r.target> } & Awaited<ReturnType<typeof r.subscribe>>> = [];
    for (const id of ['1', '2', '3']) {
      const to = r.target(id);
      subs.push({ to, ...(await r.subscribe(to.t)) });
    }
    const waiting = subs.map((s) => s.stream.next());
    const framesWhenEnded: number[] = [];
    for (const [i, w] of waiting.entries()) void w.then(() => framesWhenEnded.push(must(subs[i]).to.frames.length));
    // One synchronous turn, as a publish: each one's last value.
    for (const s of subs) s.source.emit({ n: 1 }, true);
    expect(await Promise.all(waiting)).toEqual(Array(3).fill({ done: true, value: undefined }));
    expect(framesWhenEnded).toEqual([1, 1, 1]);
    const owing = await r.subscribe(r.target('4').t);
    const first = owing.stream.next();
    owing.source.emit({ n: 3, fail: true }, true);
    expect(((await first).value as ExecutionResult).errors?.map((e) => e.message)).toEqual(['resolver failed on 3']);
    expect(await owing.stream.next()).toEqual({ done: true, value: undefined });
  });

  test('a result with errors goes through the iterator (for yoga to mask), and so does every later value, in order', async () => {
    const r = rig();
    const to = r.target('1');
    const { stream, source } = await r.subscribe(to.t);
    const first = stream.next();
    source.emit({ n: 1 });
    source.emit({ n: 2, fail: true });
    source.emit({ n: 3 });
    source.emit({ n: 4 }, true);
    expect(to.frames.map((f) => JSON.parse(f).payload.data.watched.n)).toEqual([1]);
    const failed = (await first).value as ExecutionResult;
    expect(failed.errors?.map((e) => e.message)).toEqual(['resolver failed on 2']);
    expect(((await stream.next()).value as ExecutionResult).data).toEqual({ watched: { n: 3, tag: null } });
    expect(((await stream.next()).value as ExecutionResult).data).toEqual({ watched: { n: 4, tag: null } });
    expect((await stream.next()).done).toBe(true);
  });

  test('a result that resolves asynchronously goes through the iterator, with what follows it', async () => {
    const r = rig();
    const to = r.target('1');
    const { stream, source } = await r.subscribe(to.t);
    const waiting = stream.next(); // graphql-ws already waits when the value comes
    source.emit({ n: 1, slow: true });
    source.emit({ n: 2 }, true);
    expect(to.frames).toEqual([]);
    expect(((await waiting).value as ExecutionResult).data).toEqual({ watched: { n: 1, tag: null } });
    expect(((await stream.next()).value as ExecutionResult).data).toEqual({ watched: { n: 2, tag: null } });
    expect((await stream.next()).done).toBe(true);
  });

  test('a socket that is no longer open gets nothing written: the values go to graphql-ws instead', async () => {
    const r = rig();
    const to = r.target('1');
    const { stream, source } = await r.subscribe(to.t);
    to.state.open = false;
    source.emit({ n: 1 });
    expect(to.frames).toEqual([]);
    expect(((await stream.next()).value as ExecutionResult).data).toEqual({ watched: { n: 1, tag: null } });
  });

  test('a write that throws stays with its subscriber: the publisher goes on, graphql-ws gets the error, and the source is let go', async () => {
    const r = rig();
    const to = r.target('1');
    const other = r.target('2');
    const a = await r.subscribe(to.t);
    const b = await r.subscribe(other.t);
    const aFirst = a.stream.next();
    void b.stream.next();
    to.state.fail = true;
    expect(() => a.source.emit({ n: 1 })).not.toThrow();
    // A second value in the same turn must not be written past the failed one.
    to.state.fail = false;
    a.source.emit({ n: 2 });
    expect(to.frames).toEqual([]);
    b.source.emit({ n: 1 });
    expect(other.frames).toHaveLength(1);
    await expect(aFirst).rejects.toThrow('the socket refused the write');
    expect(a.source.returned()).toBe(true);
    expect((await a.stream.next()).done).toBe(true);
  });

  test('return() (the client completed the operation) lets the source go and ends a pending next()', async () => {
    const r = rig();
    const to = r.target('1');
    const { stream, source } = await r.subscribe(to.t);
    const pending = stream.next();
    await stream.return?.();
    expect(source.returned()).toBe(true);
    expect(await pending).toEqual({ done: true, value: undefined });
    source.emit({ n: 1 });
    expect(to.frames).toEqual([]);
  });

  test('return() drops what was still owed to graphql-ws: a next() after it finds the end, not a late value', async () => {
    const r = rig();
    const to = r.target('1');
    const { stream, source } = await r.subscribe(to.t);
    const first = stream.next();
    source.emit({ n: 1, slow: true }); // owed: handed to the next() already waiting
    source.emit({ n: 2 }); // owed behind it, not read yet
    expect(((await first).value as ExecutionResult).data).toEqual({ watched: { n: 1, tag: null } });
    await stream.return?.();
    expect(await stream.next()).toEqual({ done: true, value: undefined });
    expect(to.frames).toEqual([]);
  });

  test('a source that goes on pushing after return() (or after its last value) gets nothing more written', async () => {
    const r = rig();
    r.sourceOptions.returnStops = false;
    const to = r.target('1');
    const { stream, source } = await r.subscribe(to.t);
    void stream.next();
    source.emit({ n: 1 });
    await stream.return?.();
    source.emit({ n: 2 });
    const after = r.target('2');
    const ended = await r.subscribe(after.t);
    void ended.stream.next();
    ended.source.emit({ n: 1 }, true);
    ended.source.emit({ n: 2 });
    expect([to.frames.length, after.frames.length]).toEqual([1, 1]);
    expect(source.returned()).toBe(true);
  });

  test('throw() (as a consumer may call it) ends the subscription: the source is let go and the error rethrown', async () => {
    const r = rig();
    const to = r.target('1');
    const { stream, source } = await r.subscribe(to.t);
    void stream.next();
    await expect(stream.throw?.(new Error('consumer gave up'))).rejects.toThrow('consumer gave up');
    expect(source.returned()).toBe(true);
    expect(await stream.next()).toEqual({ done: true, value: undefined });
  });

  test('without a frame target (SSE, HTTP) a pushing source is iterated and nothing is written', async () => {
    const r = rig();
    const { stream, source } = await r.subscribe();
    const waiting = stream.next();
    await expect(waiting).rejects.toThrow('a pushing source is never iterated');
    expect(source.returned()).toBe(false);
  });
});

test('a source that cannot push (a `push` method without the marker included) is iterated even with a frame target, and nothing is written', async () => {
  const schema = watchedSchema<Event>(
    ['tag'],
    () =>
      Object.assign(
        (async function* () {
          yield { n: 1 };
          yield { n: 2 };
        })(),
        // A queue one pushes into, say: the opposite of Pushable's push.
        { push: () => expect.fail('push() called on a source that is not Pushable') },
      ),
    (event) => ({ n: event.n, tag: null }),
  );
  const frames: string[] = [];
  const contextValue = { principal: { owner: 'alice' }, baseUrl: () => 'http://gw.example' } as unknown as Context;
  writeFramesTo(contextValue, { id: '1', open: () => true, send: (head, tail) => frames.push(Buffer.concat([head, tail]).toString()) });
  const stream = await sharedSubscribeFn()({ schema, document: DOC, contextValue, variableValues: {} });
  if (!(Symbol.asyncIterator in stream)) throw new Error('not a stream');
  const values = [];
  for await (const v of stream) values.push(v.data);
  expect(values).toEqual([{ watched: { n: 1, tag: null } }, { watched: { n: 2, tag: null } }]);
  expect(frames).toEqual([]);
});

test("a socket's frame target is open only while the socket is open and its unsent bytes are under MAX_BUFFERED_BYTES; it writes one whole frame to the raw socket", () => {
  const written: Buffer[] = [];
  const socket = { readyState: WebSocket.OPEN as number };
  const raw = { write: (b: Buffer) => written.push(b) > 0, writableLength: 0 };
  const target = new SocketFrames('op', socket as never, raw as never);
  expect(target.id).toBe('op');
  expect(target.open()).toBe(true);
  raw.writableLength = MAX_BUFFERED_BYTES - 1;
  expect(target.open()).toBe(true);
  raw.writableLength = MAX_BUFFERED_BYTES; // a client that stopped reading
  expect(target.open()).toBe(false);
  raw.writableLength = 0;
  socket.readyState = WebSocket.CLOSING;
  expect(target.open()).toBe(false);
  target.send(Buffer.from('{"frame":'), Buffer.from('1}'));
  // One write: FIN + text, an unmasked 11-byte length, then the head's and the tail's bytes.
  expect(written).toEqual([Buffer.concat([Buffer.from([0x81, 11]), Buffer.from('{"frame":1}')])]);
  expect(MAX_BUFFERED_BYTES).toBe(1024 * 1024);
});

/**
 * A real ws connection on loopback, once open: the server's WebSocket, the TCP socket under it (the
 * upgrade request's, where SocketFrames writes) and the client. Both ends are closed after the test.
 */
async function wsConnection(): Promise<{ ws: WebSocket; raw: Duplex; client: WebSocket }> {
  const wss = new WebSocketServer({ port: 0, host: '127.0.0.1', perMessageDeflate: false });
  onDispose(() => new Promise<void>((resolve) => wss.close(() => resolve())));
  const accepted = new Promise<{ ws: WebSocket; raw: Duplex }>((resolve) => wss.on('connection', (ws, req) => resolve({ ws, raw: req.socket })));
  await new Promise<void>((resolve) => wss.on('listening', () => resolve()));
  const client = new WebSocket(`ws://127.0.0.1:${(wss.address() as { port: number }).port}`);
  onDispose(() => client.terminate());
  await new Promise<void>((resolve, reject) => {
    client.once('open', () => resolve());
    client.once('error', reject);
  });
  return { ...(await accepted), client };
}

test("on a real connection whose client stopped reading, the raw socket's writableLength is ws's bufferedAmount, and the frame target closes past MAX_BUFFERED_BYTES until it drains", async () => {
  const { ws, raw, client } = await wsConnection();
  const target = new SocketFrames('1', ws, raw);
  expect(target.open()).toBe(true);
  // The client's socket stops reading: what the kernel cannot take waits in the server's buffer.
  (client as unknown as { _socket: Duplex })._socket.pause();
  let received = 0;
  client.on('message', () => received++);
  // More than the kernel can hold for a socket (its send buffer's and the peer's receive buffer's
  // maximum) and MAX_BUFFERED_BYTES besides, so the rest must wait in the server's own buffer.
  const maxOf = (file: string) => Number(readFileSync(file, 'utf8').trim().split(/\s+/).at(-1));
  const kernelHolds = (() => {
    try {
      return maxOf('/proc/sys/net/ipv4/tcp_wmem') + maxOf('/proc/sys/net/ipv4/tcp_rmem');
    } catch {
      return 60 * 1024 * 1024;
    }
  })();
  ws.send('x'.repeat(kernelHolds + 2 * MAX_BUFFERED_BYTES));
  expect(raw.writableLength).toBeGreaterThan(MAX_BUFFERED_BYTES);
  expect(ws.bufferedAmount).toBe(raw.writableLength);
  expect(target.open()).toBe(false);
  (client as unknown as { _socket: Duplex })._socket.resume();
  await waitFor(() => received, (n) => n === 1, 20_000);
  expect(raw.writableLength).toBe(0);
  expect(ws.bufferedAmount).toBe(0);
  expect(target.open()).toBe(true);
});

describe('textFrame', () => {
  /**
   * Writes each frame straight to the TCP socket of a real ws server connection, as SocketFrames
   * does, and returns what a real ws client decoded: ws's receiver checks the header (FIN, opcode,
   * no mask from a server, the length's form) and refuses anything else by closing with 1002.
   */
  async function throughWs(frames: Buffer[]): Promise<{ texts: string[]; closed?: number }> {
    const { raw, client } = await wsConnection();
    const texts: string[] = [];
    let closed: number | undefined;
    client.on('message', (data, isBinary) => texts.push(isBinary ? 'binary!' : String(data)));
    client.on('close', (code) => (closed = code));
    client.on('error', () => undefined);
    for (const f of frames) raw.write(f);
    await waitFor(() => texts.length + (closed === undefined ? 0 : 1), (n) => n >= frames.length, 10_000);
    return { texts, closed };
  }

  test('each length form (7-bit up to 125 bytes, 16-bit up to 65,535, 64-bit beyond) reaches a ws client as the exact text, multi-byte characters counted in bytes', async () => {
    const head = '{"id":"ö→😀","payload":"';
    const headBytes = Buffer.byteLength(head);
    expect(headBytes).toBeGreaterThan(head.length);
    // Whole-message byte lengths at each edge of each form; the tail multi-byte too where it fits
    // (an odd count of 'x' makes up the rest, since 'é' is two bytes).
    // 1,000 as well: at 126 and 65,535 a wrong shift for the 16-bit length's high byte still gave
    // the right byte (0 and 255).
    const lengths = [headBytes + 2, 125, 126, 1_000, 65_535, 65_536, 200_000];
    const filler = (bytes: number) => (bytes >= 3 ? `é${'x'.repeat(bytes - 2)}` : 'x'.repeat(bytes));
    const texts = lengths.map((n) => `${head}${filler(n - headBytes - 2)}"}`);
    for (const [i, t] of texts.entries()) expect(Buffer.byteLength(t)).toBe(lengths[i]);
    const frames = texts.map((t) => textFrame(Buffer.from(head), Buffer.from(t.slice(head.length))));
    // The header's own size says which form was used.
    expect(frames.map((f, i) => f.length - (lengths[i] ?? 0))).toEqual([2, 2, 4, 4, 4, 10, 10]);
    const got = await throughWs(frames);
    expect(got.closed).toBeUndefined();
    expect(got.texts).toEqual(texts);
  });
});

test('the server never agrees to permessage-deflate, which SocketFrames\' raw frames rely on: a client offering it gets no extension', async () => {
  const t = await startApp();
  // ws's client offers permessage-deflate by default.
  const ws = new WebSocket(`${t.url.replace(/^http/, 'ws')}/graphql`, 'graphql-transport-ws', { perMessageDeflate: true });
  onDispose(() => ws.terminate());
  const offered = new Promise<string | undefined>((resolve) => ws.once('upgrade', (res) => resolve(res.headers['sec-websocket-extensions'])));
  await new Promise<void>((resolve, reject) => {
    ws.once('open', () => resolve());
    ws.once('error', reject);
  });
  expect(await offered).toBeUndefined();
  expect(ws.extensions).toBe('');
});

const CREATE = `mutation($p: String!) { createVideo(input: { prompt: $p }) { id } }`;
const FOLLOW = `subscription($id: ID!) { predictionUpdated(id: $id) { status error } }`;

/** A raw graphql-transport-ws socket: every frame's text kept, in arrival order. */
async function rawSocket(url: string) {
  const ws = new WebSocket(`${url.replace(/^http/, 'ws')}/graphql`, 'graphql-transport-ws');
  onDispose(() => ws.terminate());
  const texts: string[] = [];
  ws.on('message', (data) => texts.push(String(data)));
  await new Promise<void>((resolve, reject) => {
    ws.once('open', () => resolve());
    ws.once('error', reject);
  });
  ws.send(JSON.stringify({ type: 'connection_init' }));
  await waitFor(() => texts.length, (n) => n === 1, 5000);
  expect(JSON.parse(must(texts.shift()))).toEqual({ type: 'connection_ack' });
  return { ws, texts, send: (m: Record<string, unknown>) => ws.send(JSON.stringify(m)) };
}

describe('on the real server', () => {
  test('two operations on one socket: each frame is graphql-ws\'s own text, every id gets its changes in order and complete after its last one; one completed by the client gets nothing more', async () => {
    const t = await startApp();
    await t.app.poller.stop(); // only this test publishes
    const a = (await t.gql(CREATE, { p: 'frames a' })).body.data.createVideo.id as string;
    const b = (await t.gql(CREATE, { p: 'frames b' })).body.data.createVideo.id as string;
    const rowA = must(t.app.store.findById(a));
    const rowB = must(t.app.store.findById(b));
    const s = await rawSocket(t.url);
    const idA = 'op "a"';
    const idB = 'op\\b';
    const idGone = 'gone';
    s.send({ id: idA, type: 'subscribe', payload: { query: FOLLOW, variables: { id: a } } });
    s.send({ id: idB, type: 'subscribe', payload: { query: FOLLOW, variables: { id: b } } });
    s.send({ id: idGone, type: 'subscribe', payload: { query: FOLLOW, variables: { id: a } } });
    await waitFor(() => s.texts.length, (n) => n === 3, 5000); // the current row of each
    const listening = t.app.pubsub.count();
    s.send({ id: idGone, type: 'complete' });
    await waitFor(() => t.app.pubsub.count(), (n) => n === listening - 1, 5000);

    const publish = (row: typeof rowA, version: number, status: string, error: string | null = null) =>
      t.app.pubsub.publish('prediction:updated', row.id, { ...row, version, status, error } as typeof rowA);
    publish(rowA, rowA.version + 1, 'PROCESSING');
    publish(rowB, rowB.version + 1, 'PROCESSING');
    publish(rowA, rowA.version + 2, 'COMPLETED');
    publish(rowA, rowA.version + 3, 'FAILED', 'after the end'); // never delivered: A has ended
    publish(rowB, rowB.version + 2, 'FAILED', 'upstream said no');
    await waitFor(() => s.texts.filter((x) => JSON.parse(x).type === 'complete').length, (n) => n === 2, 5000);

    const frames = s.texts.map((x) => JSON.parse(x) as { id: string; type: string; payload?: { data: { predictionUpdated: { status: string; error: string | null } } } });
    // The exact text graphql-ws would have sent (key order and escaping included).
    for (const [i, f] of frames.entries()) expect(s.texts[i]).toBe(stringifyMessage(f as never));
    const of = (id: string) => frames.filter((f) => f.id === id).map((f) => (f.type === 'next' ? f.payload?.data.predictionUpdated.status : f.type));
    expect(of(idA)).toEqual(['CREATED', 'PROCESSING', 'COMPLETED', 'complete']);
    expect(of(idB)).toEqual(['CREATED', 'PROCESSING', 'FAILED', 'complete']);
    expect(of(idGone)).toEqual(['CREATED']);
    expect(frames.find((f) => f.id === idB && f.payload?.data.predictionUpdated.status === 'FAILED')?.payload?.data.predictionUpdated.error).toBe('upstream said no');
    await waitFor(() => t.app.pubsub.count(), (n) => n === listening - 3, 5000);
  });
});
