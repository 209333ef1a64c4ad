import { sql } from 'drizzle-orm';
import type { SharedPause } from '../store.js';
import type { PgDb } from './client.js';
import { tsParam } from './predictions.js';

/**
 * The account-wide pause on the one `account_state` row. A hold only ever extends it
 * (greatest(paused_until, new)): a shorter Retry-After seen later by another instance cannot end a
 * longer pause; the reason follows the pause that sets the end. An upsert, so no migration seeds the row.
 */
export class PgSharedPause implements SharedPause {
  constructor(private readonly db: PgDb) {}

  async hold(until: Date, reason: string): Promise<void> {
    if (!Number.isFinite(until.getTime())) throw new RangeError('refusing to store an invalid date in pausedUntil');
    await this.db.execute(sql`
      INSERT INTO account_state AS s (id, paused_until, pause_reason, updated_at) VALUES (1, ${tsParam(until)}, ${reason}, now())
      ON CONFLICT (id) DO UPDATE SET
        paused_until = greatest(s.paused_until, excluded.paused_until),
        pause_reason = CASE WHEN s.paused_until IS NULL OR excluded.paused_until > s.paused_until THEN excluded.pause_reason ELSE s.pause_reason END,
        updated_at = now()`);
  }

  async current(now: Date): Promise<{ until: Date; reason: string } | undefined> {
    const { rows } = await this.db.$client.query<{ until: Date; reason: string | null }>(
      'SELECT paused_until AS until, pause_reason AS reason FROM account_state WHERE id = 1 AND paused_until > $1',
      [now],
    );
    const [row] = rows;
    return row ? { until: row.until, reason: row.reason ?? '' } : undefined;
  }
}
