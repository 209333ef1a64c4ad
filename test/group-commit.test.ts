import Database from 'better-sqlite3';
import { describe, expect, test } from 'vitest';
import { groupCommit, groupCommitter } from '../src/db/group-commit.js';
import { IdempotencyStore } from '../src/db/idempotency.js';
import { PredictionStore } from '../src/db/predictions.js';
import { sqliteCreator } from '../src/db/store.js';
import { createRecorder } from '../src/poller/record.js';
import { createPredictionPubSub } from '../src/pubsub.js';
import { freshDb, newRow, T0 } from './helpers/db.js';
import { onDispose } from './helpers/dispose.js';

/** A creator on a real SQLite file, and a second connection that sees only what committed. */
function harness() {
  const { db, file } = freshDb();
  const store = new PredictionStore(db);
  const creator = sqliteCreator(store, new IdempotencyStore(db), groupCommitter(db.$client));
  const reader = new Database(file, { readonly: true });
  onDispose(() => reader.close());
  const committed = () => (reader.prepare('SELECT id FROM predictions ORDER BY seq').all() as { id: string }[]).map((r) => r.id);
  return { db, store, creator, committed };
}

/** Counts the outermost transactions run on `sqlite` from now on (a nested one is a savepoint of the open one). */
function countOutermostTransactions(sqlite: Database.Database): () => number {
  let outermost = 0;
  const transaction = sqlite.transaction.bind(sqlite);
  sqlite.transaction = ((fn: (...a: unknown[]) => unknown) => {
    const t = transaction(fn);
    return Object.assign((...a: unknown[]) => {
      if (!sqlite.inTransaction) outermost++;
      return t(...a);
    }, t);
  }) as typeof sqlite.transaction;
  return () => outermost;
}

const request = (id: string, more: Partial<Parameters<ReturnType<typeof sqliteCreator>['create']>[0]> = {}) => ({ row: { ...newRow(id), owner: 'key-a' }, ...more });

