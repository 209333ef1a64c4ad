import pg from 'pg';
import { describe, expect, test } from 'vitest';
import { closePostgres, openPostgres, type PgDb } from '../src/db/pg/client.js';
import { PgOutbox } from '../src/db/pg/outbox.js';
import { PgPredictions } from '../src/db/pg/predictions.js';
import type { PredictionStatus } from '../src/db/schema.js';
import { at, newRow, T0 } from './helpers/db.js';
import { onDispose } from './helpers/dispose.js';
import { must } from './helpers/must.js';
import { usePostgres } from './helpers/postgres.js';
import { outboxAttempt, outboxMessage } from './helpers/outbox-rows.js';

/**
 * The webhook outbox on Postgres (src/db/pg/outbox.ts) in process, on a real Postgres and a fresh
 * database per test: what test/db-outbox.test.ts asks of SQLite's outbox where the Outbox interface
 * promises it (one message per prediction and status, soonest first, attempts logged with the next
 * step, newest-first history), and what only N instances on one database need: claims that are
 * leases (disjoint, skipped rather than waited for, taken over when they end), a success that counts
 * whoever holds the message, a retry fenced by the claim, release of one's own claims only. Each
 * "instance" is its own pool and its own instance id; every time is a fixed Date.
 */

const postgres = usePostgres();
const LEASE_MS = 60_000;

interface Instance {
  name: string;
  db: PgDb;
  outbox: PgOutbox;
}

async function instance(name: string): Promise<Instance> {
  const db = await openPostgres(postgres.url(), { max: 3, applicationName: name });
  onDispose(() => closePostgres(db).catch(() => {}));
  return { name, db, outbox: new PgOutbox(db, { instanceId: name, leaseMs: LEASE_MS }) };
}

/** Instances a, b, … on one fresh database, with predictions p1, p2, p3 (or those given). */
async function instances(n: number, predictionIds = ['p1', 'p2', 'p3']): Promise<Instance[]> {
  const all: Instance[] = [];
  for (let i = 0; i < n; i++) all.push(await instance(String.fromCharCode(97 + i)));
  const predictions = new PgPredictions(must(all[0]).db);
  for (const id of predictionIds) await predictions.insert(newRow(id));
  return all;
}

const message = outboxMessage;
const attempt = outboxAttempt;

/** Enqueues in a transaction of its own, as the recorder's hook would inside its write. */
async function enqueue(s: Instance, m: ReturnType<typeof message>): Promise<boolean> {
  return s.db.transaction((tx) => s.outbox.enqueue(tx, m));
}

const ids = (rows: { id: string }[]) => rows.map((r) => r.id);

/** The lease columns and the schedule, read directly. */
async function state(s: Instance, id: string) {
  const { rows } = await s.db.$client.query<{ lockedBy: string | null; lockedUntil: Date | null; nextAttemptAt: Date | null; attempts: number; deliveredAt: Date | null }>(
    `SELECT locked_by AS "lockedBy", locked_until AS "lockedUntil", next_attempt_at AS "nextAttemptAt", attempts, delivered_at AS "deliveredAt" FROM webhook_messages WHERE id = $1`,
    [id],
  );
  return must(rows[0], `message ${id}`);
}

async function attemptCount(s: Instance): Promise<number> {
  return must((await s.db.$client.query<{ n: number }>('SELECT count(*)::int AS n FROM webhook_attempts')).rows[0]).n;
}

