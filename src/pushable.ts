/** Marks a stream as Pushable: a `push` method alone could mean the opposite (a queue one pushes into). */
export const PUSHES: unique symbol = Symbol('cinegraph.pushes');

/**
 * A source stream that can also hand its values to a sink as they arrive, instead of through
 * `next()`: the subscription fan-out writes a graphql-ws frame for each value from inside the
 * publish that delivered it (server/shared-execution.ts), without the chain of promises an async
 * iterator costs per subscriber and value. A stream either pushes or is iterated, never both.
 */
export interface Pushable<T> extends AsyncIterableIterator<T> {
  readonly [PUSHES]: true;
  /**
   * From now on every value, first those already waiting, goes to `sink` synchronously as it is
   * delivered; `last` is true on the final one, after which the stream has ended and let go of its
   * source. `return()` still ends it early.
   */
  push(sink: PushSink<T>): void;
}

/**
 * Where a Pushable hands its values: an object and its method rather than a callback, so that a
 * broadcast loads the object itself, not a closure and its context on the way to it (pubsub.ts's
 * Receiver says why that counts).
 */
export interface PushSink<T> {
  take(value: T, last: boolean): void;
}

export function isPushable<T>(stream: AsyncIterable<T>): stream is Pushable<T> {
  return (stream as Partial<Pushable<T>>)[PUSHES] === true;
}
