import type { Predictions } from '../db/store.js';
import { refreshes, type PredictionPubSub } from '../pubsub.js';
import type { Poller } from './poller.js';

/**
 * When the queue moves (a submission ends, a prediction is canceled or submitted), the queued
 * predictions that someone follows are published again, unchanged but marked as refreshes, so their
 * subscribers see the new place and estimates. Coalesced: at most one pass a second, whatever the
 * churn, and only predictions with subscribers are read.
 * @returns a function that stops it.
 */
export function publishQueueMoves(deps: { poller: Poller; store: Predictions; pubsub: PredictionPubSub; intervalMs?: number }): () => void {
  const { poller, store, pubsub, intervalMs = 1000 } = deps;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const pass = () => {
    timer = undefined;
    republish().catch(() => {
      // A store that cannot be read now (the poller pauses on that and says so): the next move retries.
    });
  };
  const republish = async () => {
    for (const id of [...pubsub.subscribedIds('prediction:updated')]) {
      const row = await store.findById(id);
      if (row?.status !== 'CREATED' || row.upstreamId || row.submitStartedAt) continue;
      const refresh = { ...row };
      refreshes.add(refresh);
      pubsub.publish('prediction:updated', id, refresh);
    }
  };
  const moved = () => {
    timer ??= setTimeout(pass, intervalMs);
  };
  poller.on('queueMoved', moved);
  poller.on('submitted', moved);
  return () => {
    if (timer) clearTimeout(timer);
    poller.off('queueMoved', moved);
    poller.off('submitted', moved);
  };
}
