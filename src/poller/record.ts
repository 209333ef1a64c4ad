import { type Committer, eachOnItsOwn } from '../db/group-commit.js';
import type { PredictionPatch, PredictionStore } from '../db/predictions.js';
import type { PredictionRow } from '../db/schema.js';
import type { PredictionPubSub } from '../pubsub.js';

export interface Recorder {
  /**
   * Writes a visible change, then publishes the row as stored; subscribers never see unsaved state.
   * Resolves once the write has committed; rejects with the store's error when it did not.
   */
  record(id: string, patch: PredictionPatch): Promise<PredictionRow | undefined>;
  /**
   * Writes bookkeeping that no client can see (next poll time, attempts, webhook token, submission
   * intent), so nothing is published. Throws when the write fails; false when the row is gone.
   */
  reschedule(
    id: string,
    patch: Pick<PredictionPatch, 'nextPollAt' | 'attempts' | 'pollCount' | 'webhookToken' | 'submitAttempts' | 'submitStartedAt' | 'imageUploadUrl'>,
  ): Promise<boolean>;
}

/**
 * Work that must commit or fail with a visible change (the webhook outbox): `afterWrite` runs inside
 * `transaction`, after the row is written, so a crash can never keep the one without the other.
 */
export interface RecordHook {
  transaction<T>(write: () => T): T;
  afterWrite(row: PredictionRow, patch: PredictionPatch): void;
}

/**
 * The recorder on SQLite: better-sqlite3 writes synchronously, and the outbox shares the write's
 * transaction. `commit` says how the writes are committed (each on its own, or a turn's together:
 * db/group-commit.ts); a change is published only after its write has committed.
 */
export function createRecorder(store: PredictionStore, pubsub: PredictionPubSub, now: () => Date, hook?: RecordHook, commit: Committer = eachOnItsOwn): Recorder {
  const write = (id: string, patch: PredictionPatch) => store.update(id, patch, now());
  const writeVisible = commit((id: string, patch: PredictionPatch) =>
    hook
      ? hook.transaction(() => {
          const written = write(id, patch);
          if (written) hook.afterWrite(written, patch);
          return written;
        })
      : write(id, patch),
  );
  const writeQuiet = commit((id: string, patch: PredictionPatch) => store.update(id, patch) !== undefined);
  return {
    async record(id, patch) {
      const row = await writeVisible(id, patch);
      if (row) pubsub.publish('prediction:updated', id, row);
      return row;
    },
    reschedule: (id, patch) => writeQuiet(id, patch),
  };
}
