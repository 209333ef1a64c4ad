import { drizzle } from 'drizzle-orm/node-postgres';
import pg from 'pg';
import { describe, expect, test, vi } from 'vitest';
import { IDEMPOTENCY_TTL_MS } from '../src/db/idempotency.js';
import { closePostgres, MIGRATION_LOCK_KEY, openPostgres, type PgDb } from '../src/db/pg/client.js';
import { CREATE_LOCK_CLASS } from '../src/db/pg/creator.js';
import { PgIdempotency } from '../src/db/pg/idempotency.js';
import { createPgStore, type PgStore } from '../src/db/pg/index.js';
import { pingPostgres } from '../src/db/pg/ping.js';
import { exactlyOne, PgPredictions } from '../src/db/pg/predictions.js';
import * as pgSchema from '../src/db/pg/schema.js';
import { createPredictionPubSub } from '../src/pubsub.js';
import { waitFor } from './helpers/app.js';
import { at, newRow, T0 } from './helpers/db.js';
import { onDispose } from './helpers/dispose.js';
import { must } from './helpers/must.js';
import { usePostgres } from './helpers/postgres.js';
import { timersOf } from './helpers/timers.js';

/**
 * The Postgres store's small parts beyond the shared contract (test/store-contract.test.ts) and the
 * multi-instance tests (test/pg-store.test.ts): the pool and its migration lock, the readiness ping,
 * the shared pause's edges, the creator's after-commit work, the leases' edges, the write guards.
 */
const postgres = usePostgres();

async function open(opts: Parameters<typeof openPostgres>[1] = { max: 3 }): Promise<PgDb> {
  const db = await openPostgres(postgres.url(), opts);
  onDispose(() => closePostgres(db).catch(() => {}));
  return db;
}

function store(db: PgDb, clock = { now: T0 }, instanceId = 'parts'): PgStore {
  return createPgStore(db, { instanceId, leaseMs: 60_000, limits: {}, pubsub: createPredictionPubSub(), now: () => clock.now });
}

