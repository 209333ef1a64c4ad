import type { PredictionRow } from './db/schema.js';

export type PubSubTopics = {
  'prediction:updated': [id: string, payload: PredictionRow];
};

type Listener<T> = (payload: T) => void;

/**
 * A subscriber that is an object with a `receive` method: the pubsub holds the object itself. A
 * function listener is a closure whose context holds the object it calls into, two more objects to
 * load per subscriber in a broadcast that touches 10,000 of them (and to keep, per subscription).
 * Issue 18, the 10,000-subscriber fan-out: see BENCHMARKS.md, session 13.
 */
export interface Receiver<T> {
  receive(payload: T): void;
}

/**
 * A typed, in-process pubsub keyed by topic and id. Not yoga's `createPubSub`: that one dispatches
 * through an EventTarget and a Repeater per subscriber, which cost ~13 µs per recipient in our
 * fan-out benchmark (bench/fanout.ts); a Set of listeners costs well under one. Every subscriber
 * receives the same payload object, which lets execution results be shared (server/shared-execution.ts).
 */
export class PubSub<Topics extends Record<string, [id: string, payload: unknown]>> {
  private readonly listeners = new Map<string, Set<Receiver<never>>>();
  /** Listeners of every id of a topic (the response cache's invalidation); not counted as subscriptions. */
  private readonly taps = new Map<string, Set<(id: never, payload: never) => void>>();

  publish<K extends keyof Topics & string>(topic: K, id: Topics[K][0], payload: Topics[K][1]): void {
    const taps = this.taps.get(topic);
    if (taps) for (const tap of taps) (tap as (id: Topics[K][0], payload: Topics[K][1]) => void)(id, payload);
    const set = this.listeners.get(`${topic}:${id}`);
    if (!set) return;
    for (const receiver of set) (receiver as Receiver<Topics[K][1]>).receive(payload);
  }

  /**
   * `listener` hears every publish of this id. A function is held as a receiver of its own, so the
   * same function subscribed twice is two subscriptions; the same receiver object is one (a Set
   * holds it), ended by either unsubscribe.
   * @returns the unsubscribe function.
   */
  subscribe<K extends keyof Topics & string>(topic: K, id: Topics[K][0], listener: Listener<Topics[K][1]> | Receiver<Topics[K][1]>): () => void {
    const receiver = (typeof listener === 'function' ? { receive: listener } : listener) as Receiver<never>;
    const key = `${topic}:${id}`;
    let set = this.listeners.get(key);
    if (!set) {
      set = new Set();
      this.listeners.set(key, set);
    }
    set.add(receiver);
    return () => {
      set.delete(receiver);
      // Only our own Set: after it emptied once, a newer subscriber may own a fresh one.
      if (!set.size && this.listeners.get(key) === set) this.listeners.delete(key);
    };
  }

  /** Whether anyone listens to this topic and id. */
  has<K extends keyof Topics & string>(topic: K, id: Topics[K][0]): boolean {
    return this.listeners.has(`${topic}:${id}`);
  }

  /**
   * Hears every publish of a topic, whatever the id, before its subscribers do. Not a subscription:
   * neither `count` nor `subscribedIds` sees it.
   * @returns the function that stops it.
   */
  tap<K extends keyof Topics & string>(topic: K, listener: (id: Topics[K][0], payload: Topics[K][1]) => void): () => void {
    let set = this.taps.get(topic);
    if (!set) {
      set = new Set();
      this.taps.set(topic, set);
    }
    const tap = listener as (id: never, payload: never) => void;
    set.add(tap);
    return () => void set.delete(tap);
  }

  /** The ids of a topic that have at least one listener. */
  *subscribedIds<K extends keyof Topics & string>(topic: K): Generator<Topics[K][0]> {
    const prefix = `${topic}:`;
    for (const key of this.listeners.keys()) if (key.startsWith(prefix)) yield key.slice(prefix.length) as Topics[K][0];
  }

  /** Open subscriptions, for tests and metrics. */
  count(): number {
    let n = 0;
    for (const set of this.listeners.values()) n += set.size;
    return n;
  }
}

export type PredictionPubSub = PubSub<PubSubTopics>;

/**
 * Rows published again without a write: same version, but what is derived from the moment (queue
 * place, estimates) has moved. Subscribers let these through although they drop repeated versions.
 */
export const refreshes = new WeakSet<PredictionRow>();

export function createPredictionPubSub(): PredictionPubSub {
  return new PubSub<PubSubTopics>();
}
