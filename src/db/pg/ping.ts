import type { PgDb } from './client.js';

/**
 * Whether Postgres answers `SELECT 1` through the pool within `timeoutMs` (for /readyz). Bounded:
 * node-postgres waits for a connection with no limit of its own (connectionTimeoutMillis 0), so an
 * unreachable host that drops packets, or a pool whose connections are all busy, would otherwise hold
 * the probe as long as the kernel keeps trying. Rejects with why; the query left behind ends by
 * itself and takes no slot once it does.
 */
export async function pingPostgres(db: PgDb, timeoutMs = 2000): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`Postgres did not answer within ${timeoutMs / 1000} s`)), timeoutMs);
  });
  try {
    await Promise.race([db.$client.query('SELECT 1'), late]);
  } finally {
    clearTimeout(timer);
  }
}
