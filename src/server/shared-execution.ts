import {
  createSourceEventStream,
  execute,
  type DocumentNode,
  type ExecutionArgs,
  type ExecutionResult,
} from 'graphql';
import type { Plugin } from 'graphql-yoga';
import { isPushable, type Pushable, type PushSink } from '../pushable.js';
import type { Context } from '../schema/context.js';

/** Where a graphql-ws subscription's `next` frames can be written directly (see `writeFramesTo`). */
export interface FrameTarget {
  /** The operation's id on its socket, as the client chose it. */
  id: string;
  /** Whether a frame written now would reach the client: the socket is open. */
  open(): boolean;
  /**
   * Writes one whole graphql-transport-ws message: `head`, this subscriber's part (its id), then
   * `tail`, the part every subscriber of the operation shares; both UTF-8 bytes. Must not throw.
   */
  send(head: Uint8Array, tail: Uint8Array): void;
}

/** One execution of an event for one distinct operation, and its frame's shared tail once a frame needed it. */
type Shared = { result: ExecutionResult; tail?: Buffer };

/** The shared execution of an event for one operation; a promise (unshared) when it resolved asynchronously. */
type ExecuteShared = (args: ExecutionArgs, key: string, event: unknown) => Shared | Promise<ExecutionResult>;

const frameTargets = new WeakMap<object, FrameTarget>();

const utf8 = new TextEncoder();

/** Longer keys are not kept for sharing (see `keys` in useSharedSubscriptionExecution). */
const MAX_KEPT_KEY_LENGTH = 512;

/**
 * Lets the subscription executed with this context write its `next` frames itself (ws.ts sets it for
 * every graphql-ws operation). Only the context object is the key: nothing else travels from the
 * socket to the subscribe function through yoga's envelope.
 */
export function writeFramesTo(contextValue: object, target: FrameTarget): void {
  frameTargets.set(contextValue, target);
}

/**
 * Executes a subscription event once per distinct operation instead of once per subscriber, and
 * over graphql-ws writes its frame from inside the publish that delivered it.
 *
 * graphql-js runs the whole selection for every subscriber of every event; with 10,000 subscribers
 * on one prediction that was ~20 µs each, most of a broadcast. Every subscriber receives the same
 * event object from the pubsub, and yoga's parser cache hands identical query texts the same
 * DocumentNode, so a result can be shared by everyone whose (document, operation, variables,
 * baseUrl, owner) match. Nothing else in the context may influence a subscription's result: a new
 * context-dependent field must add what it depends on to `operationKey`.
 *
 * Delivery: through an async iterator, each value of each subscriber passes the source stream,
 * this plugin's iterator, yoga's result hooks and graphql-ws's loop: about ten promises before its
 * socket write. When the source can push (pushable.ts) and graphql-ws gave a frame target, the
 * result's JSON is made once per distinct operation and each subscriber's frame (its id spliced in)
 * is written synchronously as the event is published: order is the publish order, and graphql-ws
 * still sends `complete` after the last frame, since the iterator handed to it ends only then. A
 * result that cannot go out that way (it has errors, which yoga's masking must see, or it resolved
 * asynchronously) goes through the iterator instead, and so does everything after it, so that no
 * later frame overtakes it. Frames bypass graphql-ws's `onNext` and `jsonMessageReplacer` (neither is
 * used here) and yoga's result hooks (which only act on errors). Issue 18: bench/fanout.ts.
 */
