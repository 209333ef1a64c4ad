import { existsSync } from 'node:fs';
import { join } from 'node:path';
import pg from 'pg';
import { describe, expect, test } from 'vitest';
import { createLogger } from '../src/log.js';
import { hashKey } from '../src/auth/keys.js';
import { KEYS_CHANNEL, PgKeyAdmin, PgKeyCache } from '../src/auth/pg-keys.js';
import { openPostgres, type PgDb } from '../src/db/pg/client.js';
import { tempDir, waitFor } from './helpers/app.js';
import { wsClient } from './helpers/clients.js';
import { onDispose } from './helpers/dispose.js';
import { cli } from './helpers/keys.js';
import { must } from './helpers/must.js';
import { usePostgres } from './helpers/postgres.js';
import { freePort, spawnServer } from './helpers/process.js';

const db = usePostgres();
const LIST = '{ predictions { nodes { id } } }';

/** The HTTP status a gateway answers a query sent with this key (none: no Authorization). */
async function statusWith(url: string, key?: string): Promise<number> {
  const headers: Record<string, string> = { accept: 'application/json' };
  if (key !== undefined) headers.authorization = `Bearer ${key}`;
  const res = await fetch(`${url}/graphql?query=${encodeURIComponent(LIST)}`, { headers });
  await res.arrayBuffer();
  return res.status;
}

/** `cinegraph keys …` on the test's Postgres, from a DATA_DIR no gateway uses. */
function keysCli(dataDir: string, args: string[]) {
  return cli(dataDir, ['keys', ...args], { DATABASE_URL: db.url() });
}

async function createKeyCli(dataDir: string, name: string): Promise<string> {
  const r = await keysCli(dataDir, ['create', '--name', name]);
  expect(r.stderr).toBe('');
  expect(r.code).toBe(0);
  return must(r.stdout.trimEnd().split('\n').at(-1));
}

/** A gateway process on the test's Postgres with its own DATA_DIR; nothing in these tests calls the upstream. */
async function gateway(host = '127.0.0.1') {
  return spawnServer({
    DATABASE_URL: db.url(),
    // Instances on one database must share an upstream; a loopback port nothing listens on.
    WAVESPEED_BASE_URL: `http://127.0.0.1:${await freePort()}/sandbox`,
    HOST: host,
    PORT: String(await freePort()),
    DATA_DIR: tempDir(),
    LOG_LEVEL: 'info',
  });
}

async function open(url: string): Promise<PgDb> {
  const pgDb = await openPostgres(url, { max: 2 });
  onDispose(() => pgDb.$client.end());
  return pgDb;
}

function cacheOn(pgDb: PgDb, refreshMs?: number): PgKeyCache {
  const cache = new PgKeyCache({ db: pgDb, connectionString: db.url(), log: createLogger('silent'), refreshMs });
  onDispose(() => cache.stop());
  return cache;
}

