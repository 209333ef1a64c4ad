import { join } from 'node:path';
import { describe, expect, test } from 'vitest';
import { hashKey, KeyStore } from '../src/auth/keys.js';
import { openDatabase } from '../src/db/client.js';
import { tempDir } from './helpers/app.js';
import { must } from './helpers/must.js';

/**
 * KeyStore answers from an in-memory snapshot of api_keys (issue 18). What must never happen is a
 * stale answer: each case changes the table one way the snapshot could miss, and checks the very
 * next answer. Two connections on one file stand for the server and the CLI's process; as the
 * CLI's commits reach the server only between its runs of synchronous code (its requests are I/O),
 * each commit of the "CLI" here is followed by a turn of the event loop.
 */
const nextRun = () => new Promise<void>((resolve) => setImmediate(resolve));
function twoConnections() {
  const file = join(tempDir(), 'cinegraph.sqlite');
  const serverDb = openDatabase(file);
  const cliDb = openDatabase(file);
  return { server: new KeyStore(serverDb), serverDb, cli: new KeyStore(cliDb), cliDb };
}

const insertRaw = `INSERT INTO api_keys (id, name, prefix, key_hash, created_at) VALUES (?, ?, 'cg_xxxxxx', ?, 0)`;

describe('KeyStore snapshot', () => {
  test("another connection's create, revoke and delete are seen at the very next check", async () => {
    const { server, cli, cliDb } = twoConnections();
    expect(server.isEmpty()).toBe(true);
    expect(server.verify('cg_nothing')).toBeUndefined();

    const { key, row } = cli.create('bot', { perMinute: 7 });
    await nextRun();
    expect(server.isEmpty()).toBe(false);
    expect(server.verify(key)).toEqual({ id: row.id, name: 'bot', perMinute: 7, maxInFlight: null });
    expect(server.isLive(row.id)).toBe(true);

    cli.revoke('bot');
    await nextRun();
    expect(server.verify(key)).toBeUndefined();
    expect(server.isLive(row.id)).toBe(false);

    const second = cli.create('bot'); // the name is free again
    await nextRun();
    expect(server.verify(second.key)?.id).toBe(second.row.id);
    cliDb.$client.prepare('DELETE FROM api_keys WHERE id = ?').run(second.row.id);
    await nextRun();
    expect(server.verify(second.key)).toBeUndefined();
    expect(server.isLive(second.row.id)).toBe(false);
    // Once a key has existed, deleting every row does not reopen the gateway.
    cliDb.$client.prepare('DELETE FROM api_keys').run();
    await nextRun();
    expect(server.isEmpty()).toBe(false);
  });

  test("raw SQL on the server's own connection is seen too (no data_version move there)", () => {
    const { server, serverDb } = twoConnections();
    const { key, row } = server.create('own');
    expect(server.verify(key)?.id).toBe(row.id);
    serverDb.$client.prepare('UPDATE api_keys SET revoked_at = 1 WHERE id = ?').run(row.id);
    expect(server.verify(key)).toBeUndefined();
    expect(server.isLive(row.id)).toBe(false);
    serverDb.$client.prepare('UPDATE api_keys SET revoked_at = NULL, per_minute = 3 WHERE id = ?').run(row.id);
    expect(server.verify(key)).toMatchObject({ id: row.id, perMinute: 3 });
    expect(server.isLive(row.id)).toBe(true);
    serverDb.$client.prepare(insertRaw).run('raw-id', 'raw', hashKey('cg_raw'));
    expect(server.verify('cg_raw')?.id).toBe('raw-id');
  });

  test('inside a transaction SQL answers, and a rolled-back key is never believed afterwards', () => {
    const { server, serverDb } = twoConnections();
    expect(server.isEmpty()).toBe(true); // a snapshot of the empty table exists now
    const c = serverDb.$client;
    const attempt = c.transaction(() => {
      c.prepare(insertRaw).run('tx-id', 'tx', hashKey('cg_tx'));
      // Its own uncommitted write is visible inside, as SQL sees it.
      expect(server.verify('cg_tx')?.id).toBe('tx-id');
      expect(server.isLive('tx-id')).toBe(true);
      throw new Error('roll back');
    });
    expect(attempt).toThrow('roll back');
    expect(server.verify('cg_tx')).toBeUndefined();
    expect(server.isLive('tx-id')).toBe(false);
    expect(server.isEmpty()).toBe(true);
  });

  test('changeVersion moves on either kind of change and stands still otherwise', async () => {
    const { server, serverDb, cli } = twoConnections();
    const v0 = server.changeVersion();
    expect(server.changeVersion()).toBe(v0);
    server.verify('cg_unknown');
    expect(server.changeVersion()).toBe(v0);
    cli.create('elsewhere');
    await nextRun();
    const v1 = server.changeVersion();
    expect(v1).not.toBe(v0);
    serverDb.$client.prepare(insertRaw).run('local-id', 'local', hashKey('cg_local'));
    expect(server.changeVersion()).not.toBe(v1);
    expect(must(server.verify('cg_local')).name).toBe('local');
  });

  test("one read of data_version serves a synchronous run; this connection's own writes are seen within it", async () => {
    const { server, serverDb, cli } = twoConnections();
    expect(server.isEmpty()).toBe(true);
    // In the same run (which a request from outside could never see in between), the first read stands.
    const made = cli.create('same-run');
    expect(server.isEmpty()).toBe(true);
    expect(server.verify(made.key)).toBeUndefined();
    await nextRun();
    expect(server.isEmpty()).toBe(false);
    expect(server.verify(made.key)?.id).toBe(made.row.id);
    // Writes on the server's own connection are counted as they happen, memo or not.
    serverDb.$client.prepare(insertRaw).run('own-run', 'own-run', hashKey('cg_own_run'));
    expect(server.verify('cg_own_run')?.id).toBe('own-run');
    serverDb.$client.prepare('UPDATE api_keys SET revoked_at = 1 WHERE id = ?').run('own-run');
    expect(server.verify('cg_own_run')).toBeUndefined();
    expect(server.isLive('own-run')).toBe(false);
  });

  test('several KeyStores on one connection each see its writes (one counter per connection, not per store)', () => {
    const { server: first, serverDb } = twoConnections();
    const second = new KeyStore(serverDb);
    expect([first.isEmpty(), second.isEmpty()]).toEqual([true, true]);
    const { key, row } = second.create('shared');
    expect(first.verify(key)?.id).toBe(row.id);
    expect(second.verify(key)?.id).toBe(row.id);
    serverDb.$client.prepare('UPDATE api_keys SET revoked_at = 1 WHERE id = ?').run(row.id);
    expect([first.verify(key), second.verify(key)]).toEqual([undefined, undefined]);
    expect([first.isLive(row.id), second.isLive(row.id)]).toEqual([false, false]);
  });
});
