import type { Db } from '../db/client.js';
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

  async function sweep(): Promise<SweepResult> {
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
      if (rows.length < batchSize) break;
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

  /** Sweeps a minute after start, then once a day; timers never keep the process alive. */
  function schedule(): () => void {
    if (d.retentionMs <= 0) return () => undefined;
    const run = () => void sweep().catch((err) => d.log.error({ err }, 'retention sweep failed; the next one tries again'));
    const first = setTimeout(run, 60_000).unref();
    const daily = setInterval(run, 86_400_000).unref();
    return () => {
      clearTimeout(first);
      clearInterval(daily);
    };
  }

  return { sweep, schedule };
}

export type Retention = ReturnType<typeof createRetention>;
