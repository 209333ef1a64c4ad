import {
  createSourceEventStream,
  execute,
  type DocumentNode,
  type ExecutionArgs,
  type ExecutionResult,
} from 'graphql';
import type { Plugin } from 'graphql-yoga';
import { isPushable, type Pushable } from '../pushable.js';
import type { Context } from '../schema/context.js';

/** Where a graphql-ws subscription's `next` frames can be written directly (see `writeFramesTo`). */
export interface FrameTarget {
  /** The operation's id on its socket, as the client chose it. */
  id: string;
  /** Whether a frame written now would reach the client: the socket is open. */
  open(): boolean;
  /**
   * Writes one whole graphql-transport-ws message: `head` (this subscriber's part, its id) followed
   * by `tail`, the UTF-8 bytes every subscriber of the operation shares. Must not throw.
   */
  send(head: string, tail: Uint8Array): void;
}

/** One execution of an event for one distinct operation, and its frame's shared tail once a frame needed it. */
type Shared = { result: ExecutionResult; tail?: Buffer };

/** The shared execution of an event for one operation; a promise (unshared) when it resolved asynchronously. */
type ExecuteShared = (args: ExecutionArgs, key: string, event: unknown) => Shared | Promise<ExecutionResult>;

const frameTargets = new WeakMap<object, FrameTarget>();

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
export function useSharedSubscriptionExecution(): Plugin<Context> {
  const documentIds = new WeakMap<DocumentNode, number>();
  let nextDocumentId = 0;
  const results = new WeakMap<object, Map<string, Shared>>();

  const operationKey = (args: ExecutionArgs) => {
    let docId = documentIds.get(args.document);
    if (docId === undefined) {
      docId = nextDocumentId++;
      documentIds.set(args.document, docId);
    }
    const ctx = args.contextValue as Context;
    // The owner: today a subscriber only ever sees its own predictions, so no two owners share an
    // event, but a result that came to depend on the caller must never be served to another one.
    return `${docId}|${args.operationName ?? ''}|${JSON.stringify(args.variableValues ?? {})}|${ctx.baseUrl()}|${ctx.principal.owner ?? ''}`;
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
 * subscription costs this object and the one callback it hands the source. As closures (and an
 * object literal with a computed `[Symbol.asyncIterator]`) it was eight closures per subscription,
 * and under tsx (esbuild's keepNames, `npm start`) each named one also gets its `name` redefined,
 * which gives it a 256-byte property dictionary. Issue 18, 3,000 sockets of one subscription each,
 * heap used after GC: 15.4 → 13.3 KB per subscription.
 */
class PushedFrames implements AsyncIterableIterator<ExecutionResult> {
  private readonly prefix: string;
  /** What the iterator still owes graphql-ws, in order: results, or a failure to throw from next(). */
  private readonly queue: Array<Promise<IteratorResult<ExecutionResult>>> = [];
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
    this.prefix = `{"id":${JSON.stringify(target.id)},"type":"next","payload":`;
  }

  private pushed(event: unknown, last: boolean): void {
    // A source whose return() took effect late must not write after graphql-ws's complete.
    if (this.ended) return;
    try {
      const shared = this.executeShared(this.args, this.key, event);
      if (this.direct && !(shared instanceof Promise) && !shared.result.errors && this.target.open()) {
        this.target.send(this.prefix, this.frameTail(shared));
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
    this.settle();
  }

  /** Ends the source without waiting: graphql-ws ends an operation at an error without calling return(). */
  private stop(): void {
    this.ended = true;
    void this.source.return?.();
  }

  private settle(): void {
    if (!this.waiting) return;
    const item = this.queue.shift();
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
      this.queue.length = this.queue.indexOf(item) + 1;
      this.stop();
    });
    this.queue.push(item);
  }

  private async end(): Promise<void> {
    this.ended = true;
    this.queue.length = 0;
    await this.source.return?.();
    this.settle();
  }

  next(): Promise<IteratorResult<ExecutionResult>> {
    // graphql-ws reads the iterator only once it has registered the operation, and a client's
    // `complete` that came first has then been seen: no frame goes out for an id already completed.
    if (!this.attached) {
      this.attached = true;
      this.source.push((event, last) => this.pushed(event, last));
    }
    const item = this.queue.shift();
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