export function useSharedSubscriptionExecution({ maxKeys = 10_000 }: { maxKeys?: number } = {}): Plugin<Context> {
  const documentIds = new WeakMap<DocumentNode, number>();
  let nextDocumentId = 0;
  const results = new WeakMap<object, Map<string, Shared>>();
  /**
   * One string per distinct operation key, handed to each of its subscriptions: in a broadcast every
   * subscriber looks its key up in the event's results, and a key that is the very string stored
   * there compares by reference, where an equal copy of its own (10,000 copies spread over the heap
   * at 10,000 subscribers) is read character by character. Past `maxKeys` the table starts over,
   * which only costs that speed: equal strings are the same key either way. It outlives the
   * subscriptions, so it is bounded in size too: a key longer than MAX_KEPT_KEY_LENGTH (long
   * variables, say) is used as it is, not kept.
   */
  const keys = new Map<string, string>();

  const operationKey = (args: ExecutionArgs) => {
    let docId = documentIds.get(args.document);
    if (docId === undefined) {
      docId = nextDocumentId++;
      documentIds.set(args.document, docId);
    }
    const ctx = args.contextValue as Context;
    // The owner: today a subscriber only ever sees its own predictions, so no two owners share an
    // event, but a result that came to depend on the caller must never be served to another one.
    const key = `${docId}|${args.operationName ?? ''}|${JSON.stringify(args.variableValues ?? {})}|${ctx.baseUrl()}|${ctx.principal.owner ?? ''}`;
    if (key.length > MAX_KEPT_KEY_LENGTH) return key;
    const known = keys.get(key);
    if (known !== undefined) return known;
    if (keys.size >= maxKeys) keys.clear();
    keys.set(key, key);
    return key;
  };

  /** The shared execution of `event` for this operation; a promise (unshared) when it resolved asynchronously. */
  const executeShared: ExecuteShared = (args, key, event) => {
    if (event === null || typeof event !== 'object') {
      const executed = execute({ ...args, rootValue: event });
      return executed instanceof Promise ? executed : { result: executed };
    }
    let byOperation = results.get(event);
    if (!byOperation) {
      byOperation = new Map();
      results.set(event, byOperation);
    }
    let shared = byOperation.get(key);
    if (!shared) {
      const executed = execute({ ...args, rootValue: event });
      // Our resolvers are synchronous; an asynchronous result is returned unshared rather than
      // caching a promise that every subscriber would then await.
      if (executed instanceof Promise) return executed;
      shared = { result: executed };
      byOperation.set(key, shared);
    }
    return shared;
  };

  /**
   * The end of every subscriber's `next` frame for this result, from the payload on (the payload's
   * JSON as graphql-ws would send it, and the frame's closing brace), as UTF-8 bytes: serialised and
   * encoded once per shared result rather than once per subscriber.
   */
  const frameTail = (shared: Shared): Buffer => {
    shared.tail ??= Buffer.from(`${JSON.stringify(shared.result)}}`);
    return shared.tail;
  };

  const iterated = (events: AsyncIterator<unknown>, args: ExecutionArgs, key: string) =>
    ({
    next: () =>
      events.next().then((r) => {
        if (r.done) return r;
        const value = executeShared(args, key, r.value);
        return value instanceof Promise ? value.then((v) => ({ done: false, value: v })) : { done: false, value: value.result };
      }),
    return: async () => (await events.return?.()) ?? { done: true, value: undefined },
    throw: async (err: unknown) => (await events.throw?.(err)) ?? { done: true, value: undefined },
    [Symbol.asyncIterator]() {
      return this;
    },
  }) as AsyncIterableIterator<ExecutionResult>;

  return {
    onSubscribe({ setSubscribeFn }) {
      setSubscribeFn((async (args: ExecutionArgs) => {
        const source = await createSourceEventStream(args);
        if (!(Symbol.asyncIterator in source)) return source;
        const key = operationKey(args);
        const target = frameTargets.get(args.contextValue as object);
        if (target && isPushable(source)) return new PushedFrames(source, args, key, target, executeShared, frameTail);
        return iterated(source[Symbol.asyncIterator](), args, key);
      }) as never);
    },
  };
}

/**
 * A subscription whose frames are written from the source's pushes (from graphql-ws's first next()
 * on); as an iterator it carries only what could not be written directly, and ends after the
 * source's last value.
 *
 * A class rather than closures over shared locals: its methods live once on the prototype, so a
 * subscription costs this object (which the source holds as its sink) and its frame head. As
 * closures (and an object literal with a computed `[Symbol.asyncIterator]`) it was eight closures
 * per subscription, and under tsx (esbuild's keepNames, `npm start`) each named one also gets its
 * `name` redefined, which gives it a 256-byte property dictionary. Issue 18, 3,000 sockets of one subscription each,
 * heap used after GC: 15.4 → 13.3 KB per subscription.
 */
