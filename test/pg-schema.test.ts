import { readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import Database from 'better-sqlite3';
import { and, asc, is, isNotNull, lte, sql } from 'drizzle-orm';
import { type BetterSQLite3Database, drizzle as drizzleSqlite } from 'drizzle-orm/better-sqlite3';
import { migrate as migrateSqlite } from 'drizzle-orm/better-sqlite3/migrator';
import { readMigrationFiles } from 'drizzle-orm/migrator';
import { PgTable } from 'drizzle-orm/pg-core';
import { SQLiteTable } from 'drizzle-orm/sqlite-core';
import pg from 'pg';
import { describe, expect, expectTypeOf, it } from 'vitest';
import { closePostgres, openPostgres, type PgDb, pgMigrationsFolder } from '../src/db/pg/client.js';
import * as pgSchema from '../src/db/pg/schema.js';
import * as sqliteSchema from '../src/db/schema.js';
import { onDispose } from './helpers/dispose.js';
import { usePostgres } from './helpers/postgres.js';

// ---- (a) Type-level parity, checked by `tsc` (npm run typecheck); expectTypeOf does nothing at run time.

type TablesOf<M, T> = { [K in keyof M as M[K] extends T ? K : never]: M[K] };
type SqliteTables = TablesOf<typeof sqliteSchema, SQLiteTable>;
/** Postgres-only, documented in src/db/pg/schema.ts: the shared account state and the lease columns. */
type PgTables = Omit<TablesOf<typeof pgSchema, PgTable>, 'accountState'>;
type PgOnlyColumns = (typeof pgSchema.pgOnlyPredictionColumns)[number];
type PgOnlyMessageColumns = (typeof pgSchema.pgOnlyWebhookMessageColumns)[number];
type WithoutLease<K, Row> = K extends 'predictions' ? Omit<Row, PgOnlyColumns> : K extends 'webhookMessages' ? Omit<Row, PgOnlyMessageColumns> : Row;
type Selects<Ts> = { [K in keyof Ts]: Ts[K] extends { $inferSelect: infer R } ? R : never };
type Inserts<Ts> = { [K in keyof Ts]: Ts[K] extends { $inferInsert: infer R } ? R : never };
type PgSelects = { [K in keyof PgTables]: WithoutLease<K, Selects<PgTables>[K]> };
type PgInserts = { [K in keyof PgTables]: WithoutLease<K, Inserts<PgTables>[K]> };

describe('the Postgres schema mirrors the SQLite one', () => {
  it('has the same tables, and each row type is the same (select and insert), lease columns aside', () => {
    expectTypeOf<keyof PgTables>().toEqualTypeOf<keyof SqliteTables>();
    expectTypeOf<PgSelects>().toEqualTypeOf<Selects<SqliteTables>>();
    expectTypeOf<PgInserts>().toEqualTypeOf<Inserts<SqliteTables>>();
    // Spelled out for the table the rest of the code reads most, so a mismatch names it.
    expectTypeOf<Omit<typeof pgSchema.predictions.$inferSelect, PgOnlyColumns>>().toEqualTypeOf<sqliteSchema.PredictionRecord>();
    expectTypeOf<typeof pgSchema.predictions.$inferSelect.lockedUntil>().toEqualTypeOf<Date | null>();
    expectTypeOf<Omit<typeof pgSchema.webhookMessages.$inferSelect, PgOnlyMessageColumns>>().toEqualTypeOf<sqliteSchema.WebhookMessageRow>();
    expectTypeOf<typeof pgSchema.webhookMessages.$inferSelect.lockedUntil>().toEqualTypeOf<Date | null>();
    // And at run time, the same names, so the type test above is not comparing two empty sets.
    const pgTables = Object.entries(pgSchema).flatMap(([k, v]) => (is(v, PgTable) ? [k] : []));
    const sqliteTables = Object.entries(sqliteSchema).flatMap(([k, v]) => (is(v, SQLiteTable) ? [k] : []));
    expect(pgTables.filter((k) => k !== 'accountState').sort()).toEqual(sqliteTables.sort());
    expect(sqliteTables).toContain('predictions');
  });
});

// ---- (b), (c): the migrations, applied to a real Postgres.

// One server for the file, a fresh database per test (test/helpers/postgres.ts).
describe('on Postgres', () => {
  const postgres = usePostgres();

  async function open(): Promise<PgDb> {
    const db = await openPostgres(postgres.url(), { max: 2 });
    onDispose(() => closePostgres(db));
    return db;
  }

  async function query<T extends pg.QueryResultRow>(text: string, values: unknown[] = []): Promise<T[]> {
    const c = new pg.Client({ connectionString: postgres.url() });
    await c.connect();
    try {
      return (await c.query<T>(text, values)).rows;
    } finally {
      await c.end();
    }
  }

  describe('openPostgres', () => {
    it('migrates once when four instances start together, and every one of them opens', async () => {
      const opened = await Promise.allSettled([1, 2, 3, 4].map(() => openPostgres(postgres.url(), { max: 2 })));
      const dbs = opened.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []));
      for (const db of dbs) onDispose(() => closePostgres(db));
      expect(opened.map((r) => (r.status === 'rejected' ? String(r.reason) : 'opened'))).toEqual(['opened', 'opened', 'opened', 'opened']);
      const journal = readMigrationFiles({ migrationsFolder: pgMigrationsFolder });
      expect(journal.length).toBeGreaterThan(0);
      const applied = await query<{ hash: string; created_at: string }>('SELECT hash, created_at FROM drizzle.__drizzle_migrations ORDER BY id');
      expect(applied).toEqual(journal.map((m) => ({ hash: m.hash, created_at: String(m.folderMillis) })));
      for (const db of dbs) expect(await db.$count(pgSchema.predictions)).toBe(0);
      // Each waited for the lock and released it: nobody holds it now.
      expect(await query("SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND database = (SELECT oid FROM pg_database WHERE datname = current_database())")).toEqual([]);
      // A later start finds nothing to apply.
      await open();
      expect(await query('SELECT hash FROM drizzle.__drizzle_migrations')).toHaveLength(journal.length);
    });

    it('reads back what it wrote as SQLite does: defaults, Dates to the millisecond, booleans, JSON arrays, the seq', async () => {
      const db = await open();
      const at = new Date('2026-11-29T01:02:03.456Z');
      const rows = [
        prediction('p1', { createdAt: at, updatedAt: at }),
        prediction('p2', {
          createdAt: at,
          updatedAt: new Date(at.getTime() + 1),
          nextPollAt: new Date(at.getTime() + 999),
          hasImage: true,
          outputs: ['https://example.test/a.mp4', 'https://example.test/é.mp4'],
          hasNsfwContents: [false, true],
        }),
      ];
      const lease = { lockedBy: 'instance-a', lockedUntil: new Date(at.getTime() + 60_001), pollRequestedAt: new Date(at.getTime() + 5) };
      for (const row of rows) await db.insert(pgSchema.predictions).values({ ...row, ...lease });
      const fromPg = await db.select().from(pgSchema.predictions).orderBy(pgSchema.predictions.seq);
      const fromSqlite = withSqlite((lite) => {
        for (const row of rows) lite.insert(sqliteSchema.predictions).values(row).run();
        return lite.select().from(sqliteSchema.predictions).orderBy(sqliteSchema.predictions.seq).all();
      });
      expect(fromSqlite.map((r) => r.seq)).toEqual([1, 2]);
      expect(fromPg).toEqual(fromSqlite.map((r) => ({ ...r, ...lease })));
      expect(fromPg[1]?.updatedAt.getTime()).toBe(at.getTime() + 1);
    });
  });

  describe('the migrated Postgres database', () => {
    it('has the tables, columns, indexes (unique and partial alike) and foreign keys of the migrated SQLite one, plus the lease indexes', async () => {
      await open();
      const lite = sqliteShape();
      const pgShape = await postgresShape(query);
      const pgOnlyIndexes = ['predictions_claimable', 'predictions_locked_by', 'webhook_messages_claimable'];
      const pgOnlyColumns: Record<string, string[]> = {
        predictions: ['locked_by', 'locked_until', 'poll_requested_at'],
        webhook_messages: ['locked_by', 'locked_until'],
      };
      expect(lite.indexes.length).toBeGreaterThan(20);
      expect(lite.indexes.filter((i) => i.partial).length).toBeGreaterThan(8);
      expect(pgShape.tables).toEqual([...lite.tables, 'account_state'].sort());
      expect(pgShape.columns.filter((c) => !pgOnlyColumns[c.table]?.includes(c.column) && c.table !== 'account_state')).toEqual(lite.columns);
      expect(pgShape.columns.filter((c) => pgOnlyColumns[c.table]?.includes(c.column)).map((c) => `${c.table}.${c.column}`)).toEqual([
        'predictions.locked_by',
        'predictions.locked_until',
        'predictions.poll_requested_at',
        'webhook_messages.locked_by',
        'webhook_messages.locked_until',
      ]);
      expect(pgShape.indexes.filter((i) => !pgOnlyIndexes.includes(i.name))).toEqual(lite.indexes);
      expect(pgShape.indexes.filter((i) => pgOnlyIndexes.includes(i.name))).toEqual([
        { table: 'predictions', name: 'predictions_claimable', unique: false, partial: true, columns: 'GREATEST(next_poll_at, locked_until)' },
        { table: 'predictions', name: 'predictions_locked_by', unique: false, partial: true, columns: 'locked_by' },
        { table: 'webhook_messages', name: 'webhook_messages_claimable', unique: false, partial: true, columns: 'GREATEST(next_attempt_at, locked_until)' },
      ]);
      expect(pgShape.foreignKeys).toEqual(lite.foreignKeys);
    });

    it('claims through claimableAt: due rows without a live lease, each by one transaction (SKIP LOCKED), from the claim index', async () => {
      const db = await open();
      const now = new Date('2026-11-29T02:00:00.000Z');
      const ago = (ms: number) => new Date(now.getTime() - ms);
      await db.insert(pgSchema.predictions).values([
        prediction('free', { nextPollAt: ago(5_000) }),
        prediction('expired', { nextPollAt: ago(9_000), lockedBy: 'gone', lockedUntil: ago(1_000) }),
        prediction('leased', { nextPollAt: ago(9_000), lockedBy: 'b', lockedUntil: new Date(now.getTime() + 1) }),
        prediction('final', { nextPollAt: null, lockedBy: 'gone', lockedUntil: ago(9_000) }),
        // Its last lease is over, but its next poll is not due yet: still not claimable.
        prediction('later', { nextPollAt: new Date(now.getTime() + 1), lockedBy: 'gone', lockedUntil: ago(1_000) }),
      ]);
      const p = pgSchema.predictions;
      const claim = (tx: Pick<PgDb, 'select'>) =>
        tx
          .select({ id: p.id })
          .from(p)
          .where(and(isNotNull(p.nextPollAt), lte(pgSchema.claimableAt, now)))
          .orderBy(asc(pgSchema.claimableAt))
          .limit(1)
          .for('update', { skipLocked: true });
      // Two claims at once: the second skips the row the first holds and takes the next claimable one.
      let release: () => void = () => {};
      const held = new Promise<void>((resolve) => {
        release = resolve;
      });
      let claimed: (rows: { id: string }[]) => void = () => {};
      const firstClaimed = new Promise<{ id: string }[]>((resolve) => {
        claimed = resolve;
      });
      const firstTx = db.transaction(async (tx) => {
        claimed(await claim(tx));
        await held;
      });
      const first = await firstClaimed;
      const second = await claim(db);
      release();
      await firstTx;
      // claimableAt: "expired" is claimable since its lease ended, 1 s ago; "free" since 5 s ago.
      expect(first).toEqual([{ id: 'free' }]);
      expect(second).toEqual([{ id: 'expired' }]);
      expect(await db.select({ id: p.id }).from(p).where(and(isNotNull(p.nextPollAt), lte(pgSchema.claimableAt, now))).orderBy(p.id)).toEqual([
        { id: 'expired' },
        { id: 'free' },
      ]);
      // The claim's expression is the index's: with sequential scans off, the planner uses the index.
      const { sql: text, params } = claim(db).toSQL();
      const plan = await db.$client.connect().then(async (c) => {
        try {
          await c.query('SET enable_seqscan = off');
          return (await c.query(`EXPLAIN ${text}`, params)).rows.map((r) => r['QUERY PLAN']).join('\n');
        } finally {
          c.release(true);
        }
      });
      // An index condition, not a full scan of the index filtered row by row.
      expect(plan).toMatch(/Index Scan using predictions_claimable on predictions[^\n]*\n\s*Index Cond: \(GREATEST\(next_poll_at, locked_until\) <= /);
    });

    it('keeps account_state to one row, written by upsert', async () => {
      const db = await open();
      const a = pgSchema.accountState;
      const until = new Date('2026-11-29T02:00:02.000Z');
      await db.insert(a).values({ pausedUntil: until, pauseReason: '429' }).onConflictDoUpdate({ target: a.id, set: { pausedUntil: until } });
      const later = new Date(until.getTime() + 1_000);
      await db
        .insert(a)
        .values({ pausedUntil: later, pauseReason: '429 again' })
        .onConflictDoUpdate({ target: a.id, set: { pausedUntil: sql`greatest(${a.pausedUntil}, excluded.paused_until)`, pauseReason: sql`excluded.pause_reason` } });
      expect(await db.select({ id: a.id, pausedUntil: a.pausedUntil, pauseReason: a.pauseReason }).from(a)).toEqual([{ id: 1, pausedUntil: later, pauseReason: '429 again' }]);
      await expect(db.insert(a).values({ id: 2 })).rejects.toMatchObject({ cause: { constraint: 'account_state_one_row' } });
    });
  });
});