describe('subscriptions', () => {
  test('a prediction’s URL and events are kept, written in the transaction given; one per prediction; a rollback keeps none', async () => {
    const [a] = await instances(1);
    const s = must(a);
    expect(await s.outbox.subscriptionOf('p1')).toBeUndefined();
    await s.db.transaction(async (tx) => {
      await s.outbox.subscribe(tx, 'p1', 'https://hooks.example/a', ['COMPLETED', 'FAILED']);
      // Seen inside the transaction, through it; not yet by another connection.
      expect(await s.outbox.subscriptionOf('p1', tx)).toStrictEqual({ url: 'https://hooks.example/a', events: ['COMPLETED', 'FAILED'] });
      expect(await s.outbox.subscriptionOf('p1')).toBeUndefined();
    });
    expect(await s.outbox.subscriptionOf('p1')).toStrictEqual({ url: 'https://hooks.example/a', events: ['COMPLETED', 'FAILED'] });
    expect(await s.outbox.subscriptionOf('p2')).toBeUndefined();
    await expect(s.db.transaction((tx) => s.outbox.subscribe(tx, 'p1', 'https://hooks.example/b', ['COMPLETED']))).rejects.toMatchObject({
      cause: { message: expect.stringMatching(/duplicate key/) },
    });
    await expect(s.db.transaction((tx) => s.outbox.subscribe(tx, 'nobody', 'https://hooks.example/b', ['COMPLETED']))).rejects.toMatchObject({
      cause: { message: expect.stringMatching(/foreign key/) },
    });
    await expect(
      s.db.transaction(async (tx) => {
        await s.outbox.subscribe(tx, 'p2', 'https://hooks.example/c', ['CANCELED']);
        throw new Error('the status write failed');
      }),
    ).rejects.toThrow('the status write failed');
    expect(await s.outbox.subscriptionOf('p2')).toBeUndefined();
  });
});

describe('enqueue', () => {
  test('one message per prediction and status, due at once, as message() reads it; a rolled-back enqueue leaves none', async () => {
    const [a] = await instances(1);
    const s = must(a);
    expect(await enqueue(s, message('m1', 'p1', 'COMPLETED', at(100)))).toBe(true);
    expect(await enqueue(s, message('m2', 'p1', 'COMPLETED', at(200)))).toBe(false);
    expect(await enqueue(s, message('m3', 'p1', 'PROCESSING', at(50)))).toBe(true);
    expect(await enqueue(s, message('m4', 'p2', 'COMPLETED', at(300)))).toBe(true);
    expect(await s.outbox.message('m2')).toBeUndefined();
    expect(await s.outbox.message('m1')).toStrictEqual({
      id: 'm1',
      predictionId: 'p1',
      event: 'COMPLETED',
      url: 'https://hooks.example/p1',
      payload: '{"id":"p1","status":"COMPLETED"}',
      createdAt: at(100),
      attempts: 0,
      nextAttemptAt: at(100),
      deliveredAt: null,
    });
    expect(await s.outbox.message('nobody')).toBeUndefined();
    // Unclaimed: no lease columns set.
    expect(await state(s, 'm1')).toMatchObject({ lockedBy: null, lockedUntil: null });
    await expect(
      s.db.transaction(async (tx) => {
        expect(await s.outbox.enqueue(tx, message('m5', 'p3', 'COMPLETED', at(0)))).toBe(true);
        throw new Error('rolled back');
      }),
    ).rejects.toThrow('rolled back');
    expect(await s.outbox.message('m5')).toBeUndefined();
    // The rolled-back one did not take the slot.
    expect(await enqueue(s, message('m6', 'p3', 'COMPLETED', at(0)))).toBe(true);
  });
});

