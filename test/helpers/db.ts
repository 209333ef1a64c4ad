import { join } from 'node:path';
import { type Db, openDatabase } from '../../src/db/client.js';
import type { PredictionInsert } from '../../src/db/predictions.js';
import { tempDir } from './app.js';
import { onDispose } from './dispose.js';

/** A real SQLite file, migrated, in a temp dir removed after the test (closed first). */
export function freshDb(name = 'store.sqlite'): { db: Db; file: string; dir: string } {
  const dir = tempDir('cinegraph-db-');
  const file = join(dir, name);
  const db = openDatabase(file);
  onDispose(() => db.$client.close());
  return { db, file, dir };
}

export const T0 = new Date('2026-11-29T00:00:00.000Z');
/** `T0` plus `ms`. */
export const at = (ms: number) => new Date(T0.getTime() + ms);

/** A new text-to-video prediction, queued and due at T0 unless told otherwise. */
export function newRow(id: string, more: Partial<PredictionInsert> = {}): PredictionInsert {
  return {
    id,
    model: 'minimax/video-01',
    status: 'CREATED',
    prompt: `prompt of ${id}`,
    image: null,
    hasImage: false,
    enablePromptExpansion: true,
    createdAt: T0,
    updatedAt: T0,
    nextPollAt: T0,
    ...more,
  };
}
