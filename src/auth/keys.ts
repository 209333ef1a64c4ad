import { createHash, randomBytes, randomUUID } from 'node:crypto';
import type Database from 'better-sqlite3';
import { and, asc, eq, inArray, isNull, sql } from 'drizzle-orm';
import type { Db } from '../db/client.js';
import { apiKeys, type ApiKeyRow } from '../db/schema.js';
import { generateSigningSecret } from '../webhooks/secrets.js';

/** What a key is called on the command line and in logs; never the secret. */
export const KEY_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

/** Marks a cinegraph key in logs and secret scanners; the rest is 256 random bits. */
const KEY_PREFIX = 'cg_';

export type ApiKey = Pick<ApiKeyRow, 'id' | 'name' | 'perMinute' | 'maxInFlight'>;

export interface KeyLimits {
  perMinute?: number;
  maxInFlight?: number;
}

export class KeyError extends Error {}

export const hashKey = (key: string) => createHash('sha256').update(key).digest('hex');

/**
 * A new key and the row that stores it (its hash, never the key), for either database. Throws
 * KeyError on a bad name.
 */
export function mintKey(name: string, limits: KeyLimits, now: Date) {
  if (!KEY_NAME.test(name)) throw new KeyError(`invalid key name "${name}": 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit`);
  const key = `${KEY_PREFIX}${randomBytes(32).toString('base64url')}`;
  const values = {
    id: randomUUID(),
    name,
    prefix: key.slice(0, KEY_PREFIX.length + 6),
    keyHash: hashKey(key),
    perMinute: limits.perMinute ?? null,
    maxInFlight: limits.maxInFlight ?? null,
    createdAt: now,
    webhookSecret: generateSigningSecret(),
  };
  return { key, values };
}

/**
 * What the server asks of the API keys, synchronously on every request and socket operation:
 * KeyStore reads SQLite in place; PgKeyCache (auth/pg-keys.ts) answers from a snapshot of
 * Postgres' api_keys, so both stay off the event loop's async path.
 */
export interface Keys {
  /** True when no key exists, live or revoked: the gateway may run open (on loopback only). */
  isEmpty(): boolean;
  /** The live key a client presented, or undefined for an unknown or revoked one. */
  verify(key: string): ApiKey | undefined;
  /** Whether the key of this id is still live. */
  isLive(id: string): boolean;
  /** Which of these key ids are revoked (or gone). */
  revokedAmong(ids: string[]): string[];
  /** The secret that signs the webhooks of this key's predictions. */
  webhookSecretOf(id: string): string | undefined;
  /** Moves whenever keys may have changed, so open connections are re-checked only then. */
  changeVersion(): number;
}

/** A key's row as the server checks it: enough to authenticate, apply limits and see a revocation. */
type CheckedKey = ApiKey & { revoked: boolean };

/** Every key of the table, read at once and trusted while SQLite's change counter stands still. */
interface Snapshot {
  /** `PRAGMA data_version` and this connection's count of writes to api_keys, when it was read. */
  dataVersion: number;
  localWrites: number;
  byHash: Map<string, CheckedKey>;
  byId: Map<string, CheckedKey>;
}

/** The SQL function the TEMP triggers on api_keys call: any write to the table on this connection. */
const KEYS_TOUCHED = 'cinegraph_keys_touched';

/**
 * Writes to api_keys on each connection, counted by its TEMP triggers. One counter per connection,
 * shared by every KeyStore on it: registering the function again would replace the first store's
 * callback, and that store would never see a write again.
 */
const writesByConnection = new WeakMap<Database.Database, { count: number }>();

function localWritesOf(c: Database.Database): { count: number } {
  let writes = writesByConnection.get(c);
  if (!writes) {
    const counter = { count: 0 };
    // Only counts: a callback inside a statement must not touch the connection.
    c.function(KEYS_TOUCHED, { deterministic: false }, () => {
      counter.count++;
      return null;
    });
    c.exec(`
      CREATE TEMP TRIGGER IF NOT EXISTS cinegraph_keys_insert AFTER INSERT ON main.api_keys BEGIN SELECT ${KEYS_TOUCHED}(); END;
      CREATE TEMP TRIGGER IF NOT EXISTS cinegraph_keys_update AFTER UPDATE ON main.api_keys BEGIN SELECT ${KEYS_TOUCHED}(); END;
      CREATE TEMP TRIGGER IF NOT EXISTS cinegraph_keys_delete AFTER DELETE ON main.api_keys BEGIN SELECT ${KEYS_TOUCHED}(); END;
    `);
    writes = counter;
    writesByConnection.set(c, writes);
  }
  return writes;
}

