import Database from 'better-sqlite3';
import { describe, expect, test } from 'vitest';
import { IdempotencyStore } from '../src/db/idempotency.js';
import { PredictionStore } from '../src/db/predictions.js';
import { ASK_SQL, QueueOrder } from '../src/db/queue-order.js';
import { QUEUED, QueueStore } from '../src/db/queue.js';
import { sqliteCreator, sqliteIdempotency, sqlitePredictions, sqliteQueue } from '../src/db/store.js';
import { groupCommitter } from '../src/db/group-commit.js';
import { freshDb, newRow, T0 } from './helpers/db.js';

/**
 * The SQLite side of src/db/store.ts beyond the shared contract (test/store-contract.test.ts): what the
 * async adapters do with a store method that throws or is replaced, and the SQLite creator's own refusals.
 */
function stores() {
  const { db } = freshDb();
  const store = new PredictionStore(db);
  const idempotency = new IdempotencyStore(db);
  return { db, store, idempotency, queue: new QueueStore(db), creator: sqliteCreator(store, idempotency, groupCommitter(db.$client)) };
}

describe('the async adapters over the SQLite stores', () => {
  test('a method that throws gives a rejected promise, never a synchronous throw', async () => {
    const { store, queue, idempotency } = stores();
    const predictions = sqlitePredictions(store);
    // An invalid date: the store throws synchronously.
    let call: Promise<unknown> | undefined;
    expect(() => {
      call = predictions.makeDue('x', new Date(Number.NaN));
    }).not.toThrow();
    store.findById = () => {
      throw new Error('findById broke');
    };
    await expect(predictions.findById('a')).rejects.toThrow('findById broke');
    call?.catch(() => {});
    const q = sqliteQueue(queue);
    queue.position = () => {
      throw new Error('position broke');
    };
    const p = q.position('a');
    expect(p).toBeInstanceOf(Promise);
    await expect(p).rejects.toThrow('position broke');
    const i = sqliteIdempotency(idempotency);
    idempotency.find = () => {
      throw new Error('find broke');
    };
    await expect(i.find(null, 'k', T0)).rejects.toThrow('find broke');
  });

  test('each call looks the method up on the store as it is now, with the store as this, and passes every argument', async () => {
    const { store, queue } = stores();
    const predictions = sqlitePredictions(store);
    store.insert(newRow('p1'));
    expect((await predictions.findById('p1'))?.id).toBe('p1');
    const seen: unknown[] = [];
    const original = store.list;
    store.list = function (this: unknown, ...args: Parameters<PredictionStore['list']>) {
      seen.push(this === store, ...args);
      return original.apply(store, args);
    };
    expect((await predictions.list({ first: 5 })).map((r) => r.id)).toEqual(['p1']);
    expect(seen).toEqual([true, { first: 5 }]);
    const q = sqliteQueue(queue);
    const calls: unknown[][] = [];
    queue.submittedSince = (...args) => {
      calls.push(args);
      return 7;
    };
    expect(await q.submittedSince(T0, ['a'])).toBe(7);
    expect(calls).toEqual([[T0, ['a']]]);
  });

  test('every method of the interfaces is served', async () => {
    const { store, queue, idempotency } = stores();
    const predictions = sqlitePredictions(store);
    store.insert(newRow('p1'));
    expect(Object.keys(predictions).sort()).toEqual(['countUnfinished', 'due', 'findById', 'findByUpstreamId', 'imageOf', 'list', 'makeDue', 'nextDueAt', 'probeWrite'].sort());
    await expect(predictions.probeWrite()).resolves.toBeUndefined();
    expect(await predictions.countUnfinished(null)).toBe(1);
    expect(await predictions.findByUpstreamId('none')).toBeUndefined();
    expect(await predictions.imageOf('p1')).toBeNull();
    const q = sqliteQueue(queue);
    expect(Object.keys(q).sort()).toEqual(
      ['due', 'position', 'nextDue', 'upstreamSubmittedAt', 'upstreamInFlight', 'submittedSince', 'oldestSubmissionSince', 'pastDeadline', 'nextDeadline', 'recentRunMs'].sort(),
    );
    expect(await q.position('p1')).toBe(1);
    expect(await q.due(T0, 10)).toEqual(['p1']);
    expect(await q.nextDue()).toEqual(T0);
    expect(await q.upstreamInFlight()).toBe(0);
    expect(await q.nextDeadline()).toBeUndefined();
    expect(Object.keys(sqliteIdempotency(idempotency))).toEqual(['find']);
  });
});

