import { describe, expect, test } from 'vitest';
import { IDEMPOTENCY_TTL_MS, IdempotencyStore } from '../src/db/idempotency.js';
import { sqliteOutbox, WebhookStore } from '../src/db/outbox.js';
import { PredictionStore } from '../src/db/predictions.js';
import { at, freshDb, newRow, T0 } from './helpers/db.js';
import { must } from './helpers/must.js';
import { outboxAttempt, outboxMessage } from './helpers/outbox-rows.js';

/**
 * The webhook outbox (WebhookStore) and createVideo's idempotency keys against a real SQLite file:
 * one message per prediction and status, what is due and when, attempts recorded atomically with the
 * message's next step, newest-first history, incoming receipts de-duplicated, keys kept exactly 24 h.
 */

function stores() {
  const { db } = freshDb();
  const predictions = new PredictionStore(db);
  for (const id of ['p1', 'p2', 'p3']) predictions.insert(newRow(id));
  return { db, predictions, hooks: new WebhookStore(db), keys: new IdempotencyStore(db) };
}

const message = outboxMessage;
const attempt = outboxAttempt;

describe('subscriptions', () => {
  test('a prediction’s webhook URL and events are kept; one subscription per prediction', () => {
    const { hooks } = stores();
    expect(hooks.subscriptionOf('p1')).toBeUndefined();
    hooks.subscribe('p1', 'https://hooks.example/a', ['COMPLETED', 'FAILED']);
    expect(hooks.subscriptionOf('p1')).toStrictEqual({ url: 'https://hooks.example/a', events: ['COMPLETED', 'FAILED'] });
    expect(hooks.subscriptionOf('p2')).toBeUndefined();
    expect(() => hooks.subscribe('p1', 'https://hooks.example/b', ['COMPLETED'])).toThrow(/UNIQUE constraint failed/);
    expect(() => hooks.subscribe('nobody', 'https://hooks.example/b', ['COMPLETED'])).toThrow(/FOREIGN KEY constraint failed/);
  });
});