describe('API keys on Postgres, across gateway processes', () => {
  test('a key made by the CLI with DATABASE_URL is accepted by two gateways; once revoked, both refuse it at once (NOTIFY) and its socket closes', async () => {
    const cliDir = tempDir();
    const key = await createKeyCli(cliDir, 'shared');
    const other = await createKeyCli(cliDir, 'other');
    // The keys went to Postgres, not to the CLI's DATA_DIR.
    expect(existsSync(join(cliDir, 'cinegraph.sqlite'))).toBe(false);
    const [a, b] = await Promise.all([gateway(), gateway()]);

    for (const g of [a, b]) {
      expect(await statusWith(g.url, key)).toBe(200);
      expect(await statusWith(g.url, other)).toBe(200);
      expect(await statusWith(g.url)).toBe(401);
      expect(await statusWith(g.url, `${key.slice(0, -1)}x`)).toBe(401);
    }

    const list = await keysCli(cliDir, ['list']);
    expect(list.code).toBe(0);
    expect(list.stdout).toMatch(new RegExp(`^shared\\s+${key.slice(0, 9)}…\\s+\\S+\\s+live\\s`, 'm'));
    expect(list.stdout).not.toContain(key);

    // A graphql-ws socket of the key, acknowledged, on A.
    const socket = wsClient(a.url, { authorization: `Bearer ${key}` });
    await new Promise<void>((resolve) => socket.on('connected', () => resolve()));
    const closed = new Promise<{ code: number; reason: string; at: number }>((resolve) =>
      socket.on('closed', (e) => {
        const { code, reason } = e as { code: number; reason: string };
        resolve({ code, reason, at: Date.now() });
      }),
    );

    const revoke = await keysCli(cliDir, ['revoke', 'shared']);
    expect(revoke.stdout.trim()).toBe(`revoked key "shared" (${key.slice(0, 9)}…)`);
    // The revoke committed before the CLI exited: from here, both must refuse it promptly (a NOTIFY and a
    // SELECT in each child; 3 s leaves a loaded machine room and still rules out never).
    const revokedAt = Date.now();
    await Promise.all([a, b].map((g) => waitFor(() => statusWith(g.url, key), (s) => s === 401, 3000)));
    const { at, ...close } = await Promise.race([
      closed,
      new Promise<never>((_, reject) => setTimeout(() => reject(new Error('the socket of the revoked key is still open 5 s later')), 5000).unref()),
    ]);
    expect(close).toEqual({ code: 4401, reason: 'UNAUTHENTICATED' });
    expect(at - revokedAt).toBeLessThan(3000);
    for (const g of [a, b]) expect(await statusWith(g.url, other)).toBe(200);
    expect((await keysCli(cliDir, ['list'])).stdout).toMatch(/^shared\s+\S+\s+\S+\s+revoked /m);
  });

  test('on an empty Postgres a non-loopback gateway refuses to start; once a key exists it serves, to that key only', async () => {
    await expect(gateway('0.0.0.0')).rejects.toThrow(/refusing to listen on 0\.0\.0\.0 with no API keys[\s\S]*same DATABASE_URL/);
    const key = await createKeyCli(tempDir(), 'first');
    const g = await gateway('0.0.0.0');
    expect(await statusWith(g.url, key)).toBe(200);
    expect(await statusWith(g.url)).toBe(401);
  });

  test('the CLI keeps its rules and errors on Postgres: a taken live name, an unknown key, a rotated webhook secret', async () => {
    const dir = tempDir();
    await createKeyCli(dir, 'bot');
    const taken = await keysCli(dir, ['create', '--name', 'bot']);
    expect({ code: taken.code, stderr: taken.stderr.trim() }).toEqual({ code: 1, stderr: 'cinegraph: a live key named "bot" already exists' });
    expect((await keysCli(dir, ['create', '--name', '-bad'])).stderr).toContain('invalid key name "-bad"');
    expect((await keysCli(dir, ['revoke', 'nobody'])).stderr.trim()).toBe('cinegraph: no live key named "nobody"');
    const rotated = await keysCli(dir, ['rotate-webhook-secret', 'bot']);
    expect(rotated.code).toBe(0);
    const secret = must(rotated.stdout.trimEnd().split('\n').at(-1));
    const client = new pg.Client({ connectionString: db.url() });
    await client.connect();
    onDispose(() => client.end());
    const rows = (await client.query('SELECT name, webhook_secret FROM api_keys')).rows;
    expect(rows).toEqual([{ name: 'bot', webhook_secret: secret }]);
    // A revoked key's name may be taken again.
    expect((await keysCli(dir, ['revoke', 'bot'])).code).toBe(0);
    expect((await keysCli(dir, ['create', '--name', 'bot'])).code).toBe(0);
  });
});