describe('claimDue', () => {
  test('due messages soonest first, at most the limit, leased to this instance until now + leaseMs; the rows as message() reads them', async () => {
    const [a] = await instances(1);
    const s = must(a);
    expect(await s.outbox.nextDueAt()).toBeUndefined();
    expect(await s.outbox.claimDue(at(1000), 10)).toEqual([]);
    await enqueue(s, message('m300', 'p1', 'COMPLETED', at(300)));
    await enqueue(s, message('m100', 'p2', 'COMPLETED', at(100)));
    await enqueue(s, message('m200', 'p3', 'COMPLETED', at(200)));
    await enqueue(s, message('mdone', 'p1', 'PROCESSING', at(10)));
    await s.outbox.recordAttempt(attempt('a0', 'mdone', 'p1', at(10), { statusCode: 200, error: null }), { attempts: 1, nextAttemptAt: null, deliveredAt: at(11) });
    expect(await s.outbox.nextDueAt()).toEqual(at(100));
    expect(await s.outbox.claimDue(at(99), 10)).toEqual([]);
    const expected = must(await s.outbox.message('m100'));
    const first = await s.outbox.claimDue(at(199), 10);
    // Exactly the columns message() has: no lease columns, no claim time.
    expect(first).toStrictEqual([expected]);
    expect(await state(s, 'm100')).toMatchObject({ lockedBy: 'a', lockedUntil: at(199 + LEASE_MS) });
    expect(await state(s, 'm200')).toMatchObject({ lockedBy: null, lockedUntil: null });
    // Its own claim keeps m100 from this instance too (`busy` needs no filter): the limit goes to the others.
    expect(ids(await s.outbox.claimDue(at(1000), 1))).toEqual(['m200']);
    expect(ids(await s.outbox.claimDue(at(1000), 10))).toEqual(['m300']);
    expect(await s.outbox.claimDue(at(1000), 10)).toEqual([]);
    // Every pending message is leased now: the next is the end of the earliest lease.
    expect(await s.outbox.nextDueAt()).toEqual(at(199 + LEASE_MS));
    expect(await state(s, 'm300')).toMatchObject({ lockedBy: 'a', lockedUntil: at(1000 + LEASE_MS) });
    // The delivered one is never claimed, nor leased.
    expect(await state(s, 'mdone')).toMatchObject({ lockedBy: null, lockedUntil: null, nextAttemptAt: null, deliveredAt: at(11) });
  });

  test('a claim takes them in due order, ties by creation, whatever order the rows are stored in', async () => {
    const [a] = await instances(1, ['p1', 'p2', 'p3', 'p4']);
    const s = must(a);
    // Stored latest-due first.
    await enqueue(s, message('late', 'p1', 'COMPLETED', at(400)));
    await enqueue(s, message('mid', 'p2', 'COMPLETED', at(300)));
    await enqueue(s, message('retried', 'p3', 'COMPLETED', at(0)));
    // 'retried' (created at 0) is rescheduled to 300: due with 'mid' (created at 300), and rewritten after it.
    expect(ids(await s.outbox.claimDue(at(0), 10))).toEqual(['retried']);
    await s.outbox.recordAttempt(attempt('r1', 'retried', 'p3', at(0)), { attempts: 1, nextAttemptAt: at(300) });
    await enqueue(s, message('early', 'p4', 'COMPLETED', at(100)));
    expect(ids(await s.outbox.claimDue(at(1000), 10))).toEqual(['early', 'retried', 'mid', 'late']);
  });

  test('a limit of 0 or less claims nothing and asks the database nothing', async () => {
    const [a] = await instances(1);
    const s = must(a);
    await enqueue(s, message('m1', 'p1', 'COMPLETED', at(0)));
    expect(await s.outbox.claimDue(at(1000), 0)).toEqual([]);
    expect(await s.outbox.claimDue(at(1000), -1)).toEqual([]);
    expect(await state(s, 'm1')).toMatchObject({ lockedBy: null, lockedUntil: null });
    await closePostgres(s.db);
    // A closed pool rejects every query: these answer without one.
    expect(await s.outbox.claimDue(at(1000), 0)).toEqual([]);
    expect(await s.outbox.claimDue(at(1000), -1)).toEqual([]);
    await expect(s.outbox.claimDue(at(1000), 1)).rejects.toThrow();
  });

  test('three instances claiming at once get disjoint sets that together are every due message', async () => {
    const predictionIds = ['p1', 'p2', 'p3', 'p4', 'p5', 'p6'];
    const all = await instances(3, predictionIds);
    const [a] = all;
    const statuses: PredictionStatus[] = ['CREATED', 'PROCESSING', 'COMPLETED', 'FAILED', 'CANCELED'];
    const messageIds: string[] = [];
    for (const p of predictionIds)
      for (const [i, event] of statuses.entries()) {
        const id = `${p}-${event}`;
        await enqueue(must(a), message(id, p, event, at(-i)));
        messageIds.push(id);
      }
    const claims = await Promise.all(all.map((s) => s.outbox.claimDue(T0, 12)));
    const claimed = claims.flatMap(ids);
    expect(new Set(claimed).size).toBe(claimed.length);
    expect([...claimed].sort()).toEqual([...messageIds].sort());
    for (const [k, s] of all.entries()) {
      for (const id of ids(must(claims[k]))) expect((await state(s, id)).lockedBy).toBe(s.name);
    }
    expect(await must(a).outbox.claimDue(T0, 100)).toEqual([]);
  });

  test('a message another transaction has locked is skipped, not waited for', async () => {
    const [a] = await instances(1);
    const s = must(a);
    await enqueue(s, message('m1', 'p1', 'COMPLETED', at(0)));
    await enqueue(s, message('m2', 'p2', 'COMPLETED', at(1)));
    const locker = new pg.Client({ connectionString: postgres.url() });
    await locker.connect();
    onDispose(() => locker.end());
    await locker.query('BEGIN');
    await locker.query(`SELECT 1 FROM webhook_messages WHERE id = 'm1' FOR UPDATE`);
    let timer: NodeJS.Timeout | undefined;
    const waited = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error('the claim waited on the locked message')), 10_000);
    });
    try {
      expect(ids(await Promise.race([s.outbox.claimDue(at(10), 10), waited]))).toEqual(['m2']);
    } finally {
      clearTimeout(timer);
      await locker.query('COMMIT');
    }
    expect(ids(await s.outbox.claimDue(at(10), 10))).toEqual(['m1']);
  });

  test('a claimed message is no other instance’s until its lease ends, then it is; nextDueAt says when', async () => {
    const [a, b] = await instances(2);
    await enqueue(must(a), message('m', 'p1', 'COMPLETED', at(100)));
    expect(await must(b).outbox.nextDueAt()).toEqual(at(100));
    expect(ids(await must(a).outbox.claimDue(at(100), 10))).toEqual(['m']);
    // Claimable again at greatest(next_attempt_at, locked_until): the lease's end.
    expect(await must(b).outbox.nextDueAt()).toEqual(at(100 + LEASE_MS));
    expect(await must(b).outbox.claimDue(at(99 + LEASE_MS), 10)).toEqual([]);
    expect(ids(await must(b).outbox.claimDue(at(100 + LEASE_MS), 10))).toEqual(['m']);
    expect(await state(must(b), 'm')).toMatchObject({ lockedBy: 'b', lockedUntil: at(100 + 2 * LEASE_MS), nextAttemptAt: at(100) });
    expect(await must(a).outbox.claimDue(at(100 + LEASE_MS), 10)).toEqual([]);
    expect(await must(a).outbox.nextDueAt()).toEqual(at(100 + 2 * LEASE_MS));
  });
});