function prediction(id: string, over: Partial<typeof pgSchema.predictions.$inferInsert> = {}): typeof pgSchema.predictions.$inferInsert {
  const at = new Date('2026-11-29T00:00:00.000Z');
  return {
    id,
    model: 'minimax/video-01',
    status: 'CREATED',
    prompt: 'a cat',
    hasImage: false,
    enablePromptExpansion: true,
    createdAt: at,
    updatedAt: at,
    nextPollAt: at,
    ...over,
  };
}

interface Shape {
  tables: string[];
  columns: { table: string; column: string; notNull: boolean }[];
  indexes: { table: string; name: string; unique: boolean; partial: boolean; columns: string }[];
  foreignKeys: string[];
}

const byName = <T extends { table: string; name?: string; column?: string }>(a: T, b: T) =>
  a.table.localeCompare(b.table) || (a.name ?? a.column ?? '').localeCompare(b.name ?? b.column ?? '');

/** A fresh in-memory SQLite database with SQLite's migrations applied. */
function withSqlite<T>(fn: (db: BetterSQLite3Database<typeof sqliteSchema>, c: Database.Database) => T): T {
  const c = new Database(':memory:');
  try {
    const db = drizzleSqlite({ client: c, schema: sqliteSchema });
    migrateSqlite(db, { migrationsFolder: fileURLToPath(new URL('../migrations', import.meta.url)) });
    return fn(db, c);
  } finally {
    c.close();
  }
}

