import { setMaxListeners } from 'node:events';
import { createPubSub } from 'graphql-yoga';
import type { PredictionRow } from './db/schema.js';

export type PubSubTopics = {
  'prediction:updated': [id: string, payload: PredictionRow];
};

export type PredictionPubSub = ReturnType<typeof createPredictionPubSub>;

export function createPredictionPubSub() {
  const eventTarget = new EventTarget();
  // Every subscriber of one prediction listens on the same topic; the default cap of 10
  // would print a leak warning for an ordinary fan-out.
  setMaxListeners(Number.POSITIVE_INFINITY, eventTarget);
  return createPubSub<PubSubTopics>({ eventTarget: eventTarget as never });
}
