import type { PredictionPatch } from '../predictions.js';
import type { PredictionRow } from '../schema.js';
import type { Recorder } from '../../poller/record.js';
import type { PredictionPubSub } from '../../pubsub.js';
import type { PgDb, PgTx } from './client.js';
import type { Fence, PgPredictions } from './predictions.js';

/**
 * Work that must commit or fail with a visible change (the webhook outbox): runs inside the write's
 * transaction, after the row is written; a throw rolls the write back and nothing is published. A
 * function it returns runs once the transaction has committed (waking the webhook dispatcher: before
 * the commit, its claim could not see the message yet).
 */
// biome-ignore lint/suspicious/noConfusingVoidType: a hook with nothing to do after the commit is an async function that returns nothing (Promise<void>), which `undefined` would refuse
export type PgRecordHook = (tx: PgTx, row: PredictionRow, patch: PredictionPatch) => Promise<void | (() => void)>;

export interface PgRecorderOptions {
  now: () => Date;
  /**
   * Fences every write by this instance's lease (the poller's steps): it changes a row only while
   * `locked_by` is `instanceId` (an instance whose lease was taken over, or released, writes nothing
   * and gets undefined/false), and renews the lease to now + `leaseMs`. Leave out for writes that
   * must win whoever holds the row (cancels: see `lifecycleRecorder` in index.ts).
   *
   * Fenced on `locked_by` alone, not on `locked_until > now`: a lease that ran out but that no one has
   * claimed yet is still safely ours (a claim is the only thing that changes `locked_by`), and the
   * write renews it.
   */
  fence?: { instanceId: string; leaseMs: number };
  hook?: PgRecordHook;
  /**
   * Tells the other instances about a committed change (the bus, app.ts). Called before this
   * instance's own subscribers are written to, not after: that local publish is one synchronous
   * loop over every watching socket (hundreds of milliseconds at 10,000), and the other instances,
   * which each read the row and write to their own sockets, need not wait for it (issue 18, WORKERS).
   */
  announce?: (row: PredictionRow) => void;
}

/**
 * The Recorder on Postgres: the guards of the SQLite one (only live rows change; `record` bumps
 * version and updatedAt and publishes, `reschedule` does neither), each call one transaction, and
 * the row published only after its commit, so no subscriber (on this instance, or on another one
 * through the bus) can see a change that may still roll back.
 *
 * A fenced write that sets `next_poll_at` takes the earlier of its value and `poll_requested_at`
 * (a webhook's makeDue that landed while this instance held the row), so the holder's own schedule
 * cannot push a forced poll back; see Predictions.makeDue in predictions.ts.
 */
export function createPgRecorder(db: PgDb, store: PgPredictions, pubsub: PredictionPubSub, o: PgRecorderOptions): Recorder {
  const fenceAt = (at: Date): Fence | undefined => (o.fence ? { instanceId: o.fence.instanceId, leaseUntil: new Date(at.getTime() + o.fence.leaseMs) } : undefined);
  return {
    async record(id, patch) {
      const at = o.now();
      const options = { visibleAt: at, fence: fenceAt(at) };
      const { hook } = o;
      let afterCommit: (() => void) | undefined;
      // One UPDATE is a transaction by itself; an explicit one only when the hook must share it.
      const row = hook
        ? await db.transaction(async (tx) => {
            const written = await store.update(tx, id, patch, options);
            if (written) afterCommit = (await hook(tx, written, patch)) ?? undefined;
            return written;
          })
        : await store.update(db, id, patch, options);
      if (row) {
        o.announce?.(row);
        pubsub.publish('prediction:updated', id, row);
      }
      afterCommit?.();
      return row;
    },
    async reschedule(id, patch) {
      return (await store.update(db, id, patch, { fence: fenceAt(o.now()) })) !== undefined;
    },
  };
}
