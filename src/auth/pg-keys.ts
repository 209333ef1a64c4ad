import { and, asc, eq, isNull, sql } from 'drizzle-orm';
import { PgChangeBus } from '../bus/pg.js';
import { encodeChange } from '../bus/bus.js';
import type { PgDb, PgTx } from '../db/pg/client.js';
import { apiKeys } from '../db/pg/schema.js';
import type { ApiKeyRow } from '../db/schema.js';
import type { Logger } from '../log.js';
import { generateSigningSecret } from '../webhooks/secrets.js';
import { type ApiKey, hashKey, KeyError, type KeyLimits, type Keys, mintKey } from './keys.js';

/** Where a committed change of api_keys is announced; every instance's PgKeyCache listens. */
export const KEYS_CHANNEL = 'cinegraph_keys';

/** Postgres' unique_violation, on the error or (drizzle wraps query errors) on its cause. */
function isUniqueViolation(err: unknown): boolean {
  const e = err as { code?: string; cause?: { code?: string } };
  return e.code === '23505' || e.cause?.code === '23505';
}

/**
 * The API keys in Postgres, for `cinegraph keys` with DATABASE_URL: the same rules, errors and rows
 * as KeyStore (only a key's hash is stored; the key exists once, in create's answer). Each change
 * sends a NOTIFY on KEYS_CHANNEL in its own transaction, which Postgres delivers exactly when (and
 * only if) it commits, so every instance re-reads its snapshot right after.
 */
export class PgKeyAdmin {
  constructor(private readonly db: PgDb) {}

  async create(name: string, limits: KeyLimits = {}, now = new Date()): Promise<{ key: string; row: ApiKeyRow }> {
    const { key, values } = mintKey(name, limits, now);
    try {
      const row = await this.change(values.id, async (tx) => (await tx.insert(apiKeys).values(values).returning())[0]);
      if (!row) throw new Error('inserting an API key returned no row');
      return { key, row };
    } catch (err) {
      // The live-name index (a revoked key's name may be reused); key hashes are 256 random bits.
      if (isUniqueViolation(err)) throw new KeyError(`a live key named "${name}" already exists`);
      throw err;
    }
  }

  list(): Promise<ApiKeyRow[]> {
    return this.db.select().from(apiKeys).orderBy(asc(apiKeys.createdAt), asc(apiKeys.name));
  }

  /** Revokes the live key of that name; every instance refuses it once it has heard (see PgKeyCache). */
  async revoke(name: string, now = new Date()): Promise<ApiKeyRow> {
    return this.changeLive(name, { revokedAt: now });
  }

  async rotateWebhookSecret(name: string): Promise<{ secret: string; row: ApiKeyRow }> {
    const secret = generateSigningSecret();
    return { secret, row: await this.changeLive(name, { webhookSecret: secret }) };
  }

  async close(): Promise<void> {
    await this.db.$client.end();
  }

  private async changeLive(name: string, set: Partial<Pick<ApiKeyRow, 'revokedAt' | 'webhookSecret'>>): Promise<ApiKeyRow> {
    const row = await this.db.transaction(async (tx) => {
      const updated = (
        await tx
          .update(apiKeys)
          .set(set)
          .where(and(eq(apiKeys.name, name), isNull(apiKeys.revokedAt)))
          .returning()
      )[0];
      if (updated) await notify(tx, updated.id);
      return updated;
    });
    if (!row) throw new KeyError(`no live key named "${name}"`);
    return row;
  }

  private change<T>(keyId: string, write: (tx: PgTx) => Promise<T>): Promise<T> {
    return this.db.transaction(async (tx) => {
      const result = await write(tx);
      await notify(tx, keyId);
      return result;
    });
  }
}

/**
 * In the bus's announcement format (bus/bus.ts), so the cache listens through PgChangeBus and its
 * reconnecting session. The payload is only a hint (which key, never a secret): listeners re-read
 * the whole table.
 */
async function notify(tx: PgTx, keyId: string): Promise<void> {
  await tx.execute(sql`SELECT pg_notify(${KEYS_CHANNEL}, ${encodeChange({ id: keyId, version: Date.now() }, 'keys-admin')})`);
}

interface Snapshot {
  byHash: Map<string, ApiKeyRow>;
  byId: Map<string, ApiKeyRow>;
  /** Everything a request could notice, to tell whether a refresh changed anything. */
  fingerprint: string;
}

export interface PgKeyCacheOptions {
  db: PgDb;
  /** For the listening session (LISTEN belongs to one connection, so not a pooled one). */
  connectionString: string;
  log: Logger;
  /** The safety net: the table is re-read this often even without a NOTIFY. @default 1000 */
  refreshMs?: number;
}

