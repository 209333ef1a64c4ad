import { describe, expect, test } from 'vitest';
import type { PredictionRow } from '../src/db/schema.js';
import { createPredictionPubSub, refreshes } from '../src/pubsub.js';
import { isPushable } from '../src/pushable.js';
import type { Context } from '../src/schema/context.js';
import { watchPrediction } from '../src/schema/watch.js';
import { must } from './helpers/must.js';

/**
 * watchPrediction on its own: a real pubsub, a store that answers the current row (or fails, or
 * holds its answer while rows are published), and the caller's owner. Over graphql-ws the stream
 * pushes (shared-execution.ts); over SSE and HTTP it is iterated: both modes are checked here.
 */

const ID = 'p1';
const row = (version: number, status = 'PROCESSING', owner: string | null = 'alice') => ({ id: ID, owner, status, version }) as PredictionRow;

function rig(current: PredictionRow | undefined | Error, owner: string | null = 'alice') {
  const pubsub = createPredictionPubSub();
  let release: () => void = () => {};
  const held = new Promise<void>((resolve) => (release = resolve));
  let hold = false;
  const ctx = {
    pubsub,
    principal: { owner },
    store: {
      findById: async (id: string) => {
        expect(id).toBe(ID);
        if (hold) await held;
        if (current instanceof Error) throw current;
        return current;
      },
    },
  } as unknown as Context;
  return {
    pubsub,
    publish: (r: PredictionRow) => pubsub.publish('prediction:updated', ID, r),
    watch: () => watchPrediction(ctx, ID),
    /** The store's read waits until `release()`: what is published meanwhile must not be lost. */
    holdRead: () => {
      hold = true;
      return release;
    },
  };
}

describe('what a watch starts from', () => {
  test('an unknown id is undefined and leaves no listener', async () => {
    const r = rig(undefined);
    expect(await r.watch()).toBeUndefined();
    expect(r.pubsub.count()).toBe(0);
  });

  test("another owner's prediction is undefined, as an unknown id, and leaves no listener", async () => {
    const r = rig(row(1, 'CREATED', 'bob'));
    expect(await r.watch()).toBeUndefined();
    expect(r.pubsub.count()).toBe(0);
  });

  test('open mode (no owner) sees the rows without an owner', async () => {
    const r = rig(row(1, 'CREATED', null), null);
    const w = must(await r.watch());
    expect((await w.next()).value?.status).toBe('CREATED');
  });

  test('a failing read rejects with its error and leaves no listener', async () => {
    const r = rig(new Error('disk gone'));
    await expect(r.watch()).rejects.toThrow('disk gone');
    expect(r.pubsub.count()).toBe(0);
  });

  test('listens before reading: a change published during the read comes after the current row, an older one is dropped', async () => {
    const r = rig(row(2, 'PROCESSING'));
    const release = r.holdRead();
    const pending = r.watch();
    await Promise.resolve();
    r.publish(row(3, 'COMPLETED'));
    r.publish(row(1, 'CREATED')); // stale: older than what the read will return
    release();
    const w = must(await pending);
    expect((await w.next()).value?.version).toBe(3);
    // The read's row (version 2) is older than the change already queued: dropped too.
    expect(await w.next()).toEqual({ value: undefined, done: true });
  });
});

