import Database from 'better-sqlite3';
import { describe, expect, test, vi } from 'vitest';
import { transact } from '../src/db/transact.js';
import { freshDb } from './helpers/db.js';
import { onDispose } from './helpers/dispose.js';

/**
 * src/db/transact.ts: better-sqlite3's transaction semantics (BEGIN at the top, a savepoint inside an
 * open transaction) through one wrapper per connection instead of one built per call (issue 18).
 */
function table() {
  const { db, file } = freshDb();
  const sqlite = db.$client;
  sqlite.exec('CREATE TABLE t (x INTEGER NOT NULL)');
  const insert = sqlite.prepare('INSERT INTO t VALUES (?)');
  const reader = new Database(file, { readonly: true });
  onDispose(() => reader.close());
  /** What another connection sees: only what committed. */
  const committed = () => (reader.prepare('SELECT x FROM t ORDER BY rowid').all() as { x: number }[]).map((r) => r.x);
  const mine = () => (sqlite.prepare('SELECT x FROM t ORDER BY rowid').all() as { x: number }[]).map((r) => r.x);
  return { sqlite, insert, committed, mine };
}

describe('transact', () => {
  test('at the top it is a transaction of its own: committed on return, its value returned', () => {
    const { sqlite, insert, committed } = table();
    const value = transact(sqlite, () => {
      insert.run(1);
      insert.run(2);
      // Inside: the writes are not yet visible to another connection.
      expect(committed()).toEqual([]);
      expect(sqlite.inTransaction).toBe(true);
      return 'done';
    });
    expect(value).toBe('done');
    expect(sqlite.inTransaction).toBe(false);
    expect(committed()).toEqual([1, 2]);
  });

  test('a throw at the top rolls everything back and reaches the caller', () => {
    const { sqlite, insert, committed, mine } = table();
    const boom = new Error('boom');
    expect(() =>
      transact(sqlite, () => {
        insert.run(1);
        throw boom;
      }),
    ).toThrow(boom);
    expect(sqlite.inTransaction).toBe(false);
    expect([committed(), mine()]).toEqual([[], []]);
  });

  test('nested, a throw rolls back only its own savepoint: the outer transaction goes on and commits', () => {
    const { sqlite, insert, committed } = table();
    transact(sqlite, () => {
      insert.run(1);
      expect(() =>
        transact(sqlite, () => {
          insert.run(2);
          throw new Error('inner');
        }),
      ).toThrow('inner');
      // Still the outer transaction, without the inner write.
      expect(sqlite.inTransaction).toBe(true);
      transact(sqlite, () => insert.run(3));
    });
    expect(committed()).toEqual([1, 3]);
  });

  test('a nested one that returns is released into the outer transaction, which can still roll it back', () => {
    const { sqlite, insert, committed } = table();
    expect(() =>
      transact(sqlite, () => {
        expect(transact(sqlite, () => insert.run(1).changes)).toBe(1);
        throw new Error('outer');
      }),
    ).toThrow('outer');
    expect(committed()).toEqual([]);
  });

  test('a function that returns a promise is refused and its writes rolled back', () => {
    const { sqlite, insert, mine } = table();
    expect(() =>
      transact(sqlite, () => {
        insert.run(1);
        return Promise.resolve();
      }),
    ).toThrow(/cannot return a promise/);
    expect(mine()).toEqual([]);
  });

  test('one transaction function per connection serves every call (building one per call cost ~4 µs each)', () => {
    const a = table();
    const b = table();
    const builtA = vi.spyOn(a.sqlite, 'transaction');
    const builtB = vi.spyOn(b.sqlite, 'transaction');
    for (let i = 0; i < 5; i++) transact(a.sqlite, () => transact(a.sqlite, () => a.insert.run(i)));
    transact(b.sqlite, () => b.insert.run(9));
    expect([builtA.mock.calls.length, builtB.mock.calls.length]).toEqual([1, 1]);
    // Each connection's writes went to its own database.
    expect([a.committed(), b.committed()]).toEqual([[0, 1, 2, 3, 4], [9]]);
  });
});