class PushedFrames implements AsyncIterableIterator<ExecutionResult>, PushSink<unknown> {
  /** This subscriber's part of each frame, up to the payload (its id), encoded once. */
  private readonly head: Uint8Array;
  /**
   * What the iterator still owes graphql-ws, in order: results, or a failure to throw from next().
   * Made at the first value owed: a subscription whose frames all go out directly never has one.
   */
  private queue: Array<Promise<IteratorResult<ExecutionResult>>> | undefined = undefined;
  private waiting: ((r: Promise<IteratorResult<ExecutionResult>>) => void) | undefined = undefined;
  private direct = true;
  private ended = false;
  /** Whether the source pushes to us yet: only from graphql-ws's first next() (see next()). */
  private attached = false;

  constructor(
    private readonly source: Pushable<unknown>,
    private readonly args: ExecutionArgs,
    private readonly key: string,
    private readonly target: FrameTarget,
    private readonly executeShared: ExecuteShared,
    private readonly frameTail: (shared: Shared) => Buffer,
  ) {
    // TextEncoder, not Buffer.from: a small Buffer is a slice of Node's shared 8 KB pool, and a head
    // living as long as its subscription would keep its whole slab (and whatever else shares it)
    // alive. encode() returns bytes of their own, exactly their length.
    this.head = utf8.encode(`{"id":${JSON.stringify(target.id)},"type":"next","payload":`);
  }

  /** A value from the source, inside the publish that delivered it. */
  take(event: unknown, last: boolean): void {
    // A source whose return() took effect late must not write after graphql-ws's complete.
    if (this.ended) return;
    try {
      const shared = this.executeShared(this.args, this.key, event);
      if (this.direct && !(shared instanceof Promise) && !shared.result.errors && this.target.open()) {
        this.target.send(this.head, this.frameTail(shared));
      } else {
        this.direct = false;
        this.owe(shared instanceof Promise ? shared : shared.result);
      }
    } catch (err) {
      // Called from inside a publish: whatever fails here stays this subscriber's (graphql-ws
      // sends it as the operation's error, and owe() then lets the source go), never the publisher's.
      this.direct = false;
      this.owe(Promise.reject(err));
    }
    if (last) this.ended = true;
    // A frame written directly leaves nothing for a waiting next() (which waits only with nothing
    // owed): only a value owed, or the end, does. Skipped, a broadcast does not load `queue` either.
    if (!this.direct || last) this.settle();
  }

  /** Ends the source without waiting: graphql-ws ends an operation at an error without calling return(). */
  private stop(): void {
    this.ended = true;
    void this.source.return?.();
  }

  private settle(): void {
    if (!this.waiting) return;
    const item = this.queue?.shift();
    if (item === undefined && !this.ended) return;
    const resolve = this.waiting;
    this.waiting = undefined;
    resolve(item ?? Promise.resolve({ done: true, value: undefined }));
  }

  private owe(result: ExecutionResult | Promise<ExecutionResult>): void {
    const item = Promise.resolve(result).then((value) => ({ done: false, value }) as const);
    // Rejected (handled here, so not an unhandled rejection even before graphql-ws asks for it):
    // graphql-ws sends it as the operation's error and reads no further, so what follows it is
    // dropped (all, if it was already handed out) and nothing may keep the source alive.
    item.catch(() => {
      if (this.queue) this.queue.length = this.queue.indexOf(item) + 1;
      this.stop();
    });
    this.queue ??= [];
    this.queue.push(item);
  }

  private async end(): Promise<void> {
    this.ended = true;
    this.queue = undefined;
    await this.source.return?.();
    this.settle();
  }

  next(): Promise<IteratorResult<ExecutionResult>> {
    // graphql-ws reads the iterator only once it has registered the operation, and a client's
    // `complete` that came first has then been seen: no frame goes out for an id already completed.
    if (!this.attached) {
      this.attached = true;
      this.source.push(this);
    }
    const item = this.queue?.shift();
    if (item !== undefined) return item;
    if (this.ended) return Promise.resolve({ done: true, value: undefined });
    return new Promise((resolve) => {
      this.waiting = resolve;
    });
  }

  async return(): Promise<IteratorResult<ExecutionResult>> {
    await this.end();
    return { done: true, value: undefined };
  }

  async throw(err: unknown): Promise<IteratorResult<ExecutionResult>> {
    await this.end();
    throw err;
  }

  [Symbol.asyncIterator](): this {
    return this;
  }
}