/**
 * The API keys in SQLite. The CLI writes them from its own process while the server runs; a revoked
 * key is refused from the next request on.
 *
 * Requests are checked against an in-memory snapshot of the whole table, not a lookup per request:
 * two SQL reads per request (the open-mode check, then the key) were 12% of a cached
 * `prediction(id)`'s CPU (issue 18). The snapshot is trusted only while `changeVersion()` stands
 * still, and that is read on every check:
 * - another connection's commit (the CLI's) moves `PRAGMA data_version`;
 * - a write to api_keys on this connection, by this store or by anything else (raw SQL in a tool
 *   or a test), fires a TEMP trigger that counts it; a write later rolled back only costs a re-read;
 * - inside an open transaction SQL answers, as it would see that transaction's own writes.
 * Memory is one small object per key ever created.
 */
export class KeyStore implements Keys {
  private readonly byHash;
  private readonly anyKey;
  private readonly liveById;
  private readonly allStmt;
  private readonly versionStmt;
  private snapshot: Snapshot | undefined;
  /** Set while the snapshot's data_version was read in the current synchronous run (see `current`). */
  private checkedThisRun = false;
  /** Once a key has existed the gateway never falls back to open mode (revoking every key closes it). */
  private everHadKeys = false;
  /** Writes to api_keys on this connection, counted by the TEMP triggers (shared by the connection's KeyStores). */
  private readonly writes;
  private readonly secretById;

  constructor(private readonly db: Db) {
    this.byHash = db
      .select({ id: apiKeys.id, name: apiKeys.name, perMinute: apiKeys.perMinute, maxInFlight: apiKeys.maxInFlight, revokedAt: apiKeys.revokedAt })
      .from(apiKeys)
      .where(eq(apiKeys.keyHash, sql.placeholder('hash')))
      .prepare();
    this.anyKey = db.select({ id: apiKeys.id }).from(apiKeys).limit(1).prepare();
    // Read for every outgoing webhook delivery it signs: prepared once rather than compiled each time.
    this.secretById = db.select({ secret: apiKeys.webhookSecret }).from(apiKeys).where(eq(apiKeys.id, sql.placeholder('id'))).prepare();
    this.liveById = db
      .select({ id: apiKeys.id })
      .from(apiKeys)
      .where(and(eq(apiKeys.id, sql.placeholder('id')), isNull(apiKeys.revokedAt)))
      .prepare();
    this.allStmt = db
      .select({ id: apiKeys.id, name: apiKeys.name, perMinute: apiKeys.perMinute, maxInFlight: apiKeys.maxInFlight, revokedAt: apiKeys.revokedAt, keyHash: apiKeys.keyHash })
      .from(apiKeys)
      .prepare();
    const c = db.$client;
    this.versionStmt = c.prepare('PRAGMA data_version').pluck();
    this.writes = localWritesOf(c);
  }

  /** True when the database holds no key at all, live or revoked: the gateway may run open. */
  isEmpty(): boolean {
    if (this.everHadKeys) return false;
    const snapshot = this.current();
    this.everHadKeys = snapshot ? snapshot.byId.size > 0 : this.anyKey.get() !== undefined;
    return !this.everHadKeys;
  }

  /** The live key a client presented, or undefined for an unknown or revoked one. */
  verify(key: string): ApiKey | undefined {
    const hash = hashKey(key);
    const snapshot = this.current();
    const row = snapshot ? snapshot.byHash.get(hash) : this.readByHash(hash);
    if (!row || row.revoked) return undefined;
    return { id: row.id, name: row.name, perMinute: row.perMinute, maxInFlight: row.maxInFlight };
  }

  /** Whether the key of this id is still live (a socket re-checks it before each operation). */
  isLive(id: string): boolean {
    const snapshot = this.current();
    if (!snapshot) return this.liveById.get({ id }) !== undefined;
    const row = snapshot.byId.get(id);
    return row !== undefined && !row.revoked;
  }

  private readByHash(hash: string): CheckedKey | undefined {
    const row = this.byHash.get({ hash });
    return row && checked(row);
  }