describe('recordAttempt', () => {
  test('the holder’s failure: the attempt logged, the retry scheduled, the claim released (another instance may take it at the retry)', async () => {
    const [a, b] = await instances(2);
    await enqueue(must(a), message('m', 'p1', 'COMPLETED', at(0)));
    expect(ids(await must(a).outbox.claimDue(at(0), 10))).toEqual(['m']);
    await must(a).outbox.recordAttempt(attempt('a1', 'm', 'p1', at(10)), { attempts: 1, nextAttemptAt: at(1000) });
    expect(await must(a).outbox.attempt('a1')).toStrictEqual({
      id: 'a1',
      messageId: 'm',
      predictionId: 'p1',
      attemptedAt: at(10),
      statusCode: 500,
      latencyMs: 12,
      error: 'HTTP 500',
      manual: false,
    });
    expect(await state(must(a), 'm')).toEqual({ lockedBy: null, lockedUntil: null, nextAttemptAt: at(1000), attempts: 1, deliveredAt: null });
    // At the retry, long before the first lease would have ended.
    expect(await must(b).outbox.nextDueAt()).toEqual(at(1000));
    expect(await must(b).outbox.claimDue(at(999), 10)).toEqual([]);
    expect(await must(b).outbox.claimDue(at(1000), 10)).toMatchObject([{ id: 'm', attempts: 1, nextAttemptAt: at(1000) }]);
    expect(await must(a).outbox.attempt('nobody')).toBeUndefined();
  });

  test('a retry from an instance that no longer holds the claim is logged and changes nothing; the holder’s is applied', async () => {
    const [a, b, c] = await instances(3);
    await enqueue(must(a), message('m', 'p1', 'COMPLETED', at(0)));
    expect(ids(await must(a).outbox.claimDue(at(0), 10))).toEqual(['m']);
    // a's POST outlives its lease; b takes the message over.
    expect(ids(await must(b).outbox.claimDue(at(LEASE_MS), 10))).toEqual(['m']);
    const held = { lockedBy: 'b', lockedUntil: at(2 * LEASE_MS), nextAttemptAt: at(0), attempts: 0, deliveredAt: null };
    await must(a).outbox.recordAttempt(attempt('late', 'm', 'p1', at(LEASE_MS + 5)), { attempts: 1, nextAttemptAt: at(LEASE_MS + 1000) });
    expect(await state(must(a), 'm')).toEqual(held);
    // Nor from one that never claimed it.
    await must(c).outbox.recordAttempt(attempt('stray', 'm', 'p1', at(LEASE_MS + 6)), { attempts: 7, nextAttemptAt: null });
    expect(await state(must(a), 'm')).toEqual(held);
    expect([await must(a).outbox.attempt('late'), await must(a).outbox.attempt('stray')].map((x) => x?.id)).toEqual(['late', 'stray']);
    await must(b).outbox.recordAttempt(attempt('b1', 'm', 'p1', at(LEASE_MS + 10)), { attempts: 1, nextAttemptAt: at(LEASE_MS + 2000) });
    expect(await state(must(a), 'm')).toEqual({ lockedBy: null, lockedUntil: null, nextAttemptAt: at(LEASE_MS + 2000), attempts: 1, deliveredAt: null });
    // A holder whose lease has ended but which nobody took over still holds it: its retry counts.
    expect(ids(await must(b).outbox.claimDue(at(LEASE_MS + 2000), 10))).toEqual(['m']);
    await must(b).outbox.recordAttempt(attempt('b2', 'm', 'p1', at(3 * LEASE_MS)), { attempts: 2, nextAttemptAt: at(4 * LEASE_MS) });
    expect(await state(must(a), 'm')).toEqual({ lockedBy: null, lockedUntil: null, nextAttemptAt: at(4 * LEASE_MS), attempts: 2, deliveredAt: null });
    expect(await attemptCount(must(a))).toBe(4);
  });

  test('a success marks the message delivered whoever holds it, attempts never go down, and nothing after it changes that', async () => {
    const [a, b] = await instances(2);
    await enqueue(must(a), message('m', 'p1', 'COMPLETED', at(0)));
    expect(ids(await must(a).outbox.claimDue(at(0), 10))).toEqual(['m']);
    // a's POST hangs past its lease; meanwhile b sends twice and fails twice, and holds it again.
    expect(ids(await must(b).outbox.claimDue(at(LEASE_MS), 10))).toEqual(['m']);
    await must(b).outbox.recordAttempt(attempt('b1', 'm', 'p1', at(LEASE_MS)), { attempts: 1, nextAttemptAt: at(LEASE_MS + 10) });
    expect(ids(await must(b).outbox.claimDue(at(LEASE_MS + 10), 10))).toEqual(['m']);
    await must(b).outbox.recordAttempt(attempt('b2', 'm', 'p1', at(LEASE_MS + 10)), { attempts: 2, nextAttemptAt: at(LEASE_MS + 20) });
    expect(ids(await must(b).outbox.claimDue(at(LEASE_MS + 20), 10))).toEqual(['m']);
    // a's first POST did arrive: its success counts though b holds the claim; its count (1) does not lower b's (2).
    await must(a).outbox.recordAttempt(attempt('a1', 'm', 'p1', at(LEASE_MS + 25), { statusCode: 204, error: null }), { attempts: 1, nextAttemptAt: null, deliveredAt: at(LEASE_MS + 25) });
    const delivered = { lockedBy: null, lockedUntil: null, nextAttemptAt: null, attempts: 2, deliveredAt: at(LEASE_MS + 25) };
    expect(await state(must(a), 'm')).toEqual(delivered);
    // b's failure, then a success of its own, change nothing: the message is delivered.
    await must(b).outbox.recordAttempt(attempt('b3', 'm', 'p1', at(LEASE_MS + 30)), { attempts: 3, nextAttemptAt: at(LEASE_MS + 40) });
    expect(await state(must(a), 'm')).toEqual(delivered);
    await must(b).outbox.recordAttempt(attempt('b4', 'm', 'p1', at(LEASE_MS + 31), { statusCode: 200, error: null }), { attempts: 3, nextAttemptAt: null, deliveredAt: at(LEASE_MS + 31) });
    expect(await state(must(a), 'm')).toEqual(delivered);
    expect(await must(a).outbox.claimDue(at(10 * LEASE_MS), 10)).toEqual([]);
    expect(await must(a).outbox.nextDueAt()).toBeUndefined();
    expect(ids(await must(a).outbox.attemptsOf('p1', 10))).toEqual(['b4', 'b3', 'a1', 'b2', 'b1']);
  });

  test('a success raises attempts to its count, or leaves them when it has none; it touches only its message', async () => {
    const [a] = await instances(1);
    const s = must(a);
    await enqueue(s, message('m1', 'p1', 'COMPLETED', at(0)));
    await enqueue(s, message('m2', 'p2', 'COMPLETED', at(0)));
    await enqueue(s, message('m3', 'p3', 'COMPLETED', at(0)));
    expect(ids(await s.outbox.claimDue(at(0), 10))).toEqual(['m1', 'm2', 'm3']);
    await s.outbox.recordAttempt(attempt('a1', 'm1', 'p1', at(5), { statusCode: 200, error: null }), { attempts: 1, nextAttemptAt: null, deliveredAt: at(6) });
    expect(await state(s, 'm1')).toEqual({ lockedBy: null, lockedUntil: null, nextAttemptAt: null, attempts: 1, deliveredAt: at(6) });
    expect(await state(s, 'm2')).toEqual({ lockedBy: 'a', lockedUntil: at(LEASE_MS), nextAttemptAt: at(0), attempts: 0, deliveredAt: null });
    // A success step without a count (a manual redelivery's, say) leaves the count alone.
    await s.outbox.recordAttempt(attempt('a2', 'm2', 'p2', at(7), { statusCode: 200, error: null, manual: true }), { deliveredAt: at(8), nextAttemptAt: null });
    expect(await state(s, 'm2')).toEqual({ lockedBy: null, lockedUntil: null, nextAttemptAt: null, attempts: 0, deliveredAt: at(8) });
    expect(await state(s, 'm3')).toEqual({ lockedBy: 'a', lockedUntil: at(LEASE_MS), nextAttemptAt: at(0), attempts: 0, deliveredAt: null });
  });

  test('a manual attempt changes no schedule and no claim, whoever makes it', async () => {
    const [a, b] = await instances(2);
    await enqueue(must(a), message('m', 'p1', 'COMPLETED', at(0)));
    expect(ids(await must(a).outbox.claimDue(at(0), 10))).toEqual(['m']);
    const claimed = { lockedBy: 'a', lockedUntil: at(LEASE_MS), nextAttemptAt: at(0), attempts: 0, deliveredAt: null };
    await must(b).outbox.recordAttempt(attempt('x1', 'm', 'p1', at(5), { manual: true, statusCode: null, error: 'refused' }), {});
    expect(await state(must(a), 'm')).toEqual(claimed);
    await must(a).outbox.recordAttempt(attempt('x2', 'm', 'p1', at(6), { manual: true }), {});
    expect(await state(must(a), 'm')).toEqual(claimed);
    // Even a step that would reschedule: a manual failure is not the schedule's.
    await must(a).outbox.recordAttempt(attempt('x3', 'm', 'p1', at(7), { manual: true }), { attempts: 5, nextAttemptAt: at(9) });
    expect(await state(must(a), 'm')).toEqual(claimed);
    expect(await must(a).outbox.attempt('x1')).toMatchObject({ manual: true, statusCode: null, error: 'refused' });
    expect(await attemptCount(must(a))).toBe(3);
  });

  test('an attempt whose message update fails is not recorded either, and the claim stays', async () => {
    const [a] = await instances(1);
    const s = must(a);
    await enqueue(s, message('m', 'p1', 'COMPLETED', at(0)));
    expect(ids(await s.outbox.claimDue(at(0), 10))).toEqual(['m']);
    await expect(s.outbox.recordAttempt(attempt('a1', 'm', 'p1', at(10)), { attempts: null as unknown as number, nextAttemptAt: at(20) })).rejects.toMatchObject({
      cause: { message: expect.stringMatching(/null value/) },
    });
    expect(await s.outbox.attempt('a1')).toBeUndefined();
    expect(await state(s, 'm')).toEqual({ lockedBy: 'a', lockedUntil: at(LEASE_MS), nextAttemptAt: at(0), attempts: 0, deliveredAt: null });
    // An attempt id is recorded once.
    await s.outbox.recordAttempt(attempt('a2', 'm', 'p1', at(10)), { attempts: 1, nextAttemptAt: at(20) });
    await expect(s.outbox.recordAttempt(attempt('a2', 'm', 'p1', at(30)), {})).rejects.toMatchObject({ cause: { message: expect.stringMatching(/duplicate key/) } });
    expect(await attemptCount(s)).toBe(1);
  });
});

