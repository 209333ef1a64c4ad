import { randomUUID } from 'node:crypto';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, type TestContext, test } from 'vitest';
import { startBridge } from '../src/bus/bridge.js';
import { type BusHandlers, type Change, type ChangeBus, decodeChange, encodeChange } from '../src/bus/bus.js';
import { PgChangeBus } from '../src/bus/pg.js';
import { MAX_KEPT, RedisChangeBus } from '../src/bus/redis.js';
import type { PredictionRow } from '../src/db/schema.js';
import { createPredictionPubSub } from '../src/pubsub.js';
import { waitFor } from './helpers/app.js';
import { onDispose } from './helpers/dispose.js';
import { startPostgres, type TestPostgres } from './helpers/postgres.js';
import { startRedis, type TestRedis } from './helpers/redis.js';
import { tcpProxy } from './helpers/tcp-proxy.js';
import { capturedLogger } from './helpers/stub-upstream.js';

/** Values a handler received, awaited one at a time with a deadline (no sleeps). */
class Inbox<T> {
  private readonly items: T[] = [];
  private waiter?: () => void;
  readonly all: T[] = [];
  push = (item: T) => {
    this.items.push(item);
    this.all.push(item);
    this.waiter?.();
  };
  async next(what: string, ms = 10_000): Promise<T> {
    const deadline = Date.now() + ms;
    while (!this.items.length) {
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out waiting for ${what}`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.waiter = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.waiter = undefined;
    }
    return this.items.shift() as T;
  }
}

function listener() {
  const changes = new Inbox<Change>();
  const reconnects = new Inbox<true>();
  const handlers: BusHandlers = { change: changes.push, reconnected: () => reconnects.push(true) };
  return { changes, reconnects, handlers };
}

const row = (id: string, version: number): PredictionRow => ({ id, version, status: version > 2 ? 'COMPLETED' : 'PROCESSING' }) as PredictionRow;

describe('announcements on the wire', () => {
  test('round-trip; own, malformed and out-of-range ones are dropped', () => {
    expect(decodeChange(encodeChange({ id: 'p1', version: 7 }, 'A'), 'B')).toEqual({ id: 'p1', version: 7 });
    expect(decodeChange(encodeChange({ id: 'p1', version: 7 }, 'A'), 'A')).toBeUndefined();
    for (const bad of ['', 'not json', 'null', '[]', '{"i":"p","v":1}', '{"i":"","v":1,"o":"A"}', '{"i":"p","v":0,"o":"A"}', '{"i":"p","v":1.5,"o":"A"}', '{"i":"p","v":"1","o":"A"}', '{"i":1,"v":1,"o":"A"}']) {
      expect(decodeChange(bad, 'B'), bad).toBeUndefined();
    }
  });
});

interface BusKit {
  make(instanceId: string): ChangeBus;
  /** Severs every listening connection; the buses must notice and reconnect. */
  cut(): Promise<void>;
}

/** Instances A and B on this bus, both listening. */
async function twoListening(k: Pick<BusKit, 'make'>) {
  const a = listener();
  const b = listener();
  const busA = k.make('A');
  const busB = k.make('B');
  onDispose(() => busA.close());
  onDispose(() => busB.close());
  await busA.start(a.handlers);
  await busB.start(b.handlers);
  return { a, b, busA, busB };
}

function busSuite(name: string, kit: () => BusKit | undefined) {
  /** The kit, or the test reported as skipped (not passed) when this bus is missing here. */
  const kitOrSkip = (ctx: TestContext): BusKit => {
    const k = kit();
    if (!k) ctx.skip();
    return k as BusKit;
  };

  test(`${name}: a change announced by one instance reaches the others, not itself`, async (ctx) => {
    const { a, b, busA, busB } = await twoListening(kitOrSkip(ctx));
    await busA.announce({ id: 'p1', version: 2 });
    expect(await b.changes.next('B to hear p1')).toEqual({ id: 'p1', version: 2 });
    // A listens too (it hears B), yet never heard its own p1.
    await busB.announce({ id: 'p2', version: 5 });
    expect(await a.changes.next('A to hear p2')).toEqual({ id: 'p2', version: 5 });
    expect(a.changes.all).toEqual([{ id: 'p2', version: 5 }]);
    expect(b.changes.all).toEqual([{ id: 'p1', version: 2 }]);
  });

  test(`${name}: a lost connection is reconnected, said once, and changes flow again`, async (ctx) => {
    const k = kitOrSkip(ctx);
    const { a, b, busA } = await twoListening(k);
    await k.cut();
    await b.reconnects.next('B to reconnect', 20_000);
    await a.reconnects.next('A to reconnect', 20_000);
    await busA.announce({ id: 'after', version: 3 });
    expect(await b.changes.next('B to hear a change after the reconnect')).toEqual({ id: 'after', version: 3 });
    expect(b.reconnects.all).toHaveLength(1);
  });

  test(`${name}: the bridge reads an announced row once and publishes it to local watchers only; a reconnect resyncs what was missed`, async (ctx) => {
    const k = kitOrSkip(ctx);
    const { log } = capturedLogger();
    const store = new Map<string, PredictionRow>([
      ['watched', row('watched', 1)],
      ['unwatched', row('unwatched', 1)],
    ]);
    const loads: string[] = [];
    const load = async (id: string) => {
      loads.push(id);
      return store.get(id);
    };
    const pubsubA = createPredictionPubSub();
    const pubsubB = createPredictionPubSub();
    const bridgeA = await startBridge({ bus: k.make('A'), pubsub: pubsubA, load, log, resyncMs: 0 });
    const bridgeB = await startBridge({ bus: k.make('B'), pubsub: pubsubB, load, log, resyncMs: 0 });
    onDispose(() => bridgeA.stop());
    onDispose(() => bridgeB.stop());
    const seen = new Inbox<PredictionRow>();
    onDispose(pubsubB.subscribe('prediction:updated', 'watched', seen.push));

    // Written on A: B reads it from the store and publishes it.
    store.set('watched', row('watched', 2));
    bridgeA.announce(row('watched', 2));
    expect((await seen.next('v2 on B')).version).toBe(2);
    // Nobody on B watches this one: it is never read.
    store.set('unwatched', row('unwatched', 2));
    bridgeA.announce(row('unwatched', 2));
    // An older announcement arriving late is dropped without a read.
    bridgeA.announce(row('watched', 1));
    // A marker after both: once B has it, the two above have been handled.
    store.set('watched', row('watched', 3));
    bridgeA.announce(row('watched', 3));
    expect((await seen.next('v3 on B')).version).toBe(3);
    expect(loads.filter((id) => id === 'unwatched')).toEqual([]);
    expect(loads.filter((id) => id === 'watched')).toHaveLength(2);

    // A change made while B's connection is down, and never announced: only the resync that
    // follows the reconnect can bring it.
    await k.cut();
    store.set('watched', row('watched', 4));
    expect((await seen.next('v4 on B, from the resync after the reconnect', 20_000)).version).toBe(4);
    // Nothing newer: another resync publishes nothing more.
    await bridgeB.resync();
    expect(seen.all.map((r) => r.version)).toEqual([2, 3, 4]);
  });
}

describe('Postgres LISTEN/NOTIFY bus', () => {
  let pgServer: TestPostgres;
  let url: string;
  beforeAll(async () => {
    pgServer = await startPostgres();
    url = await pgServer.createDatabase();
  }, 60_000);
  afterAll(() => pgServer?.stop());

  const { log } = capturedLogger();
  busSuite('postgres', () => {
    const channel = `bus_${randomUUID().slice(0, 8)}_test`;
    return {
    make: (instanceId) => new PgChangeBus({ connectionString: url, instanceId, log, channel }),
    async cut() {
      const admin = new pg.Client({ connectionString: url });
      await admin.connect();
      try {
        const { rowCount } = await admin.query(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE 'LISTEN %' AND datname = current_database() AND pid <> pg_backend_pid()`);
        expect(rowCount).toBeGreaterThan(0);
      } finally {
        await admin.end();
      }
    },
    };
  });
});

