import type { PredictionRow } from '../db/schema.js';
import type { Logger } from '../log.js';
import type { PredictionPubSub } from '../pubsub.js';
import type { Change, ChangeBus } from './bus.js';

export interface BridgeOptions {
  bus: ChangeBus;
  pubsub: PredictionPubSub;
  /** Reads a prediction as committed in the shared store. */
  load(id: string): Promise<PredictionRow | undefined>;
  log: Logger;
  /** Every watched prediction is read again this often (SUBSCRIPTION_RESYNC_MS); 0: only on reconnect. */
  resyncMs: number;
  /** Every change another instance announced, watched here or not (the response cache drops its answer). */
  onChange?: (change: Change) => void;
  /** The bus came back after a loss: announcements meanwhile are gone (the response cache drops everything). */
  onReconnect?: () => void;
}

export interface Bridge {
  /** Tells the other instances about a change this one committed (after its commit, before its local publish: see PgRecorderOptions.announce). */
  announce(row: PredictionRow): void;
  /** Reads every watched prediction again and publishes what is newer; for reconnects, the timer and tests. */
  resync(): Promise<void>;
  stop(): Promise<void>;
}

/**
 * Joins the bus to this instance's pubsub: a change announced elsewhere is read once from the
 * shared store and published here, but only when someone here watches that prediction, and only
 * when it is newer than what was last published for it. Reads of one prediction never overlap: a
 * change that arrives while its row is being read leads to one more read after, not one per change.
 */
export async function startBridge(o: BridgeOptions): Promise<Bridge> {
  const { bus, pubsub, load, log } = o;
  /** The newest version published here by the bridge, per watched prediction. */
  const published = new Map<string, number>();
  /** The newest version announced and not yet read, per prediction: later, older announcements need no read. */
  const requested = new Map<string, number>();
  /** Predictions being read; true when another change came in meanwhile. */
  const reading = new Map<string, boolean>();

  const refresh = async (id: string): Promise<void> => {
    if (reading.has(id)) {
      reading.set(id, true);
      return;
    }
    try {
      do {
        reading.set(id, false);
        const row = await load(id);
        if (row && row.version > (published.get(id) ?? 0) && pubsub.has('prediction:updated', id)) {
          published.set(id, row.version);
          pubsub.publish('prediction:updated', id, row);
        }
      } while (reading.get(id));
    } catch (err) {
      // The store is unreachable now; the next resync reads it again.
      log.warn({ err: (err as Error).message, predictionId: id }, 'bus: could not read an announced prediction');
    } finally {
      reading.delete(id);
      requested.delete(id);
    }
  };

  const onChange = (change: Change) => {
    o.onChange?.(change);
    // Without a resync timer nothing else forgets unwatched predictions: keep the map bounded here.
    if (published.size > 10_000) for (const id of published.keys()) if (!pubsub.has('prediction:updated', id)) published.delete(id);
    if (!pubsub.has('prediction:updated', change.id)) return;
    if (change.version <= Math.max(published.get(change.id) ?? 0, requested.get(change.id) ?? 0)) return;
    requested.set(change.id, change.version);
    void refresh(change.id);
  };

  const resync = async () => {
    // Forget predictions nobody watches any more, so the map stays the size of what is watched.
    for (const id of published.keys()) if (!pubsub.has('prediction:updated', id)) published.delete(id);
    await Promise.all([...pubsub.subscribedIds('prediction:updated')].map((id) => refresh(id)));
  };

  await bus.start({
    change: onChange,
    reconnected: () => {
      o.onReconnect?.();
      void resync();
    },
  });
  const timer = o.resyncMs > 0 ? setInterval(() => void resync(), o.resyncMs) : undefined;
  timer?.unref();

  return {
    announce: (row) => void bus.announce({ id: row.id, version: row.version }),
    resync,
    async stop() {
      clearInterval(timer);
      await bus.close();
    },
  };
}
