import { mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import Database from 'better-sqlite3';
import { drizzle, type BetterSQLite3Database } from 'drizzle-orm/better-sqlite3';
import { migrate } from 'drizzle-orm/better-sqlite3/migrator';
import * as schema from './schema.js';

export type Db = BetterSQLite3Database<typeof schema> & { $client: Database.Database };

const migrationsFolder = join(dirname(fileURLToPath(import.meta.url)), '../../migrations');

/**
 * Opens (creating if needed) the SQLite file and brings it to the latest migration.
 * WAL lets readers (queries, subscriptions) run beside the poller's writes; synchronous=NORMAL
 * in WAL mode can lose the last commits on power loss but never corrupts, and survives a
 * process crash (SIGKILL) intact, which is the failure the poller is designed around.
 */
export function openDatabase(file: string): Db {
  if (file !== ':memory:') mkdirSync(dirname(file), { recursive: true });
  const sqlite = new Database(file);
  sqlite.pragma('journal_mode = WAL');
  sqlite.pragma('synchronous = NORMAL');
  sqlite.pragma('busy_timeout = 5000');
  sqlite.pragma('foreign_keys = ON');
  // Statement journals (and sorts) in memory, not temp files. A statement inside a larger
  // transaction that fires a trigger needs a statement journal; the queue order's TEMP triggers
  // (db/queue-order.ts) fire on every insert, and group commit (db/group-commit.ts) puts inserts
  // inside one transaction. With temp files each such insert cost ~58 µs instead of ~11 µs (a
  // trigger `SELECT 1` alone did it; issue 18, bench/queue.ts). Retention deletes in batches of
  // 500 rows, so no statement's journal grows past a few MB. Sorts no index serves stay in memory
  // too: our queries are indexed, but a migration that builds an index on a large table sorts it in
  // RAM. Set before anything else: changing temp_store drops every TEMP trigger (the queue order's
  // and the keys' are created later, per connection).
  sqlite.pragma('temp_store = MEMORY');
  const db = drizzle(sqlite, { schema }) as Db;
  migrate(db, { migrationsFolder });
  return db;
}