describe('release', () => {
  test('frees only this instance’s claims of the ids given; no ids is a no-op that asks nothing', async () => {
    const [a, b] = await instances(2, ['p1', 'p2', 'p3', 'p4']);
    for (const [i, p] of ['p1', 'p2', 'p3', 'p4'].entries()) await enqueue(must(a), message(`m${i + 1}`, p, 'COMPLETED', at(i)));
    expect(ids(await must(a).outbox.claimDue(at(10), 3))).toEqual(['m1', 'm2', 'm3']);
    expect(ids(await must(b).outbox.claimDue(at(10), 3))).toEqual(['m4']);
    const holders = async () => Promise.all(['m1', 'm2', 'm3', 'm4'].map(async (id) => (await state(must(a), id)).lockedBy));
    await must(a).outbox.release([]);
    expect(await holders()).toEqual(['a', 'a', 'a', 'b']);
    await must(a).outbox.release(['m1', 'm3', 'm4', 'nobody']);
    expect(await holders()).toEqual([null, 'a', null, 'b']);
    expect(await state(must(a), 'm1')).toMatchObject({ lockedUntil: null, nextAttemptAt: at(0), attempts: 0 });
    expect(await state(must(a), 'm4')).toMatchObject({ lockedUntil: at(10 + LEASE_MS) });
    // Released messages are due again at once, for any instance.
    expect(ids(await must(b).outbox.claimDue(at(10), 10))).toEqual(['m1', 'm3']);
    await closePostgres(must(a).db);
    await expect(must(a).outbox.release([])).resolves.toBeUndefined();
    await expect(must(a).outbox.release(['m2'])).rejects.toThrow();
  });
});