describe('iterated (SSE, HTTP)', () => {
  test('the current row, then each newer version; repeats and older versions dropped, a refresh let through; done after a final status', async () => {
    const r = rig(row(1, 'CREATED'));
    const w = must(await r.watch());
    expect(isPushable(w)).toBe(true);
    expect(w[Symbol.asyncIterator]()).toBe(w);
    expect(await w.next()).toEqual({ value: row(1, 'CREATED'), done: false });
    const waiting = w.next();
    r.publish(row(2));
    expect(await waiting).toEqual({ value: row(2), done: false });
    r.publish(row(2)); // the same version again
    r.publish(row(1, 'CREATED')); // older
    const refresh = row(2);
    refreshes.add(refresh);
    r.publish(refresh);
    expect((await w.next()).value).toBe(refresh);
    r.publish(row(3, 'FAILED'));
    expect(await w.next()).toEqual({ value: row(3, 'FAILED'), done: false });
    expect(r.pubsub.count()).toBe(0); // let go once the final row is handed out
    expect(await w.next()).toEqual({ value: undefined, done: true });
    r.publish(row(4, 'COMPLETED'));
    expect(await w.next()).toEqual({ value: undefined, done: true });
  });

  test('rows published before anyone asks wait, in order', async () => {
    const r = rig(row(1, 'CREATED'));
    const w = must(await r.watch());
    r.publish(row(2));
    r.publish(row(3, 'COMPLETED'));
    expect((await w.next()).value?.version).toBe(1);
    expect((await w.next()).value?.version).toBe(2);
    expect((await w.next()).value?.version).toBe(3);
    expect((await w.next()).done).toBe(true);
  });

  test('rows waiting behind a final one are never handed out', async () => {
    const r = rig(row(1, 'CREATED'));
    const w = must(await r.watch());
    r.publish(row(2, 'COMPLETED'));
    r.publish(row(3, 'FAILED')); // cannot follow a final status; if it ever did, it must not reach anyone
    expect((await w.next()).value?.version).toBe(1);
    expect((await w.next()).value?.version).toBe(2);
    expect(await w.next()).toEqual({ value: undefined, done: true });
  });

  test('return() ends a pending next(), drops what waits, and lets the pubsub go', async () => {
    const r = rig(row(1, 'CREATED'));
    const w = must(await r.watch());
    await w.next();
    const pending = w.next();
    expect(await w.return?.()).toEqual({ value: undefined, done: true });
    expect(await pending).toEqual({ value: undefined, done: true });
    expect(r.pubsub.count()).toBe(0);
    const again = must(await rig(row(1, 'CREATED')).watch());
    await again.return?.(); // the current row was waiting: dropped
    expect(await again.next()).toEqual({ value: undefined, done: true });
  });
});

describe('pushing (graphql-ws)', () => {
  test('push() hands over what waits at once, then each row inside its publish; `last` on the final one, nothing after', async () => {
    const r = rig(row(1, 'CREATED'));
    const w = must(await r.watch());
    r.publish(row(2)); // before the push: waits with the current row
    const got: Array<[number, boolean]> = [];
    w.push({ take: (x, last) => got.push([x.version, last]) });
    expect(got).toEqual([
      [1, false],
      [2, false],
    ]);
    r.publish(row(2)); // a repeat
    r.publish(row(3));
    expect(got.at(-1)).toEqual([3, false]); // synchronously, inside the publish
    r.publish(row(4, 'CANCELED'));
    expect(got.at(-1)).toEqual([4, true]);
    expect(r.pubsub.count()).toBe(0);
    r.publish(row(5, 'COMPLETED'));
    expect(got).toHaveLength(4);
  });

  test('a final row already waiting is pushed with `last`, and what came after it is dropped', async () => {
    const r = rig(row(5, 'COMPLETED'));
    const w = must(await r.watch());
    const got: Array<[number, boolean]> = [];
    w.push({ take: (x, last) => got.push([x.version, last]) });
    expect(got).toEqual([[5, true]]);
    expect(r.pubsub.count()).toBe(0);
  });

  test('pushing, rows waiting behind a final one are dropped too', async () => {
    const r = rig(row(1, 'CREATED'));
    const w = must(await r.watch());
    r.publish(row(2, 'COMPLETED'));
    r.publish(row(3, 'FAILED'));
    const got: Array<[number, boolean]> = [];
    w.push({ take: (x, last) => got.push([x.version, last]) });
    expect(got).toEqual([
      [1, false],
      [2, true],
    ]);
  });

  test('a sink that ends the stream while waiting rows are handed over gets nothing more', async () => {
    const r = rig(row(1, 'CREATED'));
    const w = must(await r.watch());
    r.publish(row(2));
    r.publish(row(3));
    const got: number[] = [];
    w.push({
      take: (x) => {
        got.push(x.version);
        void w.return?.();
      },
    });
    expect(got).toEqual([1]);
    expect(r.pubsub.count()).toBe(0);
  });

  test('return() while pushing stops the pushes', async () => {
    const r = rig(row(1, 'CREATED'));
    const w = must(await r.watch());
    const got: number[] = [];
    w.push({ take: (x) => got.push(x.version) });
    await w.return?.();
    r.publish(row(2));
    expect(got).toEqual([1]);
  });
});