describe('the outbox', () => {
  test('enqueue adds one message per prediction and status, due at once', () => {
    const { hooks } = stores();
    expect(hooks.enqueue(message('m1', 'p1', 'COMPLETED', at(100)))).toBe(true);
    expect(hooks.enqueue(message('m2', 'p1', 'COMPLETED', at(200)))).toBe(false);
    expect(hooks.enqueue(message('m3', 'p1', 'PROCESSING', at(50)))).toBe(true);
    expect(hooks.enqueue(message('m4', 'p2', 'COMPLETED', at(300)))).toBe(true);
    expect(hooks.message('m2')).toBeUndefined();
    expect(hooks.message('m1')).toStrictEqual({
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
    expect(hooks.message('nobody')).toBeUndefined();
  });

  test('due: messages whose next attempt has come, earliest first, up to the limit; nextDueAt the earliest of all', () => {
    const { hooks } = stores();
    expect(hooks.nextDueAt()).toBeUndefined();
    expect(hooks.due(at(1000), 10)).toEqual([]);
    hooks.enqueue(message('m300', 'p1', 'COMPLETED', at(300)));
    hooks.enqueue(message('m100', 'p2', 'COMPLETED', at(100)));
    hooks.enqueue(message('m200', 'p3', 'COMPLETED', at(200)));
    hooks.enqueue(message('mdone', 'p1', 'PROCESSING', at(10)));
    hooks.recordAttempt(attempt('a0', 'mdone', 'p1', at(10), { statusCode: 200, error: null }), { attempts: 1, nextAttemptAt: null, deliveredAt: at(11) });
    const ids = (rows: { id: string }[]) => rows.map((r) => r.id);
    expect(ids(hooks.due(at(1000), 10))).toEqual(['m100', 'm200', 'm300']);
    expect(ids(hooks.due(at(200), 10))).toEqual(['m100', 'm200']);
    expect(ids(hooks.due(at(199), 10))).toEqual(['m100']);
    expect(ids(hooks.due(at(1000), 2))).toEqual(['m100', 'm200']);
    expect(hooks.due(at(99), 10)).toEqual([]);
    expect(hooks.due(at(1000), 1)[0]).toMatchObject({ id: 'm100', event: 'COMPLETED', predictionId: 'p2', attempts: 0 });
    expect(hooks.nextDueAt()).toEqual(at(100));
    // Rescheduled later: the next due moves with it.
    hooks.recordAttempt(attempt('a1', 'm100', 'p2', at(100)), { attempts: 1, nextAttemptAt: at(5000) });
    expect(hooks.nextDueAt()).toEqual(at(200));
    expect(ids(hooks.due(at(1000), 10))).toEqual(['m200', 'm300']);
  });

  test('recordAttempt stores the attempt and the message’s next step together', () => {
    const { hooks } = stores();
    hooks.enqueue(message('m', 'p1', 'COMPLETED', at(0)));
    hooks.recordAttempt(attempt('a1', 'm', 'p1', at(10)), { attempts: 1, nextAttemptAt: at(70) });
    expect(hooks.message('m')).toMatchObject({ attempts: 1, nextAttemptAt: at(70), deliveredAt: null });
    expect(hooks.attempt('a1')).toStrictEqual({
      id: 'a1',
      messageId: 'm',
      predictionId: 'p1',
      attemptedAt: at(10),
      statusCode: 500,
      latencyMs: 12,
      error: 'HTTP 500',
      manual: false,
    });
    // A manual redelivery that changes nothing about the schedule.
    hooks.recordAttempt(attempt('a2', 'm', 'p1', at(20), { manual: true, statusCode: null, error: 'refused' }), {});
    expect(hooks.message('m')).toMatchObject({ attempts: 1, nextAttemptAt: at(70) });
    expect(hooks.attempt('a2')).toMatchObject({ manual: true, statusCode: null, error: 'refused' });
    hooks.recordAttempt(attempt('a3', 'm', 'p1', at(70), { statusCode: 204, error: null }), { attempts: 2, nextAttemptAt: null, deliveredAt: at(71) });
    expect(hooks.message('m')).toMatchObject({ attempts: 2, nextAttemptAt: null, deliveredAt: at(71) });
    expect(hooks.attempt('nobody')).toBeUndefined();
  });

  test('an attempt whose message update fails is not recorded either', () => {
    const { hooks } = stores();
    hooks.enqueue(message('m', 'p1', 'COMPLETED', at(0)));
    expect(() => hooks.recordAttempt(attempt('a1', 'm', 'p1', at(10)), { attempts: null as unknown as number })).toThrow(/NOT NULL constraint failed/);
    expect(hooks.attempt('a1')).toBeUndefined();
    expect(hooks.message('m')).toMatchObject({ attempts: 0, nextAttemptAt: at(0) });
  });

  test('attemptsOf: a prediction’s attempts newest first (insertion order breaking ties), with their message, up to the limit', () => {
    const { hooks } = stores();
    hooks.enqueue(message('mp', 'p1', 'PROCESSING', at(0)));
    hooks.enqueue(message('mc', 'p1', 'COMPLETED', at(0)));
    hooks.enqueue(message('other', 'p2', 'COMPLETED', at(0)));
    hooks.recordAttempt(attempt('a1', 'mp', 'p1', at(10)), {});
    hooks.recordAttempt(attempt('a2', 'mc', 'p1', at(30)), {});
    hooks.recordAttempt(attempt('a3', 'mc', 'p1', at(20)), {});
    hooks.recordAttempt(attempt('a4', 'mp', 'p1', at(30)), {});
    hooks.recordAttempt(attempt('x1', 'other', 'p2', at(40)), {});
    const list = hooks.attemptsOf('p1', 10);
    expect(list.map((a) => a.id)).toEqual(['a4', 'a2', 'a3', 'a1']);
    expect(hooks.attemptsOf('p1', 2).map((a) => a.id)).toEqual(['a4', 'a2']);
    expect(list[0]).toStrictEqual({
      id: 'a4',
      messageId: 'mp',
      predictionId: 'p1',
      attemptedAt: at(30),
      statusCode: 500,
      latencyMs: 12,
      error: 'HTTP 500',
      manual: false,
      event: 'PROCESSING',
      url: 'https://hooks.example/p1',
      webhookId: 'mp',
    });
    expect(list[1]).toMatchObject({ event: 'COMPLETED', webhookId: 'mc' });
    expect(hooks.attemptsOf('p3', 10)).toEqual([]);
  });

  test('transaction: one commit for nested writes, and nothing of them when it throws', () => {
    const { hooks } = stores();
    expect(
      hooks.transaction(() => {
        hooks.enqueue(message('m1', 'p1', 'COMPLETED', at(0)));
        return hooks.transaction(() => hooks.enqueue(message('m2', 'p2', 'COMPLETED', at(0))));
      }),
    ).toBe(true);
    expect(() =>
      hooks.transaction(() => {
        hooks.enqueue(message('m3', 'p3', 'COMPLETED', at(0)));
        throw new Error('crash before the commit');
      }),
    ).toThrow('crash before the commit');
    expect([hooks.message('m1')?.id, hooks.message('m2')?.id, hooks.message('m3')]).toEqual(['m1', 'm2', undefined]);
  });

  test('messages and attempts go with their prediction', () => {
    const { db, hooks } = stores();
    hooks.subscribe('p1', 'https://hooks.example/a', ['COMPLETED']);
    hooks.enqueue(message('m', 'p1', 'COMPLETED', at(0)));
    hooks.recordAttempt(attempt('a', 'm', 'p1', at(1)), {});
    db.$client.prepare(`DELETE FROM predictions WHERE id = 'p1'`).run();
    expect([hooks.subscriptionOf('p1'), hooks.message('m'), hooks.attempt('a')]).toEqual([undefined, undefined, undefined]);
  });
});

describe('sqliteOutbox: the same outbox behind the async interface', () => {
  test('claimDue: due messages less the busy ones, still up to the limit', async () => {
    const { hooks } = stores();
    const outbox = sqliteOutbox(hooks);
    hooks.enqueue(message('m1', 'p1', 'COMPLETED', at(100)));
    hooks.enqueue(message('m2', 'p2', 'COMPLETED', at(200)));
    hooks.enqueue(message('m3', 'p3', 'COMPLETED', at(300)));
    hooks.enqueue(message('m4', 'p1', 'PROCESSING', at(400)));
    const ids = (rows: { id: string }[]) => rows.map((r) => r.id);
    expect(ids(await outbox.claimDue(at(1000), 10, new Set()))).toEqual(['m1', 'm2', 'm3', 'm4']);
    expect(ids(await outbox.claimDue(at(1000), 2, new Set()))).toEqual(['m1', 'm2']);
    // The busy ones do not use up the limit.
    expect(ids(await outbox.claimDue(at(1000), 2, new Set(['m1', 'm2'])))).toEqual(['m3', 'm4']);
    expect(ids(await outbox.claimDue(at(1000), 1, new Map([['m1', 1]])))).toEqual(['m2']);
    // Busy ids that are not due (sent, say, or not yet due) do not widen the limit either.
    expect(ids(await outbox.claimDue(at(1000), 1, new Set(['elsewhere', 'other'])))).toEqual(['m1']);
    expect(ids(await outbox.claimDue(at(250), 10, new Set(['m2'])))).toEqual(['m1']);
    // Claiming is not taking: the same messages are due again.
    expect(ids(await outbox.claimDue(at(1000), 10, new Set()))).toEqual(['m1', 'm2', 'm3', 'm4']);
  });

  test('every read and write is the store’s, as a promise; a failure rejects', async () => {
    const { hooks } = stores();
    const outbox = sqliteOutbox(hooks);
    hooks.subscribe('p1', 'https://hooks.example/a', ['COMPLETED']);
    hooks.enqueue(message('m', 'p1', 'COMPLETED', at(100)));
    expect(await outbox.subscriptionOf('p1')).toStrictEqual({ url: 'https://hooks.example/a', events: ['COMPLETED'] });
    expect(await outbox.subscriptionOf('p2')).toBeUndefined();
    expect(await outbox.nextDueAt()).toEqual(at(100));
    expect((await outbox.message('m'))?.attempts).toBe(0);
    await outbox.recordAttempt(attempt('a', 'm', 'p1', at(100)), { attempts: 1, nextAttemptAt: at(900) });
    expect(await outbox.message('m')).toMatchObject({ attempts: 1, nextAttemptAt: at(900) });
    expect(await outbox.nextDueAt()).toEqual(at(900));
    expect((await outbox.attemptsOf('p1', 5)).map((d) => [d.id, d.event])).toEqual([['a', 'COMPLETED']]);
    expect(await outbox.attempt('a')).toMatchObject({ id: 'a', messageId: 'm', statusCode: 500 });
    await expect(outbox.release(['m'])).resolves.toBeUndefined();
    expect(await outbox.message('m')).toMatchObject({ attempts: 1, nextAttemptAt: at(900) });
    const rejected = outbox.recordAttempt(attempt('a', 'm', 'p1', at(200)), {});
    await expect(rejected).rejects.toThrow(/UNIQUE constraint failed/);
  });
});

describe('incoming receipts', () => {
  test('a delivery id is acted on once; ids older than the tolerance are forgotten', () => {
    const { db, hooks } = stores();
    expect(hooks.rememberReceipt('w1', at(0), at(-300_000))).toBe(true);
    expect(hooks.rememberReceipt('w1', at(1000), at(-299_000))).toBe(false);
    expect(hooks.rememberReceipt('w2', at(1000), at(-299_000))).toBe(true);
    const kept = () => db.$client.prepare('SELECT webhook_id FROM webhook_receipts ORDER BY webhook_id').pluck().all();
    // Forgetting before exactly w1's time keeps it; one millisecond later drops it.
    hooks.rememberReceipt('w3', at(300_000), at(0));
    expect(kept()).toEqual(['w1', 'w2', 'w3']);
    hooks.rememberReceipt('w4', at(300_001), at(1));
    expect(kept()).toEqual(['w2', 'w3', 'w4']);
    // A forgotten id is new again.
    expect(hooks.rememberReceipt('w1', at(300_002), at(1))).toBe(true);
  });
});

describe('idempotency keys', () => {
  test('found within 24 hours, per owner, and not a millisecond longer', () => {
    const { keys } = stores();
    expect(IDEMPOTENCY_TTL_MS).toBe(24 * 60 * 60 * 1000);
    keys.remember('A', 'k', { predictionId: 'p1', inputHash: 'h1' }, T0);
    keys.remember(null, 'k', { predictionId: 'p2', inputHash: 'h2' }, T0);
    expect(keys.find('A', 'k', T0)).toStrictEqual({ predictionId: 'p1', inputHash: 'h1', createdAt: T0 });
    expect(keys.find(null, 'k', at(IDEMPOTENCY_TTL_MS - 1))).toMatchObject({ predictionId: 'p2', inputHash: 'h2' });
    // Open mode is stored as owner ''.
    expect(keys.find('', 'k', T0)).toMatchObject({ predictionId: 'p2' });
    expect(keys.find('A', 'k', at(IDEMPOTENCY_TTL_MS))).toBeUndefined();
    expect(keys.find('B', 'k', T0)).toBeUndefined();
    expect(keys.find('A', 'other', T0)).toBeUndefined();
  });

  test('remembering replaces a key’s earlier use, and forgets every key at least 24 hours old', () => {
    const { db, keys } = stores();
    const count = () => db.$client.prepare('SELECT count(*) FROM idempotency_keys').pluck().get();
    keys.remember('A', 'old', { predictionId: 'p1', inputHash: 'h' }, T0);
    keys.remember('A', 'younger', { predictionId: 'p2', inputHash: 'h' }, at(1));
    keys.remember('A', 'k', { predictionId: 'p3', inputHash: 'h3' }, at(2));
    keys.remember('A', 'k', { predictionId: 'p4', inputHash: 'h4' }, at(3));
    expect(keys.find('A', 'k', at(3))).toStrictEqual({ predictionId: 'p4', inputHash: 'h4', createdAt: at(3) });
    expect(count()).toBe(3);
    // Exactly 24 h after 'old': it goes, 'younger' (1 ms younger) stays.
    keys.remember('B', 'n', { predictionId: 'p5', inputHash: 'h' }, at(IDEMPOTENCY_TTL_MS));
    expect(count()).toBe(3);
    expect(db.$client.prepare(`SELECT key FROM idempotency_keys ORDER BY key`).pluck().all()).toEqual(['k', 'n', 'younger']);
  });

  test('atomically runs in one transaction: all of it, or none of it', () => {
    const { keys } = stores();
    expect(
      keys.atomically(() => {
        keys.remember('A', 'k1', { predictionId: 'p1', inputHash: 'h' }, T0);
        return 'value';
      }),
    ).toBe('value');
    expect(() =>
      keys.atomically(() => {
        keys.remember('A', 'k2', { predictionId: 'p2', inputHash: 'h' }, T0);
        throw new Error('refused after the write');
      }),
    ).toThrow('refused after the write');
    expect(keys.find('A', 'k1', T0)?.predictionId).toBe('p1');
    expect(keys.find('A', 'k2', T0)).toBeUndefined();
    expect(must(keys.find('A', 'k1', T0)).inputHash).toBe('h');
  });
});