/** SQLite's migrations applied to a fresh in-memory database, read back from its catalog. */
function sqliteShape(): Shape {
  return withSqlite((_, c) => {
    const tables = (c.prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' AND name NOT LIKE '__drizzle%' ORDER BY name").pluck().all() as string[]).sort();
    const columns: Shape['columns'] = [];
    const indexes: Shape['indexes'] = [];
    const foreignKeys: string[] = [];
    for (const table of tables) {
      for (const col of c.pragma(`table_info(${table})`) as { name: string; notnull: number; pk: number }[]) {
        columns.push({ table, column: col.name, notNull: col.notnull === 1 || col.pk > 0 });
      }
      for (const idx of c.pragma(`index_list(${table})`) as { name: string; unique: number; origin: string; partial: number }[]) {
        if (idx.origin === 'pk') continue;
        const cols = (c.pragma(`index_info(${idx.name})`) as { name: string }[]).map((i) => i.name).join(', ');
        indexes.push({ table, name: idx.name, unique: idx.unique === 1, partial: idx.partial === 1, columns: cols });
      }
      for (const fk of c.pragma(`foreign_key_list(${table})`) as { table: string; from: string; to: string; on_delete: string }[]) {
        foreignKeys.push(`${table}: FOREIGN KEY (${fk.from}) REFERENCES ${fk.table}(${fk.to})${fk.on_delete === 'NO ACTION' ? '' : ` ON DELETE ${fk.on_delete}`}`);
      }
    }
    return { tables, columns: columns.sort(byName), indexes: indexes.sort(byName), foreignKeys: foreignKeys.sort() };
  });
}

/** The test database's public schema, read from Postgres' catalog in the same shape. */
async function postgresShape(query: <T extends pg.QueryResultRow>(text: string) => Promise<T[]>): Promise<Shape> {
  const tables = (await query<{ t: string }>("SELECT tablename AS t FROM pg_tables WHERE schemaname = 'public'")).map((r) => r.t).sort();
  const columns = (
    await query<{ table_name: string; column_name: string; is_nullable: string }>(
      "SELECT table_name, column_name, is_nullable FROM information_schema.columns WHERE table_schema = 'public'",
    )
  )
    .map((r) => ({ table: r.table_name, column: r.column_name, notNull: r.is_nullable === 'NO' }))
    .sort(byName);
  const indexes = (
    await query<{ tablename: string; indexname: string; indexdef: string }>(
      // Not primary keys: SQLite's are not among index_list's 'c' and 'u' origins either.
      `SELECT t.relname AS tablename, i.relname AS indexname, pg_get_indexdef(x.indexrelid) AS indexdef
       FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_class t ON t.oid = x.indrelid
       WHERE t.relnamespace = 'public'::regnamespace AND NOT x.indisprimary`,
    )
  )
    .map((r) => {
      const m = /^CREATE (UNIQUE )?INDEX \S+ ON \S+ USING btree \((.*?)\)(?: WHERE (.*))?$/.exec(r.indexdef);
      if (!m) throw new Error(`unexpected index definition: ${r.indexdef}`);
      return { table: r.tablename, name: r.indexname, unique: Boolean(m[1]), partial: Boolean(m[3]), columns: m[2] ?? '' };
    })
    .sort(byName);
  const foreignKeys = (
    await query<{ t: string; def: string }>("SELECT conrelid::regclass::text AS t, pg_get_constraintdef(oid) AS def FROM pg_constraint WHERE contype = 'f'")
  )
    .map((r) => `${r.t}: ${r.def}`)
    .sort();
  return { tables, columns, indexes, foreignKeys };
}

// The journal drizzle-kit wrote is the one the migrator reads: a migration file left out of it would never run.
it('lists every migrations-pg/*.sql file in its journal', () => {
  const journal = JSON.parse(readFileSync(`${pgMigrationsFolder}/meta/_journal.json`, 'utf8')) as { entries: { tag: string }[] };
  const files = readdirSync(pgMigrationsFolder)
    .filter((f) => f.endsWith('.sql'))
    .map((f) => f.slice(0, -'.sql'.length));
  expect(journal.entries.map((e) => e.tag).sort()).toEqual(files.sort());
});

// What the database has is what migrations-pg/ says; what the code queries is src/db/pg/schema.ts. They
// must agree: a change to one without the other (a renamed index, a column, a table) would be a
// migration drizzle-kit generate still has to write. Diffed here from the latest snapshot, offline.
it('src/db/pg/schema.ts is what the migrations build: drizzle-kit generate would write nothing', async () => {
  const { generateDrizzleJson, generateMigration } = await import('drizzle-kit/api');
  const journal = JSON.parse(readFileSync(`${pgMigrationsFolder}/meta/_journal.json`, 'utf8')) as { entries: { idx: number }[] };
  const last = Math.max(...journal.entries.map((e) => e.idx));
  const prev = JSON.parse(readFileSync(`${pgMigrationsFolder}/meta/${String(last).padStart(4, '0')}_snapshot.json`, 'utf8'));
  const current = generateDrizzleJson(pgSchema as Record<string, unknown>, prev.id);
  expect(await generateMigration(prev, current)).toEqual([]);
});
