import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { drizzle, type NodePgDatabase } from 'drizzle-orm/node-postgres';
import { migrate } from 'drizzle-orm/node-postgres/migrator';
import pg from 'pg';
import * as schema from './schema.js';

export type PgSchema = typeof schema;
/** The Postgres store's database: Drizzle over a node-postgres pool (`$client`). */
export type PgDb = NodePgDatabase<PgSchema> & { $client: pg.Pool };
/** A transaction on it, as `db.transaction(async (tx) => …)` hands it out. */
export type PgTx = Parameters<Parameters<PgDb['transaction']>[0]>[0];

export const pgMigrationsFolder = join(dirname(fileURLToPath(import.meta.url)), '../../../migrations-pg');

/**
 * The advisory lock key held while migrating: 0x63696e65, "cine" in ASCII. Fixed, so every
 * instance of every version agrees on it; advisory locks are scoped to one database, so gateways
 * on other databases of the same server never wait on each other.
 */
export const MIGRATION_LOCK_KEY = 0x63696e65;

export interface OpenPostgresOptions {
  /** Most connections the pool opens (pg's default is 10). */
  max?: number;
  /** Shown in pg_stat_activity, to tell instances apart. */
  applicationName?: string;
  /**
   * Errors of idle pooled connections (the server restarted, a connection was terminated). The pool
   * has already dropped that connection and the next query opens a new one; without a listener,
   * node-postgres would emit them as an unhandled 'error' and end the process. Ignored by default.
   */
  onIdleError?: (err: Error) => void;
}

/**
 * Opens a pool on `url` and brings the database to the latest migration in migrations-pg/, then
 * returns it. Drizzle's migrator creates its own table outside a transaction and reads which
 * migrations are applied before applying the rest, so two processes migrating at once would both
 * apply (and one would fail on "already exists"). Each process therefore migrates holding
 * `pg_advisory_lock(MIGRATION_LOCK_KEY)`: the first applies, the others wait, then find nothing left
 * to do. The lock belongs to the connection, so a process killed mid-migration releases it (and its
 * transaction rolls back), and the next one starts over.
 */
export async function openPostgres(url: string, opts: OpenPostgresOptions = {}): Promise<PgDb> {
  const pool = new pg.Pool({ connectionString: url, max: opts.max, application_name: opts.applicationName });
  pool.on('error', opts.onIdleError ?? (() => {}));
  // The pool listens for errors only on idle connections: one that dies while checked out (inside a
  // transaction, between two of its queries: a Postgres restart, pg_terminate_backend) would emit
  // an 'error' nobody handles, and that ends the process. Every connection gets a listener of its
  // own for its whole life; the query that meets the dead connection fails and is handled there.
  pool.on('connect', (client) => client.on('error', () => {}));
  try {
    await migrateLocked(pool);
  } catch (err) {
    await pool.end().catch(() => {});
    throw err;
  }
  return drizzle({ client: pool, schema }) as PgDb;
}

async function migrateLocked(pool: pg.Pool): Promise<void> {
  const client = await pool.connect();
  let failed = false;
  try {
    await client.query('SELECT pg_advisory_lock($1)', [MIGRATION_LOCK_KEY]);
    await migrate(drizzle({ client }), { migrationsFolder: pgMigrationsFolder });
    await client.query('SELECT pg_advisory_unlock($1)', [MIGRATION_LOCK_KEY]);
  } catch (err) {
    failed = true;
    throw err;
  } finally {
    // After a failure the connection is closed rather than pooled: that ends its session, which
    // releases the lock whatever state the failure left it in.
    client.release(failed);
  }
}

/** Ends the pool: waits for checked-out connections to be released, then closes them all. */
export async function closePostgres(db: PgDb): Promise<void> {
  await db.$client.end();
}
