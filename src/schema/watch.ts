import { terminalStatuses, type PredictionRow } from '../db/schema.js';
import { refreshes } from '../pubsub.js';
import type { Pushable } from '../pushable.js';
import type { Context } from './context.js';

/**
 * The current row, then each newer version until a terminal status. Listens before reading the
 * row, so a change landing between the two is never lost; versions drop duplicates and stale
 * events. Undefined for an unknown id or one the caller does not own.
 *
 * A hand-rolled iterator rather than an async generator over a Repeater: one of these exists per
 * subscriber, and at 10,000 subscribers every microtask and closure per event shows. For the same
 * reason it can push (see pushable.ts): graphql-ws subscribers then get their frames written from
 * inside the publish.
 */
export async function watchPrediction(ctx: Context, id: string): Promise<Pushable<PredictionRow> | undefined> {
  const queue: PredictionRow[] = [];
  let waiting: ((r: IteratorResult<PredictionRow>) => void) | undefined;
  let sink: ((row: PredictionRow, last: boolean) => void) | undefined;
  let seen = 0;
  let done = false;

  function hand(row: PredictionRow): IteratorResult<PredictionRow> {
    // Deliver the terminal row, then end: the next call finds `done`.
    if (terminalStatuses.has(row.status)) finish();
    return { value: row, done: false };
  }
  function finish(): void {
    if (done) return;
    done = true;
    unsubscribe();
  }
  function deliver(row: PredictionRow): void {
    if (done || row.version < seen || (row.version === seen && !refreshes.has(row))) return;
    seen = row.version;
    if (sink) {
      hand(row);
      sink(row, done);
      return;
    }
    if (!waiting) {
      queue.push(row);
      return;
    }
    const resolve = waiting;
    waiting = undefined;
    resolve(hand(row));
  }

  const unsubscribe = ctx.pubsub.subscribe('prediction:updated', id, deliver);
  // Another owner's prediction is treated exactly as an unknown id.
  // Events published while this read is under way wait in `queue`; versions order them after.
  const current = await ctx.store.findById(id).catch((err: unknown) => {
    unsubscribe();
    throw err;
  });
  if (!current || current.owner !== ctx.principal.owner) {
    unsubscribe();
    return undefined;
  }
  deliver(current);

  const stream: Pushable<PredictionRow> = {
    push(to) {
      sink = to;
      // What arrived before: the current row, and any change published while it was being read.
      for (let row = queue.shift(); row; row = queue.shift()) {
        hand(row);
        to(row, done);
        if (done) queue.length = 0;
      }
    },
    next() {
      const queued = queue.shift();
      if (queued) return Promise.resolve(hand(queued));
      if (done) return Promise.resolve({ value: undefined, done: true });
      return new Promise((resolve) => (waiting = resolve));
    },
    return() {
      finish();
      queue.length = 0;
      waiting?.({ value: undefined, done: true });
      waiting = undefined;
      return Promise.resolve({ value: undefined, done: true });
    },
    [Symbol.asyncIterator]() {
      return this;
    },
  };
  return stream;
}
