import { join } from 'node:path';
import { InvalidArgumentError, type Command } from 'commander';
import { KeyStore } from '../auth/keys.js';
import { PgKeyAdmin } from '../auth/pg-keys.js';
import { loadConfig } from '../config.js';
import { openPostgres } from '../db/pg/client.js';
import { openDatabase } from '../db/client.js';

/** A positive integer option value, or commander's usage error. */
function positiveInt(value: string): number {
  const n = Number(value);
  if (!/^\d+$/.test(value) || !Number.isSafeInteger(n) || n < 1) throw new InvalidArgumentError('must be a whole number of at least 1');
  return n;
}

/** What the commands need of either database: KeyStore answers at once, PgKeyAdmin asynchronously. */
type KeyAdmin = { [K in 'create' | 'list' | 'revoke' | 'rotateWebhookSecret']: (...args: Parameters<KeyStore[K]>) => ReturnType<KeyStore[K]> | Promise<ReturnType<KeyStore[K]>> };

/**
 * Runs `use` on the API keys: in Postgres when DATABASE_URL is set (the database every instance
 * shares, migrated first if new; each change is announced to the running instances), otherwise in
 * the database in DATA_DIR, whose WAL and busy timeout let this run beside a live server, which
 * sees the change on its next request.
 */
async function withKeys<T>(use: (keys: KeyAdmin, defaults: { perMinute: number; maxInFlight: number }) => T | Promise<T>): Promise<T> {
  // The key commands never call the upstream: the check that instances on one database share one
  // upstream is the server's, so it must not stop an operator who only set DATABASE_URL.
  const env = process.env;
  const config = loadConfig(env.DATABASE_URL && !env.WAVESPEED_API_KEY && !env.WAVESPEED_BASE_URL ? { ...env, WAVESPEED_API_KEY: 'unused-by-keys-commands' } : env);
  const q = config.access.quotas;
  const defaults = { perMinute: q.createsPerMinute, maxInFlight: q.maxInFlight };
  if (config.scaleOut) {
    const admin = new PgKeyAdmin(await openPostgres(config.scaleOut.databaseUrl, { max: 1, applicationName: 'cinegraph keys' }));
    try {
      return await use(admin, defaults);
    } finally {
      await admin.close();
    }
  }
  const db = openDatabase(join(config.dataDir, 'cinegraph.sqlite'));
  try {
    return await use(new KeyStore(db), defaults);
  } finally {
    db.$client.close();
  }
}

/** `cinegraph keys create|list|revoke`: API keys in the database of DATA_DIR. */
export function registerKeys(program: Command): void {
  const keys = program.command('keys').description('manage API keys (in Postgres with DATABASE_URL, else in the database in DATA_DIR; works while the server runs)');

  keys
    .command('create')
    .description('create a key; it is printed once, alone on the last line, and only its hash is stored')
    .requiredOption('--name <name>', 'what to call the key (letters, digits, . _ -)')
    .option('--per-minute <n>', 'createVideo calls per minute (default: KEY_CREATES_PER_MINUTE)', positiveInt)
    .option('--max-in-flight <n>', 'unfinished predictions at once (default: KEY_MAX_IN_FLIGHT)', positiveInt)
    .action((opts: { name: string; perMinute?: number; maxInFlight?: number }) =>
      withKeys(async (store, defaults) => {
        const { key, row } = await store.create(opts.name, { perMinute: opts.perMinute, maxInFlight: opts.maxInFlight });
        const perMinute = row.perMinute ?? `${defaults.perMinute} (default)`;
        const inFlight = row.maxInFlight ?? `${defaults.maxInFlight} (default)`;
        console.log(`created key "${row.name}": ${perMinute} createVideo per minute, ${inFlight} in flight`);
        // The webhook secret on its own line, before the key: the key stays alone on the last line.
        console.log('outgoing webhooks of this key are signed with (Standard Webhooks; `keys rotate-webhook-secret` replaces it):');
        console.log(row.webhookSecret);
        console.log('send the key as "Authorization: Bearer <key>"; it is shown only now:');
        console.log(key);
      }),
    );

  keys
    .command('list')
    .description('list keys (names and prefixes, never the keys)')
    .action(() =>
      withKeys(async (store, defaults) => {
        const rows = (await store.list()).map((k) => [
          k.name,
          `${k.prefix}…`,
          k.createdAt.toISOString(),
          k.revokedAt ? `revoked ${k.revokedAt.toISOString()}` : 'live',
          String(k.perMinute ?? `${defaults.perMinute}*`),
          String(k.maxInFlight ?? `${defaults.maxInFlight}*`),
        ]);
        if (!rows.length) {
          console.log('no keys: the server runs in open mode, on loopback only');
          return;
        }
        const header = ['NAME', 'PREFIX', 'CREATED', 'STATE', 'PER-MINUTE', 'IN-FLIGHT'];
        const table = [header, ...rows];
        const widths = header.map((_, i) => Math.max(...table.map((r) => r[i]?.length ?? 0)));
        for (const r of table) console.log(r.map((c, i) => c.padEnd(widths[i] ?? 0)).join('  ').trimEnd());
        console.log('* the server default');
      }),
    );

  keys
    .command('rotate-webhook-secret')
    .description("replace a key's webhook signing secret; webhooks sent from now on are signed with the new one, printed alone on the last line")
    .argument('<name>', 'the live key of that name')
    .action((name: string) =>
      withKeys(async (store) => {
        const { secret, row } = await store.rotateWebhookSecret(name);
        console.log(`new webhook signing secret of key "${row.name}" (${row.prefix}…); the old one no longer signs anything:`);
        console.log(secret);
      }),
    );

  keys
    .command('revoke')
    .description("revoke a key: refused from its next request on; its open sockets and streams close within a second")
    .argument('<name>', 'the live key of that name')
    .action((name: string) =>
      withKeys(async (store) => {
        const row = await store.revoke(name);
        console.log(`revoked key "${row.name}" (${row.prefix}…)`);
      }),
    );
}