describe('the SQLite creator', () => {
  const request = (id: string, more: object = {}) => ({ row: { ...newRow(id), owner: 'key-a' }, ...more });

  test('an async withRow is refused (it would run after the commit), and the insert is rolled back', async () => {
    const { store, creator } = stores();
    let ran = false;
    await expect(
      creator.create(
        request('async', {
          withRow: async () => {
            ran = true;
            return undefined;
          },
        }),
        T0,
      ),
    ).rejects.toThrow('withRow must be synchronous on SQLite');
    expect(ran).toBe(true);
    expect(store.findById('async')).toBeUndefined();
    // A synchronous one runs inside the transaction, with the row and no transaction object.
    const seen: unknown[] = [];
    const out = await creator.create(request('sync', { withRow: (row: { id: string }, tx: unknown) => void seen.push(row.id, tx) }), T0);
    expect(out.kind).toBe('created');
    expect(seen).toEqual(['sync', undefined]);
  });

  test('a key whose prediction is gone (or belongs to another owner) creates anew and is remembered for the new one', async () => {
    const { db, store, idempotency, creator } = stores();
    const idem = { key: 'k1', inputHash: 'h' };
    expect((await creator.create(request('first', { idempotency: idem }), T0)).kind).toBe('created');
    expect(idempotency.find('key-a', 'k1', T0)).toMatchObject({ predictionId: 'first', inputHash: 'h' });
    db.$client.prepare('DELETE FROM predictions WHERE id = ?').run('first');
    const again = await creator.create(request('second', { idempotency: idem }), T0);
    expect(again.kind === 'created' && again.row.id).toBe('second');
    expect(idempotency.find('key-a', 'k1', T0)).toMatchObject({ predictionId: 'second', inputHash: 'h' });
    // The remembered prediction now says another owner (not something the gateway does): not replayed to this one.
    db.$client.prepare('UPDATE predictions SET owner = ? WHERE id = ?').run('key-b', 'second');
    const third = await creator.create(request('third', { idempotency: idem }), T0);
    expect(third.kind === 'created' && third.row.id).toBe('third');
    expect(store.findById('third')?.owner).toBe('key-a');
  });

  test('the quota refuses at exactly the limit, counting only unfinished predictions of the owner', async () => {
    const { creator } = stores();
    expect((await creator.create(request('a', { maxInFlight: 2 }), T0)).kind).toBe('created');
    expect((await creator.create(request('b', { maxInFlight: 2 }), T0)).kind).toBe('created');
    expect(await creator.create(request('c', { maxInFlight: 2 }), T0)).toEqual({ kind: 'tooManyInFlight', unfinished: 2, max: 2 });
    expect((await creator.create(request('d', { maxInFlight: 3 }), T0)).kind).toBe('created');
    expect((await creator.create(request('e'), T0)).kind).toBe('created');
  });
});