describe('group commit of createVideo inserts (SQLite)', () => {
  test('the creations of one event-loop turn share one transaction, and each caller is answered after its commit', async () => {
    const { db, creator, committed } = harness();
    const sqlite = db.$client;
    const outermost = countOutermostTransactions(sqlite);
    const answeredOutside: boolean[] = [];
    const outcomes = await Promise.all(
      ['a', 'b', 'c', 'd'].map(async (id) => {
        const outcome = await creator.create(request(id), T0);
        // Answered once nothing is open any more, and the row is visible to another connection: committed.
        answeredOutside.push(!sqlite.inTransaction && committed().includes(id));
        return outcome;
      }),
    );
    expect(outcomes.map((o) => (o.kind === 'created' ? o.row.id : o.kind))).toEqual(['a', 'b', 'c', 'd']);
    expect(answeredOutside).toEqual([true, true, true, true]);
    expect(outermost()).toBe(1);
    // Calls in separate turns: one transaction each.
    await creator.create(request('e'), T0);
    await creator.create(request('f'), T0);
    expect(outermost()).toBe(3);
    expect(committed()).toEqual(['a', 'b', 'c', 'd', 'e', 'f']);
  });

  test('a call runs inside the batch transaction, in order, and its value or error goes to its own caller', async () => {
    const { db } = harness();
    const sqlite = db.$client;
    const order: number[] = [];
    const run = groupCommit(sqlite, (n: number) => {
      if (!sqlite.inTransaction) throw new Error('ran outside a transaction');
      order.push(n);
      if (n === 3) throw new Error('three refused');
      return n * 2;
    });
    const results = await Promise.allSettled([1, 2, 3, 4].map((n) => run(n)));
    expect(order).toEqual([1, 2, 3, 4]);
    expect(results).toEqual([
      { status: 'fulfilled', value: 2 },
      { status: 'fulfilled', value: 4 },
      { status: 'rejected', reason: new Error('three refused') },
      { status: 'fulfilled', value: 8 },
    ]);
    expect(sqlite.inTransaction).toBe(false);
  });

  test('a storage error in one call ends the batch: calls before it are rolled back, calls after it never run, all are rejected', async () => {
    const { db, committed } = harness();
    const sqlite = db.$client;
    const store = new PredictionStore(db);
    const ran: string[] = [];
    const run = groupCommit(sqlite, (id: string) => {
      ran.push(id);
      if (id === 'disk-full') throw Object.assign(new Error('no space left on device'), { code: 'ENOSPC' });
      return store.insert(newRow(id)).id;
    });
    const results = await Promise.allSettled(['written-first', 'disk-full', 'never-run'].map((id) => run(id)));
    expect(ran).toEqual(['written-first', 'disk-full']);
    expect(results.map((r) => r.status === 'rejected' && (r.reason as { code?: string }).code)).toEqual(['ENOSPC', 'ENOSPC', 'ENOSPC']);
    expect(committed()).toEqual([]);
    expect(sqlite.inTransaction).toBe(false);
  });

  test('a call that throws rolls back only its own writes; the others of the batch commit', async () => {
    const { creator, committed } = harness();
    const results = await Promise.allSettled([
      creator.create(request('keep-1'), T0),
      creator.create(
        request('refused', {
          withRow: () => {
            throw new Error('the webhook subscription could not be written');
          },
        }),
        T0,
      ),
      creator.create(request('keep-2'), T0),
    ]);
    expect(results.map((r) => r.status)).toEqual(['fulfilled', 'rejected', 'fulfilled']);
    expect((results[1] as PromiseRejectedResult).reason.message).toBe('the webhook subscription could not be written');
    expect(committed()).toEqual(['keep-1', 'keep-2']);
  });

  test('a twin idempotent request in the same batch is replayed, and the in-flight quota counts the batch', async () => {
    const { creator, committed } = harness();
    const idempotency = { key: 'retry-1', inputHash: 'h1' };
    const twins = await Promise.all([creator.create(request('first', { idempotency }), T0), creator.create(request('twin', { idempotency }), T0)]);
    expect(twins.map((o) => o.kind)).toEqual(['created', 'replayed']);
    expect(twins[1]?.kind === 'replayed' && twins[1].row.id).toBe('first');
    const conflict = await creator.create(request('other-input', { idempotency: { key: 'retry-1', inputHash: 'h2' } }), T0);
    expect(conflict.kind).toBe('conflict');

    const quota = await Promise.all(['q1', 'q2', 'q3'].map((id) => creator.create(request(id, { maxInFlight: 3 }), T0)));
    // 'first' is unfinished already: two more fit, the third is refused with the count it saw.
    expect(quota.map((o) => o.kind)).toEqual(['created', 'created', 'tooManyInFlight']);
    expect(quota[2]).toEqual({ kind: 'tooManyInFlight', unfinished: 3, max: 3 });
    expect(committed()).toEqual(['first', 'q1', 'q2']);
  });

  test('a storage failure ends the whole batch: every caller is rejected with it and none of their rows exists', async () => {
    const { db, store, creator, committed } = harness();
    const sqlite = db.$client;
    await creator.create(request('before'), T0);
    sqlite.pragma(`max_page_count = ${sqlite.pragma('page_count', { simple: true })}`);
    // Long prompts, so the page budget runs out within the batch.
    const big = (id: string) => request(id, { row: { ...newRow(id, { prompt: 'p'.repeat(1900) }), owner: 'key-a' } });
    const results = await Promise.allSettled(Array.from({ length: 40 }, (_, i) => creator.create(big(`full-${i}`), T0)));
    expect(results.every((r) => r.status === 'rejected')).toBe(true);
    for (const r of results) expect((r as PromiseRejectedResult).reason).toMatchObject({ code: 'SQLITE_FULL' });
    expect(committed()).toEqual(['before']);
    expect(store.count()).toBe(1);
    expect(sqlite.inTransaction).toBe(false);
    // Room again: the next batch commits as usual.
    sqlite.pragma('max_page_count = 1073741823');
    expect((await creator.create(request('after'), T0)).kind).toBe('created');
    expect(committed()).toEqual(['before', 'after']);
  });

  test('the recorder on group commit: the writes of one turn commit together, and each change is published only once it has committed', async () => {
    const { db, store, committed } = harness();
    const sqlite = db.$client;
    for (const id of ['r1', 'r2', 'r3']) store.insert(newRow(id));
    const pubsub = createPredictionPubSub();
    const recorder = createRecorder(store, pubsub, () => T0, undefined, groupCommitter(sqlite));
    const reader = new Database(sqlite.name, { readonly: true });
    onDispose(() => reader.close());
    const statusOf = (id: string) => (reader.prepare('SELECT status FROM predictions WHERE id = ?').get(id) as { status: string }).status;
    // What another connection saw at the moment each change was published.
    const seenAtPublish: string[] = [];
    for (const id of ['r1', 'r2']) pubsub.subscribe('prediction:updated', id, (row) => seenAtPublish.push(`${row.id}:${row.status}:${statusOf(row.id)}`));
    const outermost = countOutermostTransactions(sqlite);
    const [a, b, quiet] = await Promise.all([
      recorder.record('r1', { status: 'PROCESSING' }),
      recorder.record('r2', { status: 'PROCESSING' }),
      recorder.reschedule('r3', { attempts: 2 }),
    ]);
    expect(outermost()).toBe(1);
    expect([a?.status, b?.status, quiet]).toEqual(['PROCESSING', 'PROCESSING', true]);
    expect(seenAtPublish).toEqual(['r1:PROCESSING:PROCESSING', 'r2:PROCESSING:PROCESSING']);
    expect(store.findById('r3')?.attempts).toBe(2);
    // An unknown id: nothing written, nothing published, in a batch with one that is.
    const [missing, known] = await Promise.all([recorder.record('nope', { status: 'FAILED' }), recorder.record('r1', { status: 'COMPLETED' })]);
    expect([missing, known?.status]).toEqual([undefined, 'COMPLETED']);
    expect(seenAtPublish.at(-1)).toBe('r1:COMPLETED:COMPLETED');
    expect(committed()).toEqual(['r1', 'r2', 'r3']);
  });
});