  /** The snapshot, re-read if the table may have changed; undefined inside a transaction (ask SQL). */
  private current(): Snapshot | undefined {
    if (this.db.$client.inTransaction) return undefined;
    const localWrites = this.writes.count;
    // Reading data_version steps a statement (~3.7 µs, a WAL read lock). One read serves the rest
    // of the current synchronous run (a request's screen, then its authentication): nothing another
    // process commits meanwhile can be ordered before that run anyway, and a request that arrives
    // after a commit is handled in a later run. Writes on this connection are counted at once.
    if (this.checkedThisRun && this.snapshot?.localWrites === localWrites) return this.snapshot;
    const dataVersion = this.versionStmt.get() as number;
    if (this.snapshot?.dataVersion !== dataVersion || this.snapshot.localWrites !== localWrites) this.snapshot = this.read(dataVersion, localWrites);
    // Only once the snapshot is current: a read that threw leaves the next call to read again.
    if (!this.checkedThisRun) {
      this.checkedThisRun = true;
      queueMicrotask(() => {
        this.checkedThisRun = false;
      });
    }
    return this.snapshot;
  }

  /** Every key, as of the versions read just before. */
  private read(dataVersion: number, localWrites: number): Snapshot {
    const byHash = new Map<string, CheckedKey>();
    const byId = new Map<string, CheckedKey>();
    for (const { keyHash, ...row } of this.allStmt.all()) {
      const key = checked(row);
      byHash.set(keyHash, key);
      byId.set(key.id, key);
    }
    // The versions were read before the rows: a commit landing in between is in the rows already,
    // or moves them past these, and the next check reads again. Nothing is missed either way.
    return { dataVersion, localWrites, byHash, byId };
  }

  /** Creates a key and its webhook signing secret; the returned `key` is the only time the key exists outside the client. */
  create(name: string, limits: KeyLimits = {}, now = new Date()): { key: string; row: ApiKeyRow } {
    const { key, values } = mintKey(name, limits, now);
    try {
      const row = this.db
        .insert(apiKeys)
        .values(values)
        .returning()
        // `.all()`, not `.get()`: only stepping to the end sees the commit fail (a full disk), so a
        // key is never printed that was not stored.
        .all()[0];
      if (!row) throw new Error('inserting an API key returned no row');
      return { key, row };
    } catch (err) {
      if ((err as { code?: string }).code === 'SQLITE_CONSTRAINT_UNIQUE') throw new KeyError(`a live key named "${name}" already exists`);
      throw err;
    }
  }

  list(): ApiKeyRow[] {
    return this.db.select().from(apiKeys).orderBy(asc(apiKeys.createdAt), asc(apiKeys.name)).all();
  }

  /** Revokes the live key of that name; its holders are refused from their next request on. */
  revoke(name: string, now = new Date()): ApiKeyRow {
    const row = this.db
      .update(apiKeys)
      .set({ revokedAt: now })
      .where(and(eq(apiKeys.name, name), isNull(apiKeys.revokedAt)))
      .returning()
      .all()[0];
    if (!row) throw new KeyError(`no live key named "${name}"`);
    return row;
  }

  /** Replaces the webhook signing secret of the live key of that name; webhooks sent from now on use the new one. */
  rotateWebhookSecret(name: string): { secret: string; row: ApiKeyRow } {
    const secret = generateSigningSecret();
    const row = this.db
      .update(apiKeys)
      .set({ webhookSecret: secret })
      .where(and(eq(apiKeys.name, name), isNull(apiKeys.revokedAt)))
      .returning()
      .all()[0];
    if (!row) throw new KeyError(`no live key named "${name}"`);
    return { secret, row };
  }

  /** The secret that signs the webhooks of this key's predictions; undefined for a key made before webhooks existed. */
  webhookSecretOf(id: string): string | undefined {
    return this.secretById.get({ id })?.secret ?? undefined;
  }

  /** Which of these key ids are revoked (or gone): their open connections must close. */
  revokedAmong(ids: string[]): string[] {
    if (!ids.length) return [];
    const live = new Set(
      this.db
        .select({ id: apiKeys.id })
        .from(apiKeys)
        .where(and(inArray(apiKeys.id, ids), isNull(apiKeys.revokedAt)))
        .all()
        .map((r) => r.id),
    );
    return ids.filter((id) => !live.has(id));
  }

  /**
   * Moves whenever keys may have changed: SQLite's count of commits by other connections (the
   * CLI's), plus writes to api_keys on this connection. Cheap enough to read on every request (a
   * prepared PRAGMA), so the snapshot is re-read, and open connections' keys re-checked, only when it moved.
   */
  changeVersion(): number {
    return (this.versionStmt.get() as number) + this.writes.count;
  }
}

function checked(row: { id: string; name: string; perMinute: number | null; maxInFlight: number | null; revokedAt: Date | null }): CheckedKey {
  return { id: row.id, name: row.name, perMinute: row.perMinute, maxInFlight: row.maxInFlight, revoked: row.revokedAt !== null };
}