describe('QueueOrder beyond the random sequence (test/queue-order.test.ts)', () => {
  const turnOf = (c: ReturnType<typeof stores>, ids: string[]) => ids.map((id) => c.queue.position(id));

  test('one tree per connection, whichever QueueStore asks; another connection has its own', () => {
    const c = stores();
    const a = QueueOrder.of(c.db.$client, QUEUED);
    expect(QueueOrder.of(c.db.$client, QUEUED)).toBe(a);
    const other = freshDb();
    expect(QueueOrder.of(other.db.$client, QUEUED)).not.toBe(a);
  });

  test('a queued row with a NULL turn (a write outside the store) is first, as the SQL count has it, and left out of the tree', () => {
    const c = stores();
    for (const id of ['a', 'b', 'c']) c.store.insert(newRow(id));
    const order = QueueOrder.of(c.db.$client, QUEUED);
    expect(['a', 'b', 'c'].map((id) => order.position(id))).toEqual([1, 2, 3]);
    c.db.$client.prepare('UPDATE predictions SET queue_turn = NULL WHERE id = ?').run('b');
    expect(order.position('b')).toBe(1);
    expect(order.position('b')).toBe(c.queue.positionBySql('b'));
    expect(['a', 'c'].map((id) => order.position(id))).toEqual(['a', 'c'].map((id) => c.queue.positionBySql(id)));
    expect(order.size).toBe(2);
  });

  test('a queued row the tree never heard of (its triggers dropped) is answered by SQL, and the tree is rebuilt at the next call', () => {
    const c = stores();
    for (const id of ['a', 'b']) c.store.insert(newRow(id));
    const order = QueueOrder.of(c.db.$client, QUEUED);
    expect(order.position('b')).toBe(2);
    c.db.$client.exec('DROP TRIGGER temp.cinegraph_queue_insert');
    c.store.insert(newRow('unseen'));
    expect(order.size).toBe(2);
    expect(order.position('unseen')).toBe(ASK_SQL);
    expect(c.queue.position('unseen')).toBe(3);
    // Rebuilt: the tree answers again, with every row.
    expect(order.position('unseen')).toBe(3);
    expect(order.size).toBe(3);
    expect(order.position('a')).toBe(1);
  });

  test('a changed row is moved in the tree: out of the queue, back in, deleted, given another turn', async () => {
    const c = stores();
    for (const id of ['a', 'b', 'c', 'd']) c.store.insert(newRow(id, { owner: 'o' }));
    const order = QueueOrder.of(c.db.$client, QUEUED);
    expect(turnOf(c, ['a', 'b', 'c', 'd'])).toEqual([1, 2, 3, 4]);
    c.store.update('b', { submitAttempts: 1, submitStartedAt: T0 });
    expect(order.position('b')).toBeUndefined();
    expect([order.position('c'), order.size]).toEqual([2, 3]);
    c.store.update('b', { submitStartedAt: null });
    expect([order.position('b'), order.size]).toEqual([2, 4]);
    c.db.$client.prepare('DELETE FROM predictions WHERE id = ?').run('a');
    expect([order.position('b'), order.size]).toEqual([1, 3]);
    c.store.update('b', { queueTurn: 100 });
    expect([order.position('b'), order.position('d'), order.size]).toEqual([3, 2, 3]);
    // An update that leaves the key as it was changes nothing.
    c.store.update('d', { queueTurn: 4 });
    expect([order.position('c'), order.position('d'), order.position('b'), order.size]).toEqual([1, 2, 3, 3]);
    // In the background too (no one asking): the next turn of the event loop applies the change.
    c.store.update('c', { submitAttempts: 1, submitStartedAt: T0 });
    await new Promise((resolve) => setImmediate(resolve));
    expect(order.size).toBe(2);
  });

  test('a change on a closed connection is not applied in the background (and nothing throws)', async () => {
    const c = stores();
    c.store.insert(newRow('a'));
    const order = QueueOrder.of(c.db.$client, QUEUED);
    expect(order.position('a')).toBe(1);
    c.store.insert(newRow('b'));
    c.db.$client.close();
    await new Promise((resolve) => setImmediate(resolve));
    expect(order.size).toBe(1);
  });

  test('a change from another connection is seen at the next answer (the data version moved): rebuilt', () => {
    const { db, file } = freshDb();
    const store = new PredictionStore(db);
    const queue = new QueueStore(db);
    store.insert(newRow('a'));
    const order = QueueOrder.of(db.$client, QUEUED);
    expect(order.position('a')).toBe(1);
    const other = new Database(file);
    other.prepare("UPDATE predictions SET submit_started_at = 1, submit_attempts = 1 WHERE id = 'a'").run();
    other.close();
    store.insert(newRow('b'));
    expect(order.position('a')).toBeUndefined();
    expect(order.position('b')).toBe(1);
    expect(queue.position('b')).toBe(1);
    expect(order.size).toBe(1);
  });

  /** The tree's private bookkeeping, read to check its documented bounds. */
  type Inside = { changed: Set<number>; stale: boolean; byIdStmt: { get(id: string): unknown } };
  const inside = (order: QueueOrder) => order as unknown as Inside;

  test('the rows changed since the last look stay at most 10,000: one more and the tree is rebuilt instead', () => {
    const c = stores();
    const order = QueueOrder.of(c.db.$client, QUEUED);
    c.db.$client.transaction(() => {
      for (let i = 0; i < 10_000; i++) c.store.insert(newRow(`a${i}`));
    })();
    expect([inside(order).changed.size, inside(order).stale]).toEqual([10_000, false]);
    expect(order.position('a9999')).toBe(10_000);
    expect(inside(order).changed.size).toBe(0);
    c.db.$client.transaction(() => {
      for (let i = 0; i < 10_001; i++) c.store.insert(newRow(`b${i}`));
    })();
    expect([inside(order).changed.size, inside(order).stale]).toEqual([0, true]);
    expect(order.position('b10000')).toBe(20_001);
    expect(inside(order).stale).toBe(false);
  });

  test('another connection committing while the tree answers makes it answer ASK_SQL', () => {
    const { db, file } = freshDb();
    const store = new PredictionStore(db);
    for (const id of ['a', 'b']) store.insert(newRow(id));
    const order = QueueOrder.of(db.$client, QUEUED);
    expect(order.position('b')).toBe(2);
    const other = new Database(file);
    const byId = inside(order).byIdStmt;
    inside(order).byIdStmt = {
      get: (id: string) => {
        const row = byId.get(id);
        other.prepare("UPDATE predictions SET submit_started_at = 1, submit_attempts = 1 WHERE id = 'a'").run();
        return row;
      },
    };
    expect(order.position('b')).toBe(ASK_SQL);
    inside(order).byIdStmt = byId;
    other.close();
    expect(order.position('b')).toBe(1);
  });
});
