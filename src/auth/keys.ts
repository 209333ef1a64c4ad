import { createHash, randomBytes, randomUUID } from 'node:crypto';
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

/**
 * The API keys in SQLite. The CLI writes them from its own process while the server runs, so the
 * server reads a key's row on every request (one indexed lookup) instead of caching it: a revoked
 * key is refused from the next request on.
 */
export class KeyStore implements Keys {
  private readonly byHash;
  private readonly anyKey;
  private readonly liveById;
  /** Once a key has existed the gateway never falls back to open mode (revoking every key closes it). */
  private everHadKeys = false;
  private localWrites = 0;

  constructor(private readonly db: Db) {
    this.byHash = db
      .select({ id: apiKeys.id, name: apiKeys.name, perMinute: apiKeys.perMinute, maxInFlight: apiKeys.maxInFlight, revokedAt: apiKeys.revokedAt })
      .from(apiKeys)
      .where(eq(apiKeys.keyHash, sql.placeholder('hash')))
      .prepare();
    this.anyKey = db.select({ id: apiKeys.id }).from(apiKeys).limit(1).prepare();
    this.liveById = db
      .select({ id: apiKeys.id })
      .from(apiKeys)
      .where(and(eq(apiKeys.id, sql.placeholder('id')), isNull(apiKeys.revokedAt)))
      .prepare();
  }

  /** True when the database holds no key at all, live or revoked: the gateway may run open. */
  isEmpty(): boolean {
    if (this.everHadKeys) return false;
    this.everHadKeys = this.anyKey.get() !== undefined;
    return !this.everHadKeys;
  }

  /** The live key a client presented, or undefined for an unknown or revoked one. */
  verify(key: string): ApiKey | undefined {
    const row = this.byHash.get({ hash: hashKey(key) });
    if (!row || row.revokedAt) return undefined;
    return { id: row.id, name: row.name, perMinute: row.perMinute, maxInFlight: row.maxInFlight };
  }

  /** Whether the key of this id is still live (a socket re-checks it before each operation). */
  isLive(id: string): boolean {
    return this.liveById.get({ id }) !== undefined;
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
      this.localWrites++;
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
    this.localWrites++;
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
    return this.db.select({ secret: apiKeys.webhookSecret }).from(apiKeys).where(eq(apiKeys.id, id)).get()?.secret ?? undefined;
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
   * CLI's), plus this store's own writes. Cheap enough to read several times a second, so the
   * server re-checks its open connections' keys only when it moved.
   */
  changeVersion(): number {
    return (this.db.$client.pragma('data_version', { simple: true }) as number) + this.localWrites;
  }
}