describe('Redis bus', () => {
  let redis: TestRedis | undefined;
  beforeAll(async () => {
    const started = await startRedis();
    if ('skipped' in started) console.warn(started.skipped);
    else redis = started;
  }, 30_000);
  afterAll(() => redis?.stop());

  const { log } = capturedLogger();
  busSuite('redis', () => {
    if (!redis) return undefined;
    const r = redis;
    const channel = `bus_${randomUUID().slice(0, 8)}_test`;
    return {
      make: (instanceId) => new RedisChangeBus({ url: r.url, instanceId, log, channel }),
      async cut() {
        if (!r.restart) throw new Error('this Redis cannot be restarted by the test (no redis-server on PATH)');
        await r.restart();
      },
    };
  });

  /** A reaches Redis through a proxy the test can cut; B directly, so B stays subscribed throughout. */
  const behindProxy = async (r: TestRedis) => {
    const channel = `bus_${randomUUID().slice(0, 8)}_test`;
    const proxy = await tcpProxy(Number(new URL(r.url).port));
    const viaProxy = `redis://127.0.0.1:${proxy.port}`;
    const listening = await twoListening({ make: (instanceId) => new RedisChangeBus({ url: instanceId === 'A' ? viaProxy : r.url, instanceId, log, channel }) });
    return { proxy, ...listening };
  };

  test('redis: changes announced while the publishing connection reconnects are sent once it is back, the newest version of each, in order', async (ctx) => {
    if (!redis) return ctx.skip();
    const { proxy, a, b, busA } = await behindProxy(redis);
    proxy.reset();
    // Two reconnect attempts turned away: A's connections know they are down.
    await waitFor(() => proxy.resets, (n) => n >= 2);
    await busA.announce({ id: 'p', version: 4 });
    await busA.announce({ id: 'q', version: 1 });
    await busA.announce({ id: 'r', version: 1 });
    await busA.announce({ id: 'p', version: 2 }); // older than what is kept: nothing changes
    await busA.announce({ id: 'q', version: 3 }); // newer: replaces q's, and goes last
    await proxy.forward();
    expect(await a.reconnects.next('A to subscribe again', 20_000)).toBe(true);
    await busA.announce({ id: 'marker', version: 1 });
    for (const n of [1, 2, 3, 4]) await b.changes.next(`B to hear change ${n} of 4`);
    expect(b.changes.all).toEqual([
      { id: 'p', version: 4 },
      { id: 'r', version: 1 },
      { id: 'q', version: 3 },
      { id: 'marker', version: 1 },
    ]);
    expect(b.reconnects.all).toEqual([]);
  });

  test(`redis: at most ${MAX_KEPT} changes are kept while the publisher is away; past that the oldest goes`, async (ctx) => {
    if (!redis) return ctx.skip();
    const { proxy, b, busA } = await behindProxy(redis);
    proxy.reset();
    await waitFor(() => proxy.resets, (n) => n >= 2);
    for (let i = 0; i <= MAX_KEPT; i++) await busA.announce({ id: `k${i}`, version: 1 });
    await proxy.forward();
    const heard = new Set<string>();
    while (heard.size < MAX_KEPT) heard.add((await b.changes.next(`change ${heard.size + 1} of ${MAX_KEPT}`)).id);
    expect(heard.has('k0')).toBe(false);
    expect(heard.has('k1')).toBe(true);
    expect(heard.has(`k${MAX_KEPT}`)).toBe(true);
  });
});