/**
 * API keys for a gateway on Postgres (DATABASE_URL): the synchronous `Keys` every request asks,
 * answered from an in-memory snapshot of api_keys (a few rows per key, read whole), so checking a
 * key costs a Map lookup, as reading SQLite in place did.
 *
 * The snapshot is re-read on every NOTIFY on KEYS_CHANNEL (sent by `cinegraph keys` in the
 * changing transaction, delivered at its commit), whenever the listening connection comes back
 * after a loss (NOTIFYs sent meanwhile are not kept), and every `refreshMs` in case one was lost
 * anyway. A failed re-read keeps the last snapshot and is logged; the next one tries again.
 *
 * The window this leaves against issue 12's "a revoked key is refused from its next request on":
 * on SQLite that holds exactly (each request reads the row). Here an instance refuses the key once
 * it has re-read the table after the revoke committed: the NOTIFY's delivery plus one SELECT, a
 * few milliseconds on a healthy network; at most `refreshMs` (plus a SELECT) if the notification is
 * lost. A request that reaches an instance inside that window is still served as the key's. Open
 * sockets and SSE streams close within the revocation watcher's interval after the re-read.
 *
 * Until the first snapshot is read (`ready()`), isEmpty() is false and no key verifies: an
 * instance never takes an unread table for an empty one and starts open by accident.
 */
export class PgKeyCache implements Keys {
  private snapshot: Snapshot = { byHash: new Map(), byId: new Map(), fingerprint: '' };
  private loaded = false;
  /** As KeyStore: once a key has existed the gateway never falls back to open mode. */
  private everHadKeys = false;
  private version = 0;
  private readonly bus: PgChangeBus;
  private readonly first: Promise<void>;
  private timer?: ReturnType<typeof setInterval>;
  private running?: Promise<void>;
  private again = false;
  private stopped = false;

  constructor(private readonly o: PgKeyCacheOptions) {
    // Its log lines say "bus: …" as the predictions' bus does; the field tells the two apart.
    this.bus = new PgChangeBus({ connectionString: o.connectionString, instanceId: `keys-cache:${process.pid}`, log: o.log.child({ channel: KEYS_CHANNEL }), channel: KEYS_CHANNEL });
    this.first = this.start();
    // ready() reports a failed start; until someone asks, it must not be an unhandled rejection.
    this.first.catch(() => {});
  }

  /** Resolves once the first snapshot is read; rejects if Postgres could not be listened on or read. */
  ready(): Promise<void> {
    return this.first;
  }

  /** Re-reads api_keys now; concurrent calls share one read, plus one more if asked for during it. */
  refresh(): Promise<void> {
    if (this.running) {
      this.again = true;
      return this.running;
    }
    const run = async () => {
      try {
        do {
          this.again = false;
          await this.load();
        } while (this.again && !this.stopped);
      } finally {
        this.running = undefined;
      }
    };
    this.running = run();
    return this.running;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.timer);
    await this.bus.close();
    await this.running?.catch(() => {});
  }

  isEmpty(): boolean {
    if (!this.loaded) return false;
    this.everHadKeys ||= this.snapshot.byId.size > 0;
    return !this.everHadKeys;
  }

  verify(key: string): ApiKey | undefined {
    const row = this.snapshot.byHash.get(hashKey(key));
    if (!row || row.revokedAt) return undefined;
    return { id: row.id, name: row.name, perMinute: row.perMinute, maxInFlight: row.maxInFlight };
  }

  isLive(id: string): boolean {
    const row = this.snapshot.byId.get(id);
    return row !== undefined && !row.revokedAt;
  }

  revokedAmong(ids: string[]): string[] {
    return ids.filter((id) => !this.isLive(id));
  }

  webhookSecretOf(id: string): string | undefined {
    return this.snapshot.byId.get(id)?.webhookSecret ?? undefined;
  }

  /** Moves on every refresh that changed something a request could notice. */
  changeVersion(): number {
    return this.version;
  }

  private async start(): Promise<void> {
    // Listening before the first read: a change committed in between is then both read and heard.
    await this.bus.start({
      change: () => this.refreshLogged(),
      reconnected: () => this.refreshLogged(),
    });
    try {
      await this.refresh();
    } catch (err) {
      await this.bus.close();
      throw err;
    }
    if (this.stopped) return;
    this.timer = setInterval(() => this.refreshLogged(), this.o.refreshMs ?? 1000);
    this.timer.unref();
  }

  private refreshLogged(): void {
    if (this.stopped) return;
    this.refresh().catch((err: Error) => this.o.log.warn({ err: err.message }, 'keys: could not re-read api_keys from Postgres; keeping the last snapshot'));
  }

  private async load(): Promise<void> {
    const rows = await this.o.db.select().from(apiKeys).orderBy(asc(apiKeys.id));
    const fingerprint = JSON.stringify(rows.map((r) => [r.id, r.name, r.keyHash, r.perMinute, r.maxInFlight, r.revokedAt?.getTime() ?? null, r.webhookSecret]));
    const wasLoaded = this.loaded;
    this.loaded = true;
    if (wasLoaded && fingerprint === this.snapshot.fingerprint) return;
    this.snapshot = { byHash: new Map(rows.map((r) => [r.keyHash, r])), byId: new Map(rows.map((r) => [r.id, r])), fingerprint };
    this.version++;
  }
}
