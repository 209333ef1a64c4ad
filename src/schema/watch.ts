import { terminalStatuses, type PredictionRow } from '../db/schema.js';
import { type Receiver, refreshes } from '../pubsub.js';
import { PUSHES, type Pushable, type PushSink } from '../pushable.js';
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
  const watch = new PredictionWatch(ctx, id);
  // Another owner's prediction is treated exactly as an unknown id.
  // Events published while this read is under way wait in `queue`; versions order them after.
  const current = await ctx.store.findById(id).catch((err: unknown) => {
    watch.unsubscribe();
    throw err;
  });
  if (!current || current.owner !== ctx.principal.owner) {
    watch.unsubscribe();
    return undefined;
  }
  watch.receive(current);
  return watch;
}

/**
 * One subscriber's stream (see watchPrediction). A class rather than closures over shared locals:
 * its methods live once on the prototype, so a subscription costs this object (which the pubsub
 * holds as its receiver) and the unsubscribe function. As closures (function declarations and an
 * object literal) it was nine closures and their contexts per subscription, and under tsx
 * (esbuild's keepNames, `npm start`) each named one also gets its `name` redefined, which gives it
 * a 256-byte property dictionary, as does the literal's computed `[Symbol.asyncIterator]` method.
 * Issue 18, 3,000 sockets of one subscription each, heap used after GC: 16.9 → 15.4 KB per
 * subscription.
 */
class PredictionWatch implements Pushable<PredictionRow>, Receiver<PredictionRow> {
  readonly [PUSHES] = true as const;
  /**
   * Rows not handed out yet. Let go once the watch pushes (after push() hands them over nothing
   * waits here again) or ends: a broadcast to 10,000 pushing watches then neither loads nor keeps
   * an array apiece.
   */
  private queue: PredictionRow[] | undefined = undefined;
  private waiting: ((r: IteratorResult<PredictionRow>) => void) | undefined = undefined;
  private sink: PushSink<PredictionRow> | undefined = undefined;
  private seen = 0;
  private done = false;
  readonly unsubscribe: () => void;

  constructor(ctx: Context, id: string) {
    this.unsubscribe = ctx.pubsub.subscribe('prediction:updated', id, this);
  }

  /** Notes `row` as handed out: after the terminal row the watch ends (the next call finds `done`). */
  private hand(row: PredictionRow): void {
    if (terminalStatuses.has(row.status)) this.finish();
  }

  /** Ends the watch: no more rows, not even ones already waiting behind the one just handed out. */
  private finish(): void {
    if (this.done) return;
    this.done = true;
    this.queue = undefined;
    this.unsubscribe();
  }

  /** A version of the row: from the pubsub, or the current one read at the start. */
  receive(row: PredictionRow): void {
    if (this.done || row.version < this.seen || (row.version === this.seen && !refreshes.has(row))) return;
    this.seen = row.version;
    if (this.sink) {
      this.hand(row);
      this.sink.take(row, this.done);
      return;
    }
    if (!this.waiting) {
      this.queue ??= [];
      this.queue.push(row);
      return;
    }
    const resolve = this.waiting;
    this.waiting = undefined;
    this.hand(row);
    resolve({ value: row, done: false });
  }

  push(to: PushSink<PredictionRow>): void {
    this.sink = to;
    // What arrived before: the current row, and any change published while it was being read.
    // (`queue` is let go if a row ends the watch, or the sink ends it.)
    for (let row = this.queue?.shift(); row; row = this.queue?.shift()) {
      this.hand(row);
      to.take(row, this.done);
    }
    this.queue = undefined;
  }

  next(): Promise<IteratorResult<PredictionRow>> {
    const queued = this.queue?.shift();
    if (queued) {
      this.hand(queued);
      return Promise.resolve({ value: queued, done: false });
    }
    if (this.done) return Promise.resolve({ value: undefined, done: true });
    return new Promise((resolve) => (this.waiting = resolve));
  }

  return(): Promise<IteratorResult<PredictionRow>> {
    this.finish();
    this.waiting?.({ value: undefined, done: true });
    this.waiting = undefined;
    return Promise.resolve({ value: undefined, done: true });
  }

  [Symbol.asyncIterator](): this {
    return this;
  }
}
