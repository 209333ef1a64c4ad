import { join } from 'node:path';
import { describe, expect, test } from 'vitest';
import { openDatabase, type Db } from '../src/db/client.js';
import { PredictionStore } from '../src/db/predictions.js';
import { ASK_SQL, QueueOrder } from '../src/db/queue-order.js';
import { QUEUED, QueueStore } from '../src/db/queue.js';
import { createLogger } from '../src/log.js';
import { ImageStore } from '../src/storage/images.js';
import { createRetention } from '../src/storage/retention.js';
import { MODEL } from '../src/upstream/wavespeed.js';
import { tempDir } from './helpers/app.js';
import { onDispose } from './helpers/dispose.js';
import { must } from './helpers/must.js';

/** mulberry32: a seeded generator, so a failing sequence can be replayed from its seed. */
function random(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** One connection to the file with the stores the gateway builds on it. */
function open(file: string) {
  const db = openDatabase(file);
  let closed = false;
  const close = () => {
    if (!closed) db.$client.close();
    closed = true;
  };
  onDispose(close);
  return { db, store: new PredictionStore(db), queue: new QueueStore(db), order: QueueOrder.of(db.$client, QUEUED), close };
}
type Conn = ReturnType<typeof open>;

const OWNERS = ['alice', 'bob', 'carol', null] as const;

function insert(c: Conn, id: string, owner: string | null, now: Date) {
  return c.store.insert({ id, model: MODEL, status: 'CREATED', prompt: id, image: null, hasImage: false, enablePromptExpansion: true, createdAt: now, updatedAt: now, nextPollAt: now, owner });
}

const idsWhere = (db: Db, where: string) => db.$client.prepare(`SELECT id FROM predictions WHERE ${where} ORDER BY seq`).pluck().all() as string[];

/**
 * Every queued prediction's place, from the tree (asked directly, so an answer that quietly fell back
 * to SQL would show as ASK_SQL) and through QueueStore.position, against the SQL count. The SQL
 * places themselves must be 1..n, and rows that are not queued have none.
 */
function expectSamePlaces(c: Conn, step: string): number {
  const queued = idsWhere(c.db, QUEUED);
  const bySql = queued.map((id) => c.queue.positionBySql(id));
  expect([...bySql].sort((a, b) => must(a) - must(b)), step).toEqual(queued.map((_, i) => i + 1));
  expect(queued.map((id) => c.order.position(id)), step).toEqual(bySql);
  expect(queued.map((id) => c.queue.position(id)), step).toEqual(bySql);
  expect(c.order.size, step).toBe(queued.length);
  for (const id of idsWhere(c.db, `NOT (${QUEUED})`).slice(-5)) {
    expect(c.order.position(id), `${step}: ${id} is not queued`).toBeUndefined();
    expect(c.queue.position(id), `${step}: ${id} is not queued`).toBeUndefined();
  }
  expect(c.order.position('no such id'), step).toBeUndefined();
  return queued.length;
}

describe('QueueOrder: queue places as ranks in a tree kept in step with the database', () => {
  test('a long random sequence of real writes (the store, retention, transactions, another connection, restarts) never leaves a place different from the SQL count', async () => {
    const seed = 14;
    const rnd = random(seed);
    const pick = <T>(xs: readonly T[]): T | undefined => xs[Math.floor(rnd() * xs.length)];
    const dir = tempDir();
    const file = join(dir, 'cinegraph.sqlite');
    let c = open(file);
    let clock = Date.now();
    const now = () => {
      clock += 1000;
      return new Date(clock);
    };
    let n = 0;
    const retention = () =>
      createRetention({ db: c.db, images: new ImageStore(join(dir, 'images')), log: createLogger('silent'), now: () => new Date(clock + 86_400_000), retentionMs: 1 });

    const queued = () => idsWhere(c.db, QUEUED);
    const submitting = () => idsWhere(c.db, `status = 'CREATED' AND upstream_id IS NULL AND submit_started_at IS NOT NULL`);
    const processing = () => idsWhere(c.db, `status = 'PROCESSING'`);
    const live = () => idsWhere(c.db, `status IN ('CREATED', 'PROCESSING')`);
    const end = (conn: Conn, id: string, status: 'CANCELED' | 'FAILED', error: string | null) =>
      conn.store.update(id, { status, error, nextPollAt: null, completedAt: now(), image: null, submitStartedAt: null }, now());

    // Each operation as the gateway performs it (poller/steps.ts, poller/poller.ts, storage/retention.ts).
    const ops: [weight: number, name: string, run: () => unknown][] = [
      [30, 'insert', () => insert(c, `p${n++}`, pick(OWNERS) ?? null, now())],
      [12, 'submission starts', () => { const id = pick(queued()); if (id) c.store.update(id, { submitAttempts: 1, submitStartedAt: now() }); }],
      [4, 'submission refused: back in the queue', () => { const id = pick(submitting()); if (id) c.store.update(id, { submitAttempts: 1, submitStartedAt: null }); }],
      [9, 'accepted upstream', () => { const id = pick(submitting()); if (id) c.store.update(id, { status: 'PROCESSING', upstreamId: `u-${id}`, submittedAt: now(), submitStartedAt: null }, now()); }],
      [6, 'completed', () => { const id = pick(processing()); if (id) c.store.update(id, { status: 'COMPLETED', completedAt: now(), nextPollAt: null }, now()); }],
      [3, 'failed', () => { const id = pick(live()); if (id) end(c, id, 'FAILED', 'upstream said no'); }],
      [5, 'canceled while queued', () => { const id = pick(queued()); if (id) end(c, id, 'CANCELED', null); }],
      [2, 'canceled while submitting or running', () => { const id = pick([...submitting(), ...processing()]); if (id) end(c, id, 'CANCELED', null); }],
      [2, 'deadline', () => { const id = pick(live()); if (id) end(c, id, 'CANCELED', 'the deadline passed'); }],
      [2, 'retention sweep', () => retention().sweep()],
      [1, 'a queued row deleted by raw SQL', () => { const id = pick(queued()); if (id) c.db.$client.prepare('DELETE FROM predictions WHERE id = ?').run(id); }],
      [1, 'a queued row given a new seq by raw SQL', () => { const id = pick(queued()); if (id) c.db.$client.prepare('UPDATE predictions SET seq = (SELECT max(seq) + 1 FROM predictions) WHERE id = ?').run(id); }],
      [1, 'a queued row moved to another turn', () => { const id = pick(queued()); if (id) c.store.update(id, { queueTurn: Math.floor(rnd() * 10) }); }],
      [2, 'a transaction that rolls back', () => {
        const before = queued();
        expect(() =>
          c.db.$client.transaction(() => {
            insert(c, `rolled-back${n++}`, pick(OWNERS) ?? null, now());
            const id = pick(before);
            if (id) end(c, id, 'CANCELED', null);
            // Inside the transaction the tree cannot answer; the store still does, by SQL.
            for (const q of queued()) {
              expect(c.order.position(q)).toBe(ASK_SQL);
              expect(c.queue.position(q)).toBe(c.queue.positionBySql(q));
            }
            throw new Error('roll back');
          })(),
        ).toThrow('roll back');
        expect(queued()).toEqual(before);
      }],
      [2, 'a committed transaction of several writes', () =>
        c.db.$client.transaction(() => {
          for (let i = 0; i < 3; i++) insert(c, `p${n++}`, pick(OWNERS) ?? null, now());
          const id = pick(queued());
          if (id) c.store.update(id, { submitAttempts: 1, submitStartedAt: now() });
        })()],
      [3, 'another connection writes', () => {
        const other = open(file);
        insert(other, `elsewhere${n++}`, pick(OWNERS) ?? null, now());
        const id = pick(queued());
        if (id) end(other, id, 'CANCELED', null);
        other.close();
      }],
      [3, 'the event loop turns (changes applied in the background)', () => new Promise((resolve) => setImmediate(resolve))],
      [1, 'restart', () => {
        c.close();
        c = open(file);
      }],
    ];
    const total = ops.reduce((s, [w]) => s + w, 0);
    const seen = new Map<string, number>();
    let longest = 0;
    for (let step = 0; step < 1500; step++) {
      const r = rnd() * total;
      let sum = 0;
      const op = must(
        ops.find(([w]) => {
          sum += w;
          return r < sum;
        }),
      );
      await op[2]();
      seen.set(op[1], (seen.get(op[1]) ?? 0) + 1);
      longest = Math.max(longest, expectSamePlaces(c, `seed ${seed}, step ${step}: ${op[1]}`));
    }
    // The sequence did exercise every kind of write, and with a queue worth ranking.
    expect([...seen.keys()].sort()).toEqual(ops.map(([, name]) => name).sort());
    expect(longest).toBeGreaterThan(150);
  });

  test('changes are applied soon after the write, without waiting for someone to ask', async () => {
    const c = open(join(tempDir(), 'cinegraph.sqlite'));
    const at = new Date();
    for (let i = 0; i < 3; i++) insert(c, `p${i}`, 'alice', at);
    expect(c.order.size).toBe(0);
    await new Promise((resolve) => setImmediate(resolve));
    expect(c.order.size).toBe(3);
    c.store.update('p1', { submitAttempts: 1, submitStartedAt: at });
    // Not inside a transaction, which may still roll back.
    c.db.$client.exec('BEGIN');
    await new Promise((resolve) => setImmediate(resolve));
    expect(c.order.size).toBe(3);
    c.db.$client.exec('COMMIT');
    c.store.update('p0', { submitAttempts: 1, submitStartedAt: at });
    await new Promise((resolve) => setImmediate(resolve));
    expect(c.order.size).toBe(1);
    expect(c.order.position('p2')).toBe(1);
  });

  test('a burst larger than the tree looks up one by one (one transaction of 10,001 inserts) is answered after a rebuild', () => {
    const c = open(join(tempDir(), 'cinegraph.sqlite'));
    const at = new Date();
    insert(c, 'first', 'alice', at);
    expect(c.order.position('first')).toBe(1);
    c.db.$client.transaction(() => {
      for (let i = 0; i < 10_001; i++) insert(c, `burst${i}`, OWNERS[i % OWNERS.length] ?? null, at);
    })();
    expect(c.order.size).toBe(1); // not yet looked at
    for (const id of ['first', 'burst0', 'burst1', 'burst2', 'burst3', 'burst5000', 'burst10000']) expect(c.order.position(id), id).toBe(c.queue.positionBySql(id));
    expect(c.order.size).toBe(10_002);
    // Owners take turns: alice's second comes after one of each other owner's.
    expect(c.order.position('burst0')).toBe(5);
  });
});