describe('history', () => {
  test('attemptsOf: newest first, ties by id, with the message’s event, URL and id, up to the limit', async () => {
    const [a] = await instances(1);
    const s = must(a);
    await enqueue(s, message('mp', 'p1', 'PROCESSING', at(0)));
    await enqueue(s, message('mc', 'p1', 'COMPLETED', at(0)));
    await enqueue(s, message('other', 'p2', 'COMPLETED', at(0)));
    const manual = (id: string, messageId: string, when: Date) => s.outbox.recordAttempt(attempt(id, messageId, 'p1', when, { manual: true }), {});
    await manual('a1', 'mp', at(10));
    await manual('a2', 'mc', at(30));
    await manual('a3', 'mc', at(20));
    await manual('a4', 'mp', at(30));
    // Inserted after a4 but tied with it and its id sorts before: Postgres breaks ties by id.
    await manual('a0', 'mc', at(30));
    await s.outbox.recordAttempt(attempt('x1', 'other', 'p2', at(40)), {});
    const list = await s.outbox.attemptsOf('p1', 10);
    expect(ids(list)).toEqual(['a4', 'a2', 'a0', 'a3', 'a1']);
    expect(ids(await s.outbox.attemptsOf('p1', 2))).toEqual(['a4', 'a2']);
    expect(list[0]).toStrictEqual({
      id: 'a4',
      messageId: 'mp',
      predictionId: 'p1',
      attemptedAt: at(30),
      statusCode: 500,
      latencyMs: 12,
      error: 'HTTP 500',
      manual: true,
      event: 'PROCESSING',
      url: 'https://hooks.example/p1',
      webhookId: 'mp',
    });
    expect(list[1]).toMatchObject({ event: 'COMPLETED', webhookId: 'mc', messageId: 'mc' });
    expect(ids(await s.outbox.attemptsOf('p2', 10))).toEqual(['x1']);
    expect(await s.outbox.attemptsOf('p3', 10)).toEqual([]);
  });

  test('messages, attempts and the subscription go with their prediction', async () => {
    const [a] = await instances(1);
    const s = must(a);
    await s.db.transaction((tx) => s.outbox.subscribe(tx, 'p1', 'https://hooks.example/a', ['COMPLETED']));
    await enqueue(s, message('m', 'p1', 'COMPLETED', at(0)));
    await s.outbox.recordAttempt(attempt('a', 'm', 'p1', at(1)), {});
    await s.db.$client.query(`DELETE FROM predictions WHERE id = 'p1'`);
    expect([await s.outbox.subscriptionOf('p1'), await s.outbox.message('m'), await s.outbox.attempt('a')]).toEqual([undefined, undefined, undefined]);
  });
});
