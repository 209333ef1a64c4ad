import type { Db } from '../db/client.js';
import type { PgDb } from '../db/pg/client.js';
import type { Logger } from '../log.js';
import type { ImageStore } from './images.js';
import type { MediaStore } from './media.js';

export interface RetentionDeps {
  db: Db;
  images: ImageStore;
  media?: MediaStore;
  log: Logger;
  now: () => Date;
  /** Final predictions completed longer ago than this are deleted; 0 keeps everything. */
  retentionMs: number;
  /** Rows per transaction; the event loop is yielded between batches. @default 500 */
  batchSize?: number;
}

export interface SweepResult {
  predictions: number;
  images: number;
  outputs: number;
  /** Postgres only: another instance was sweeping at that moment, so this one did nothing. */
  skipped?: true;
}

/**
 * Deletes final predictions older than RETENTION_DAYS, their image files, and the kept outputs no
 * remaining prediction refers to (files are content-addressed: two predictions may share one).
 * Deleted in batches, yielding between them; the files are judged once at the end (an indexed
 * look-up per image, one read of the kept-output lists), so the work grows with the rows, not with
 * their square. Plain SQL through better-sqlite3: a DELETE … RETURNING over a bounded subquery.
 */
export function createRetention(d: RetentionDeps) {
  const c = d.db.$client;
  const batchSize = d.batchSize ?? 500;
  const deleteBatch = c.prepare(
    `DELETE FROM predictions WHERE seq IN (SELECT seq FROM predictions WHERE status IN ('COMPLETED', 'FAILED', 'CANCELED') AND completed_at < ? LIMIT ?)
     RETURNING image_file AS imageFile, kept_outputs AS keptOutputs`,
  );
  const imageUsed = c.prepare('SELECT 1 FROM predictions INDEXED BY predictions_image_file WHERE image_file IS NOT NULL AND image_file = ? LIMIT 1').pluck();
  const keptLists = c.prepare(`SELECT kept_outputs FROM predictions WHERE kept_outputs != '[]'`).pluck();

  async function sweep(signal?: AbortSignal): Promise<SweepResult> {
    const result: SweepResult = { predictions: 0, images: 0, outputs: 0 };
    if (d.retentionMs <= 0) return result;
    const before = d.now().getTime() - d.retentionMs;
    // Files of deleted rows are only candidates: content-addressed, they may be shared with rows that stay.
    const images = new Set<string>();
    const outputs = new Set<string>();
    for (;;) {
      // `.all()` steps to the end, where the commit happens: a failed delete throws, never half-reports.
      const rows = deleteBatch.all(before, batchSize) as { imageFile: string | null; keptOutputs: string }[];
      result.predictions += rows.length;
      for (const { imageFile, keptOutputs } of rows) {
        if (imageFile) images.add(imageFile);
        for (const path of JSON.parse(keptOutputs) as string[]) outputs.add(path);
      }
      // Stopping ends the sweep after this batch; the files of the rows deleted so far are still judged.
      if (rows.length < batchSize || signal?.aborted) break;
      await new Promise((resolve) => setImmediate(resolve));
    }
    // Once per sweep, not per row: an indexed look-up per image, one read of the kept-output lists.
    for (const name of images) {
      if (imageUsed.get(name)) continue;
      d.images.remove(name);
      result.images++;
    }
    if (outputs.size && d.media) {
      for (const list of keptLists.iterate() as Iterable<string>) for (const path of JSON.parse(list) as string[]) outputs.delete(path);
      for (const path of outputs) if (d.media.remove(path.replace(/^\/media\//, ''))) result.outputs++;
    }
    if (result.predictions) d.log.info({ ...result, olderThan: new Date(before).toISOString() }, 'retention: deleted old predictions and their files');
    return result;
  }

  return { sweep, schedule: () => scheduleSweeps(d, sweep) };
}

export interface Retention {
  /** One sweep now; resolves once its rows are deleted and its files judged and removed. An aborted one stops after its current batch. */
  sweep(signal?: AbortSignal): Promise<SweepResult>;
  /** Sweeps a minute after start, then daily; the function it returns stops that, ending a sweep under way after its batch. */
  schedule(): () => Promise<void>;
}

/** Sweeps a minute after start, then once a day; timers never keep the process alive. */
function scheduleSweeps(d: Pick<RetentionDeps, 'log' | 'retentionMs'>, sweep: Retention['sweep']): () => Promise<void> {
  if (d.retentionMs <= 0) return async () => undefined;
  const stopping = new AbortController();
  let running: Promise<unknown> = Promise.resolve();
  const run = () => {
    running = sweep(stopping.signal).catch((err) => d.log.error({ err }, 'retention sweep failed; the next one tries again'));
  };
  const first = setTimeout(run, 60_000).unref();
  const daily = setInterval(run, 86_400_000).unref();
  return async () => {
    clearTimeout(first);
    clearInterval(daily);
    // Stopping closes the database next: a sweep under way ends after its batch rather than fail on it.
    stopping.abort();
    await running;
  };
}

/**
 * The advisory lock an instance holds while it sweeps Postgres (DATABASE_URL): 0x72657465, "rete" in
 * ASCII, in the one-bigint key space beside the migration lock ("cine", src/db/pg/client.ts). Fixed,
 * so every instance agrees on it.
 */
export const RETENTION_LOCK_KEY = 0x72657465;

export interface PgRetentionDeps extends Omit<RetentionDeps, 'db'> {
  pg: PgDb;
}

/**
 * Retention on Postgres (DATABASE_URL): the same rule as createRetention, against the shared
 * database. Every instance schedules it; a sweep first takes `pg_try_advisory_lock(RETENTION_LOCK_KEY)`
 * on a connection of its own and, if another instance holds it, returns at once (`skipped`) instead
 * of deleting the same rows beside it. The lock is the session's: released at the end, or by
 * Postgres if the connection or the process dies mid-sweep. An instance whose daily sweep comes after
 * another's finds little or nothing left to delete: one scan of the table, not the work again.
 *
 * Rows go in batches, each its own DELETE … RETURNING (autocommitted: a batch's row locks last one
 * statement), picking rows with FOR UPDATE SKIP LOCKED so a sweep never waits on a row another
 * transaction holds, nor makes the poller wait on it for long; the event loop is free while each
 * batch runs. Files are judged once at the end against the rows that remain in Postgres, every
 * instance's included.
 *
 * Files: the sweeping instance removes files under its own DATA_DIR. With DATA_DIR/images and
 * DATA_DIR/media on a volume every instance shares, that is every file, whichever instance swept.
 * With per-instance DATA_DIRs each instance has only the files of the predictions it created (images)
 * or completed (kept outputs): the sweeper removes the ones it has (a file not there is simply
 * skipped) and the others' stay on their disks, unreferenced. Content addressing leaves one narrow
 * race, as on SQLite: a prediction created with the same image (or keeping the same output) on any
 * instance between the judging query and the removal finds the file there, so reuses it, and then
 * loses it.
 */
export function createPgRetention(d: PgRetentionDeps): Retention {
  const batchSize = d.batchSize ?? 500;

  async function sweep(signal?: AbortSignal): Promise<SweepResult> {
    const result: SweepResult = { predictions: 0, images: 0, outputs: 0 };
    if (d.retentionMs <= 0) return result;
    const before = new Date(d.now().getTime() - d.retentionMs);
    const client = await d.pg.$client.connect();
    let broken = false;
    try {
      const locked = await client.query<{ held: boolean }>('SELECT pg_try_advisory_lock($1) AS held', [RETENTION_LOCK_KEY]);
      if (!locked.rows[0]?.held) {
        d.log.debug('retention: another instance is sweeping; skipped');
        return { ...result, skipped: true };
      }
      try {
        const images = new Set<string>();
        const outputs = new Set<string>();
        for (;;) {
          const { rows } = await client.query<{ imageFile: string | null; keptOutputs: string[] }>(
            `DELETE FROM predictions WHERE seq IN (
               SELECT seq FROM predictions WHERE status IN ('COMPLETED', 'FAILED', 'CANCELED') AND completed_at < $1::timestamptz
               LIMIT $2 FOR UPDATE SKIP LOCKED)
             RETURNING image_file AS "imageFile", kept_outputs AS "keptOutputs"`,
            [before.toISOString(), batchSize],
          );
          result.predictions += rows.length;
          for (const { imageFile, keptOutputs } of rows) {
            if (imageFile) images.add(imageFile);
            for (const path of keptOutputs) outputs.add(path);
          }
          if (rows.length < batchSize || signal?.aborted) break;
        }
        // Once per sweep: which candidates a remaining row still names (an index probe per image, one scan for the outputs).
        if (images.size) {
          const used = await client.query<{ f: string }>('SELECT DISTINCT image_file AS f FROM predictions WHERE image_file IS NOT NULL AND image_file = ANY($1::text[])', [[...images]]);
          for (const { f } of used.rows) images.delete(f);
          for (const name of images) {
            d.images.remove(name);
            result.images++;
          }
        }
        if (outputs.size && d.media) {
          const used = await client.query<{ path: string }>(
            `SELECT DISTINCT o.path FROM predictions p CROSS JOIN LATERAL jsonb_array_elements_text(p.kept_outputs) AS o(path)
             WHERE p.kept_outputs <> '[]'::jsonb AND o.path = ANY($1::text[])`,
            [[...outputs]],
          );
          for (const { path } of used.rows) outputs.delete(path);
          for (const path of outputs) if (d.media.remove(path.replace(/^\/media\//, ''))) result.outputs++;
        }
      } finally {
        await client.query('SELECT pg_advisory_unlock($1)', [RETENTION_LOCK_KEY]);
      }
    } catch (err) {
      broken = true;
      throw err;
    } finally {
      // A connection that failed is closed, not pooled: ending its session releases the lock whatever happened.
      client.release(broken);
    }
    if (result.predictions) d.log.info({ ...result, olderThan: before.toISOString() }, 'retention: deleted old predictions and their files');
    return result;
  }

  return { sweep, schedule: () => scheduleSweeps(d, sweep) };
}