/** Timers pending in this process (a timer left behind keeps the process alive). */
describe('openPostgres', () => {
  test('migrates, releases the migration lock and keeps its connection pooled; a second pool opens while the first is still open', async () => {
    const a = await open({ max: 2, applicationName: 'parts-a' });
    // The connection that migrated went back to the pool (not closed).
    expect([a.$client.totalCount, a.$client.idleCount]).toEqual([1, 1]);
    const { rows } = await a.$client.query<{ n: number }>(`SELECT count(*)::int AS n FROM pg_locks WHERE locktype = 'advisory' AND objid = $1 AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`, [MIGRATION_LOCK_KEY]);
    expect(rows[0]?.n).toBe(0);
    const b = await open({ max: 1, applicationName: 'parts-b' });
    expect((await b.$client.query('SELECT count(*)::int AS n FROM predictions')).rows[0]).toEqual({ n: 0 });
    expect(MIGRATION_LOCK_KEY).toBe(0x63696e65);
  });

  test('the pool takes max and the application name, shown in pg_stat_activity', async () => {
    const db = await open({ max: 2, applicationName: 'parts-name' });
    expect(db.$client.options.max).toBe(2);
    const { rows } = await db.$client.query<{ name: string }>('SELECT current_setting($1) AS name', ['application_name']);
    expect(rows[0]?.name).toBe('parts-name');
    // Two queries at once use both connections, and no third is opened.
    await Promise.all([db.$client.query('SELECT pg_sleep(0.05)'), db.$client.query('SELECT pg_sleep(0.05)'), db.$client.query('SELECT 1')]);
    expect(db.$client.totalCount).toBe(2);
  });

  test('an idle connection terminated by the server goes to onIdleError; a checked-out one only fails its query; neither ends the process', async () => {
    const errors: Error[] = [];
    const db = await open({ max: 2, applicationName: 'parts-idle', onIdleError: (err) => errors.push(err) });
    const admin = new pg.Client({ connectionString: postgres.url() });
    await admin.connect();
    onDispose(() => admin.end());
    const kill = () => admin.query(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'parts-idle'`);
    await kill();
    const deadline = Date.now() + 10_000;
    while (errors.length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    expect(errors.length).toBeGreaterThan(0);
    // The pool dropped it and opens a new one.
    expect((await db.$client.query('SELECT 1 AS one')).rows).toEqual([{ one: 1 }]);
    const held = await db.$client.connect();
    const before = errors.length;
    await kill();
    await expect(held.query('SELECT 1')).rejects.toThrow();
    held.release(true);
    expect(errors.length).toBe(before);

    // Without onIdleError: ignored, not an unhandled 'error'.
    const quiet = await open({ max: 1, applicationName: 'parts-quiet' });
    await admin.query(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'parts-quiet'`);
    while (quiet.$client.totalCount > 0 && Date.now() < deadline + 10_000) await new Promise((r) => setTimeout(r, 20));
    expect(quiet.$client.totalCount).toBe(0);
    expect((await quiet.$client.query('SELECT 2 AS two')).rows).toEqual([{ two: 2 }]);
  });

  test('a database that cannot be opened rejects', async () => {
    const url = new URL(postgres.url());
    url.pathname = '/cinegraph_no_such_database';
    await expect(openPostgres(url.toString(), { max: 1 })).rejects.toThrow(/does not exist/);
  });

  test('a migration that fails rejects, closes the connection that migrated (not pooled) and ends the pool', async () => {
    const name = decodeURIComponent(new URL(postgres.url()).pathname.slice(1));
    const admin = new pg.Client({ connectionString: postgres.url() });
    await admin.connect();
    onDispose(() => admin.end());
    await admin.query(`ALTER DATABASE ${pg.escapeIdentifier(name)} SET default_transaction_read_only = on`);
    // What the pool does with the migrating connection, and whether it is ended, seen from its prototype.
    const released: unknown[] = [];
    const connect = pg.Pool.prototype.connect as (this: pg.Pool) => Promise<pg.PoolClient>;
    const connectSpy = vi.spyOn(pg.Pool.prototype, 'connect').mockImplementation(async function (this: pg.Pool) {
      const client = await connect.call(this);
      const release = client.release.bind(client);
      client.release = (err?: Error | boolean) => {
        released.push(err);
        release(err);
      };
      return client;
    } as never);
    const endSpy = vi.spyOn(pg.Pool.prototype, 'end');
    try {
      await expect(openPostgres(postgres.url(), { max: 2 })).rejects.toMatchObject({ cause: { message: expect.stringMatching(/read-only transaction/) } });
      expect(released).toEqual([true]);
      expect(endSpy).toHaveBeenCalledTimes(1);
    } finally {
      connectSpy.mockRestore();
      endSpy.mockRestore();
    }
    // Its session ended with it, and the migration lock with it.
    const deadline = Date.now() + 10_000;
    const held = async () => (await admin.query<{ n: number }>(`SELECT count(*)::int AS n FROM pg_locks WHERE locktype = 'advisory' AND objid = $1`, [MIGRATION_LOCK_KEY])).rows[0]?.n;
    while ((await held()) !== 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    expect(await held()).toBe(0);
  });

  test('every connection keeps an error listener of its own while checked out: an error between two queries is not thrown', async () => {
    const db = await open({ max: 2 });
    const held = await db.$client.connect();
    onDispose(() => held.release(true));
    // The pool's own listener is for idle connections only: it removes it when handing one out.
    expect(held.listenerCount('error')).toBeGreaterThan(0);
    expect(() => held.emit('error', new Error('connection lost between two queries'))).not.toThrow();
    // The connection that migrated and a new one alike.
    const second = await db.$client.connect();
    onDispose(() => second.release(true));
    expect(db.$client.totalCount).toBe(2);
    expect(() => second.emit('error', new Error('terminated'))).not.toThrow();
  });

  test('closePostgres ends the pool: its connections are closed and a query after it rejects', async () => {
    const db = await open({ max: 2, applicationName: 'parts-close' });
    await db.$client.query('SELECT 1');
    await closePostgres(db);
    expect(db.$client.ended).toBe(true);
    expect(db.$client.totalCount).toBe(0);
    await expect(db.$client.query('SELECT 1')).rejects.toThrow();
  });
});

describe('pingPostgres', () => {
  test('answers when Postgres does, and leaves no timer behind', async () => {
    const db = await open({ max: 1 });
    await db.$client.query('SELECT 1');
    expect(await timersOf(5000, () => expect(pingPostgres(db, 5000)).resolves.toBeUndefined())).toEqual({ set: 1, allCleared: true });
  });

  test('rejects with its limit when no connection is free in time (and with the default 2 s)', async () => {
    const db = await open({ max: 1 });
    const held = await db.$client.connect();
    onDispose(() => held.release());
    // Its own timer is cleared once it has answered (counting the process's timers instead raced
    // every other timer of the worker).
    expect(await timersOf(50, () => expect(pingPostgres(db, 50)).rejects.toThrow('Postgres did not answer within 0.05 s'))).toEqual({ set: 1, allCleared: true });
    const started = Date.now();
    await expect(pingPostgres(db)).rejects.toThrow('Postgres did not answer within 2 s');
    expect(Date.now() - started).toBeGreaterThanOrEqual(1900);
  });
});

describe('the shared pause', () => {
  test('refuses an invalid date; the reason follows the pause that sets the end; current is strictly before the end', async () => {
    const s = store(await open());
    await expect(s.pause.hold(new Date(Number.NaN), 'x')).rejects.toThrow(new RangeError('refusing to store an invalid date in pausedUntil'));
    expect(await s.pause.current(T0)).toBeUndefined();
    await s.pause.hold(at(1000), 'first');
    await s.pause.hold(at(500), 'shorter');
    expect(await s.pause.current(T0)).toEqual({ until: at(1000), reason: 'first' });
    await s.pause.hold(at(1000), 'same end');
    expect(await s.pause.current(T0)).toEqual({ until: at(1000), reason: 'first' });
    await s.pause.hold(at(2000), 'longer');
    expect(await s.pause.current(at(1999))).toEqual({ until: at(2000), reason: 'longer' });
    expect(await s.pause.current(at(2000))).toBeUndefined();
  });

  test('a row with no reason reads as an empty reason', async () => {
    const db = await open();
    const s = store(db);
    await db.$client.query('INSERT INTO account_state (id, paused_until) VALUES (1, $1)', [at(1000)]);
    expect(await s.pause.current(T0)).toEqual({ until: at(1000), reason: '' });
  });
});

describe('the creator', () => {
  test('what withRow resolves to runs after the commit, once; the lock is per owner', async () => {
    const db = await open();
    const s = store(db);
    const reader = new pg.Client({ connectionString: postgres.url() });
    await reader.connect();
    onDispose(() => reader.end());
    const seen: string[] = [];
    const out = await s.creator.create(
      {
        row: { ...newRow('p1'), owner: 'A' },
        withRow: async (row, tx) => {
          expect(tx).toBeDefined();
          return async () => {
            const { rows } = await reader.query('SELECT id FROM predictions WHERE id = $1', [row.id]);
            seen.push(`after:${rows.length}`);
          };
        },
      },
      T0,
    );
    expect(out.kind).toBe('created');
    const deadline = Date.now() + 5000;
    while (seen.length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    expect(seen).toEqual(['after:1']);
    // A withRow that resolves to nothing is fine.
    expect((await s.creator.create({ row: { ...newRow('p2'), owner: 'A' }, withRow: async () => undefined }, T0)).kind).toBe('created');
    expect(CREATE_LOCK_CLASS).toBe(0x63726561);
    // Another owner's creation does not wait for an owner whose lock is held.
    const locker = new pg.Client({ connectionString: postgres.url() });
    await locker.connect();
    onDispose(() => locker.end());
    await locker.query('BEGIN');
    await locker.query('SELECT pg_advisory_xact_lock($1::int4, hashtext($2::text))', [CREATE_LOCK_CLASS, 'A']);
    expect((await s.creator.create({ row: { ...newRow('b1'), owner: 'B' } }, T0)).kind).toBe('created');
    let aDone = false;
    const a = s.creator.create({ row: { ...newRow('a3'), owner: 'A' } }, T0).then((o) => {
      aDone = true;
      return o;
    });
    // A's creation waits on the lock held for A.
    const waitDeadline = Date.now() + 10_000;
    for (;;) {
      const { rows } = await locker.query(`SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND classid = $1::oid AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`, [CREATE_LOCK_CLASS]);
      if (rows.length || Date.now() > waitDeadline) break;
      await new Promise((r) => setTimeout(r, 10));
    }
    expect(aDone).toBe(false);
    await locker.query('COMMIT');
    expect((await a).kind).toBe('created');
  });

  test('open mode (no owner) takes the lock of owner \'\'', async () => {
    const db = await open();
    const s = store(db);
    const locker = new pg.Client({ connectionString: postgres.url() });
    await locker.connect();
    onDispose(() => locker.end());
    await locker.query('BEGIN');
    await locker.query('SELECT pg_advisory_xact_lock($1::int4, hashtext($2::text))', [CREATE_LOCK_CLASS, '']);
    let done = false;
    const created = s.creator.create({ row: { ...newRow('o1'), owner: null } }, T0).then((o) => {
      done = true;
      return o;
    });
    const deadline = Date.now() + 10_000;
    for (;;) {
      const { rows } = await locker.query(`SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND classid = $1::oid AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`, [CREATE_LOCK_CLASS]);
      if (rows.length || Date.now() > deadline) break;
      await new Promise((r) => setTimeout(r, 10));
    }
    expect(done).toBe(false);
    await locker.query('COMMIT');
    expect(await created).toMatchObject({ kind: 'created', row: { id: 'o1', owner: null } });
  });

  test('a key whose prediction is gone, or is not the owner’s, creates anew and takes the key over', async () => {
    const db = await open();
    const s = store(db);
    const key = { key: 'k', inputHash: 'h' };
    expect(await s.creator.create({ row: { ...newRow('p1'), owner: 'A' }, idempotency: key }, T0)).toMatchObject({ kind: 'created' });
    await db.$client.query(`DELETE FROM predictions WHERE id = 'p1'`);
    expect(await s.creator.create({ row: { ...newRow('p2'), owner: 'A' }, idempotency: key }, at(1))).toMatchObject({ kind: 'created', row: { id: 'p2' } });
    expect(await s.idempotency.find('A', 'k', at(1))).toEqual({ predictionId: 'p2', inputHash: 'h', createdAt: at(1) });
    // A key never replays another owner's prediction.
    await db.$client.query(`UPDATE predictions SET owner = 'B' WHERE id = 'p2'`);
    expect(await s.creator.create({ row: { ...newRow('p3'), owner: 'A' }, idempotency: key }, at(2))).toMatchObject({ kind: 'created', row: { id: 'p3', owner: 'A' } });
    expect(await s.idempotency.find('A', 'k', at(2))).toEqual({ predictionId: 'p3', inputHash: 'h', createdAt: at(2) });
  });

  test('a withRow that fails rolls the creation back: no row, no key; nothing runs after', async () => {
    const db = await open();
    const s = store(db);
    await expect(
      s.creator.create(
        {
          row: { ...newRow('p1'), owner: 'A' },
          idempotency: { key: 'k', inputHash: 'h' },
          withRow: async () => {
            throw new Error('subscription refused');
          },
        },
        T0,
      ),
    ).rejects.toThrow('subscription refused');
    expect(await s.predictions.findById('p1')).toBeUndefined();
    expect(await s.idempotency.find('A', 'k', T0)).toBeUndefined();
  });
});

describe('the idempotency keys', () => {
  test('remembering replaces the key’s earlier use and forgets every key at least 24 h old, not one a millisecond younger', async () => {
    const db = await open();
    const keys = new PgIdempotency(db);
    const count = async () => (await db.$client.query<{ n: number }>('SELECT count(*)::int AS n FROM idempotency_keys')).rows[0]?.n;
    await keys.remember(db, 'A', 'old', { predictionId: 'p1', inputHash: 'h' }, T0);
    await keys.remember(db, 'A', 'younger', { predictionId: 'p2', inputHash: 'h' }, at(1));
    await keys.remember(db, 'A', 'k', { predictionId: 'p3', inputHash: 'h3' }, at(2));
    await keys.remember(db, 'A', 'k', { predictionId: 'p4', inputHash: 'h4' }, at(3));
    expect(await keys.find('A', 'k', at(3))).toStrictEqual({ predictionId: 'p4', inputHash: 'h4', createdAt: at(3) });
    expect(await count()).toBe(3);
    await keys.remember(db, null, 'n', { predictionId: 'p5', inputHash: 'h' }, at(IDEMPOTENCY_TTL_MS));
    expect((await db.$client.query<{ owner: string; key: string }>('SELECT owner, key FROM idempotency_keys ORDER BY key')).rows).toEqual([
      { owner: 'A', key: 'k' },
      { owner: '', key: 'n' },
      { owner: 'A', key: 'younger' },
    ]);
    expect(await keys.find(null, 'n', at(IDEMPOTENCY_TTL_MS))).toMatchObject({ predictionId: 'p5' });
    expect(await keys.find('', 'n', at(IDEMPOTENCY_TTL_MS))).toMatchObject({ predictionId: 'p5' });
  });
});

describe('the write guards', () => {
  test('exactlyOne names what went wrong', () => {
    expect(exactlyOne([1], 'insert')).toBe(1);
    expect(() => exactlyOne([], 'update')).toThrow('update affected 0 rows, expected 1');
    expect(() => exactlyOne([1, 2], 'insert')).toThrow('insert affected 2 rows, expected 1');
  });

  test('an invalid date is refused before any write, naming the column; an empty patch still answers whether a live row matched', async () => {
    const db = await open();
    const s = store(db);
    await s.insert(newRow('p1'));
    await expect(s.lifecycleRecorder.record('p1', { nextPollAt: new Date(Number.NaN) })).rejects.toThrow('refusing to store an invalid date in nextPollAt');
    expect(await s.lifecycleRecorder.reschedule('p1', {})).toBe(true);
    expect(await s.lifecycleRecorder.reschedule('nobody', {})).toBe(false);
    expect((await s.predictions.findById('p1'))?.version).toBe(1);
    const recorded = must(await s.lifecycleRecorder.record('p1', {}));
    expect(recorded.version).toBe(2);
    // Keys present but undefined are no values: still an empty patch.
    expect(await s.lifecycleRecorder.reschedule('p1', { attempts: undefined, nextPollAt: undefined })).toBe(true);
    expect(await s.predictions.findById('p1')).toMatchObject({ version: 2, attempts: 0, nextPollAt: T0 });
  });

  test('probeWrite is a real write: it fails where writes fail (a read-only database)', async () => {
    const db = await open();
    const s = store(db);
    await s.insert(newRow('p1'));
    await expect(s.predictions.probeWrite()).resolves.toBeUndefined();
    const name = decodeURIComponent(new URL(postgres.url()).pathname.slice(1));
    await db.$client.query(`ALTER DATABASE ${pg.escapeIdentifier(name)} SET default_transaction_read_only = on`);
    const pool = new pg.Pool({ connectionString: postgres.url(), max: 1 });
    onDispose(() => pool.end());
    const readOnly = new PgPredictions(drizzle({ client: pool, schema: pgSchema }) as unknown as PgDb);
    expect(await readOnly.findById('p1')).toMatchObject({ id: 'p1', version: 1 });
    // Drizzle wraps the driver's error ("Failed query: …") with it as the cause.
    await expect(readOnly.probeWrite()).rejects.toMatchObject({ cause: { message: expect.stringMatching(/read-only transaction/) } });
  });
});

describe('the leases', () => {
  test('a claim of nothing asks nothing; release of no ids releases nothing; renew of none renews nothing', async () => {
    const db = await open();
    const s = store(db);
    await s.insert(newRow('q1'));
    await s.insert(newRow('d1', { nextPollAt: at(-5) }));
    must(await s.lifecycleRecorder.record('d1', { upstreamId: 'task-d1', status: 'PROCESSING' }));
    expect(await s.leases.claimDue(T0, 0)).toEqual([]);
    expect(await s.leases.claimQueued(T0, 0)).toEqual([]);
    expect(await s.leases.claimQueued(T0, -1)).toEqual([]);
    // claimQueued(0) made no account_state row.
    expect((await db.$client.query('SELECT count(*)::int AS n FROM account_state')).rows[0]).toEqual({ n: 0 });
    expect(await s.leases.claimDue(T0, 5)).toEqual(['d1']);
    expect(await s.leases.claimQueued(T0, 5)).toEqual(['q1']);
    const locked = async () => (await db.$client.query<{ id: string }>('SELECT id FROM predictions WHERE locked_by IS NOT NULL ORDER BY id')).rows.map((r) => r.id);
    await s.leases.release([]);
    expect(await locked()).toEqual(['d1', 'q1']);
    const until = async (id: string) => (await db.$client.query<{ u: Date }>('SELECT locked_until AS u FROM predictions WHERE id = $1', [id])).rows[0]?.u;
    const before = await until('d1');
    await s.leases.renew([], at(10_000));
    expect(await until('d1')).toEqual(before);
    await s.leases.renew(['d1'], at(10_000));
    expect(await until('d1')).toEqual(at(70_000));
    await s.leases.release(['d1']);
    expect(await locked()).toEqual(['q1']);
    await s.leases.release();
    expect(await locked()).toEqual([]);
  });

  test('rows due at the same time are claimed in insertion order; queued ones in fair order', async () => {
    const db = await open();
    const s = store(db);
    for (const id of ['c', 'a', 'b']) {
      await s.insert(newRow(id, { nextPollAt: at(-1) }));
      must(await s.lifecycleRecorder.record(id, { upstreamId: `task-${id}`, status: 'PROCESSING', nextPollAt: at(-1) }));
    }
    expect(await s.leases.claimDue(T0, 10)).toEqual(['c', 'a', 'b']);
    for (const [id, owner] of [
      ['x1', 'X'],
      ['x2', 'X'],
      ['y1', 'Y'],
      ['z1', 'Z'],
    ] as const)
      await s.insert(newRow(id, { owner }));
    expect(await s.leases.claimQueued(T0, 10)).toEqual(['x1', 'y1', 'z1', 'x2']);
  });

  test('a claim that fails rolls back and leaves the pool usable; a claim gives its connection back to the pool', async () => {
    const db = await open({ max: 1 });
    const s = createPgStore(db, { instanceId: 'parts', leaseMs: 60_000, limits: { maxConcurrent: 2 }, pubsub: createPredictionPubSub(), now: () => T0 });
    await s.insert(newRow('q1'));
    await expect(s.leases.claimQueued(new Date(Number.NaN), 5)).rejects.toThrow();
    // A query that fails inside the transaction (LIMIT 1.5) aborts it: it must be rolled back, not pooled as is.
    await expect(s.leases.claimQueued(T0, 1.5)).rejects.toThrow();
    expect(await s.leases.claimQueued(T0, 5)).toEqual(['q1']);
    expect([db.$client.totalCount, db.$client.idleCount]).toEqual([1, 1]);
  });

  test('more in flight than maxConcurrent (the limit lowered) admits nothing, and does not fail', async () => {
    const db = await open();
    const wide = store(db);
    for (const id of ['a', 'b', 'c']) await wide.insert(newRow(id));
    expect(await wide.leases.claimQueued(T0, 2)).toEqual(['a', 'b']);
    const narrow = createPgStore(db, { instanceId: 'narrow', leaseMs: 60_000, limits: { maxConcurrent: 1, maxPerMinute: 1 }, pubsub: createPredictionPubSub(), now: () => T0 });
    expect(await narrow.leases.claimQueued(T0, 5)).toEqual([]);
  });
});

describe('the recorder with a hook', () => {
  test('the hook runs only when a row was written, and what it returns runs after the commit', async () => {
    const db = await open();
    const calls: string[] = [];
    const s = createPgStore(db, {
      instanceId: 'parts',
      leaseMs: 60_000,
      limits: {},
      pubsub: createPredictionPubSub(),
      now: () => T0,
      hook: async (_tx, row) => {
        calls.push(`hook:${row.id}`);
        return () => void calls.push(`after:${row.id}`);
      },
    });
    await s.insert(newRow('p1'));
    expect(await s.lifecycleRecorder.record('nobody', { status: 'FAILED' })).toBeUndefined();
    expect(calls).toEqual([]);
    expect((await s.lifecycleRecorder.record('p1', { status: 'PROCESSING' }))?.status).toBe('PROCESSING');
    expect(calls).toEqual(['hook:p1', 'after:p1']);
  });

  test('a recorded change is announced to the other instances once committed and before the local subscribers hear it; nothing unwritten is announced', async () => {
    const db = await open();
    const reader = await open({ max: 1 });
    const pubsub = createPredictionPubSub();
    const calls: string[] = [];
    const s = createPgStore(db, {
      instanceId: 'parts',
      leaseMs: 60_000,
      limits: {},
      pubsub,
      now: () => T0,
      announce: (row) => {
        calls.push(`announce:${row.id}:${row.status}:v${row.version}`);
        // Committed by then: another connection already reads what is announced.
        void reader.$client.query<{ status: string }>('SELECT status FROM predictions WHERE id = $1', [row.id]).then((r) => calls.push(`read:${r.rows[0]?.status}`));
      },
    });
    pubsub.subscribe('prediction:updated', 'p1', (row) => calls.push(`local:${row.status}:v${row.version}`));
    await s.insert(newRow('p1'));
    expect(await s.lifecycleRecorder.record('nobody', { status: 'FAILED' })).toBeUndefined();
    // The fenced recorder (the poller's) of a row this instance does not hold writes nothing.
    expect(await s.recorder.record('p1', { status: 'PROCESSING' })).toBeUndefined();
    expect(calls).toEqual([]);
    const row = await s.lifecycleRecorder.record('p1', { status: 'CANCELED' });
    expect(calls.slice(0, 2)).toEqual([`announce:p1:CANCELED:v${row?.version}`, `local:CANCELED:v${row?.version}`]);
    await waitFor(
      () => calls,
      (c) => c.length === 3,
      5_000,
    );
    expect(calls[2]).toBe('read:CANCELED');
  });
});
