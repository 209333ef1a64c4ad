import type { PredictionPatch, PredictionStore } from '../db/predictions.js';
import type { PredictionRow } from '../db/schema.js';
import type { PredictionPubSub } from '../pubsub.js';

export interface Recorder {
  /** Writes a visible change, then publishes the row as stored; subscribers never see unsaved state. */
  record(id: string, patch: PredictionPatch): PredictionRow | undefined;
  /**
   * Writes bookkeeping that no client can see (next poll time, attempts, webhook token, submission
   * intent), so nothing is published. Throws when the write fails; false when the row is gone.
   */
  reschedule(
    id: string,
    patch: Pick<PredictionPatch, 'nextPollAt' | 'attempts' | 'pollCount' | 'webhookToken' | 'submitAttempts' | 'submitStartedAt'>,
  ): boolean;
}

export function createRecorder(store: PredictionStore, pubsub: PredictionPubSub, now: () => Date): Recorder {
  return {
    record(id, patch) {
      const row = store.update(id, patch, now());
      if (row) pubsub.publish('prediction:updated', id, row);
      return row;
    },
    reschedule(id, patch) {
      return store.update(id, patch) !== undefined;
    },
  };
}