describe('PgKeyCache', () => {
  test('never reports empty before its first read; an empty table reads as empty after it', async () => {
    const pgDb = await open(db.url());
    const cache = cacheOn(pgDb);
    expect(cache.isEmpty()).toBe(false);
    await cache.ready();
    expect(cache.isEmpty()).toBe(true);
  });

  test('hears a committed change over NOTIFY (the timer far off), stores only hashes, and moves changeVersion only when something changed', async () => {
    const pgDb = await open(db.url());
    const admin = new PgKeyAdmin(pgDb);
    const cache = cacheOn(pgDb, 60_000);
    await cache.ready();
    const v0 = cache.changeVersion();
    await cache.refresh();
    expect(cache.changeVersion()).toBe(v0);

    const { key, row } = await admin.create('ci', { perMinute: 5 });
    expect(row.keyHash).toBe(hashKey(key));
    const seen = await waitFor(() => cache.verify(key), (k) => k !== undefined, 5000);
    expect(seen).toEqual({ id: row.id, name: 'ci', perMinute: 5, maxInFlight: null });
    expect(cache.isEmpty()).toBe(false);
    expect(cache.webhookSecretOf(row.id)).toBe(row.webhookSecret);
    const v1 = cache.changeVersion();
    expect(v1).toBeGreaterThan(v0);

    const { secret } = await admin.rotateWebhookSecret('ci');
    await waitFor(() => cache.webhookSecretOf(row.id), (s) => s === secret, 5000);
    expect(cache.changeVersion()).toBeGreaterThan(v1);

    await admin.revoke('ci');
    await waitFor(() => cache.isLive(row.id), (live) => !live, 5000);
    expect(cache.verify(key)).toBeUndefined();
    expect(cache.revokedAmong([row.id, 'gone'])).toEqual([row.id, 'gone']);
    // Revoking every key never reopens the gateway.
    expect(cache.isEmpty()).toBe(false);
  });

  test('a change nobody announced is read on the timer; a lost listening connection comes back and hears again', async () => {
    const pgDb = await open(db.url());
    const admin = new PgKeyAdmin(pgDb);
    const cache = cacheOn(pgDb, 300);
    await cache.ready();
    const { key, row } = await admin.create('quiet');
    await waitFor(() => cache.isLive(row.id), Boolean, 5000);
    // Revoked by hand, without a NOTIFY: only the timer can see it.
    await pgDb.$client.query('UPDATE api_keys SET revoked_at = now() WHERE id = $1', [row.id]);
    await waitFor(() => cache.verify(key), (k) => k === undefined, 5000);

    // Both listening sessions are cut; `slow`'s timer is far off, so only its reconnection can bring news.
    const slow = cacheOn(pgDb, 60_000);
    await slow.ready();
    const listening = async () =>
      (await pgDb.$client.query(`SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND query = $1`, [`LISTEN "${KEYS_CHANNEL}"`])).rows.map((r) => r.pid as number);
    const cut = await listening();
    expect(cut).toHaveLength(2);
    await pgDb.$client.query('SELECT pg_terminate_backend(pid) FROM unnest($1::int[]) AS pid', [cut]);
    // Made while nobody listens (the first reconnect waits 50 ms): its NOTIFY is lost, and only the
    // re-read that follows every reconnection brings it.
    const during = await admin.create('during-cut');
    await waitFor(() => slow.isLive(during.row.id), Boolean, 5000);
    // Listening again on new sessions: a key made now is heard over NOTIFY.
    await waitFor(listening, (pids) => pids.filter((p) => !cut.includes(p)).length === 2, 10_000);
    const made = await admin.create('after-reconnect');
    await waitFor(() => slow.isLive(made.row.id), Boolean, 5000);
  });

  test('a failed re-read keeps the last snapshot', async () => {
    const pgDb = await open(db.url());
    const admin = new PgKeyAdmin(pgDb);
    const { key } = await admin.create('kept');
    const own = await openPostgres(db.url(), { max: 1 });
    const cache = cacheOn(own, 60_000);
    await cache.ready();
    expect(cache.verify(key)?.name).toBe('kept');
    await own.$client.end();
    await expect(cache.refresh()).rejects.toThrow();
    expect(cache.verify(key)?.name).toBe('kept');
  });
});
