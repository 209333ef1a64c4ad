import { EventEmitter } from 'node:events';
import { afterEach, describe, expect, test, vi } from 'vitest';
import { PredictionStore } from '../src/db/predictions.js';
import type { PredictionRow } from '../src/db/schema.js';
import { sqlitePredictions } from '../src/db/store.js';
import type { PollerEvents } from '../src/poller/events.js';
import type { Poller } from '../src/poller/poller.js';
import { publishQueueMoves } from '../src/poller/queue-ticks.js';
import { CLOCK_SKEW_MS, findSubmittedTask } from '../src/poller/reconcile.js';
import { createRecorder } from '../src/poller/record.js';
import { createPredictionPubSub, refreshes } from '../src/pubsub.js';
import { MODEL, WaveSpeedClient } from '../src/upstream/wavespeed.js';
import { at, freshDb, newRow, T0 } from './helpers/db.js';
import { onDispose } from './helpers/dispose.js';
import { stubUpstream } from './helpers/stub-upstream.js';

/**
 * The poller's small parts on real pieces: the recorder (write, then publish) on a real SQLite file,
 * reconciliation's search of upstream's task list against a loopback stub that serves pages, and the
 * coalesced republishing of followed queued predictions when the queue moves.
 */

function stores() {
  const { db } = freshDb();
  return { db, store: new PredictionStore(db) };
}

describe('createRecorder', () => {
  test('record: writes the patch stamped with now(), then publishes the row as stored', async () => {
    const { store } = stores();
    const pubsub = createPredictionPubSub();
    store.insert(newRow('a'));
    const seen: PredictionRow[] = [];
    pubsub.subscribe('prediction:updated', 'a', (row) => {
      // Published only after the write: the store already has it.
      expect(store.findById('a')?.status).toBe('PROCESSING');
      seen.push(row);
    });
    const recorder = createRecorder(store, pubsub, () => at(5000));
    const row = await recorder.record('a', { status: 'PROCESSING', upstreamId: 't1' });
    expect(row).toMatchObject({ id: 'a', status: 'PROCESSING', upstreamId: 't1', updatedAt: at(5000) });
    expect(seen).toEqual([row]);
    expect(store.findById('a')).toEqual(row);
  });

  test('record of a row that is gone: undefined, nothing published', async () => {
    const { store } = stores();
    const pubsub = createPredictionPubSub();
    const seen: string[] = [];
    pubsub.tap('prediction:updated', (id) => seen.push(id));
    const recorder = createRecorder(store, pubsub, () => T0);
    expect(await recorder.record('missing', { status: 'FAILED' })).toBeUndefined();
    expect(seen).toEqual([]);
  });

  test('with a hook: afterWrite runs inside the transaction with the written row; a failing one rolls back and publishes nothing', async () => {
    const { db, store } = stores();
    const pubsub = createPredictionPubSub();
    store.insert(newRow('a'));
    const seen: string[] = [];
    pubsub.tap('prediction:updated', (_id, row) => seen.push(row.status));
    const calls: { row: PredictionRow; patch: object; inTx: boolean }[] = [];
    let fail = false;
    const hook = {
      transaction: <T>(write: () => T): T => db.$client.transaction(write)(),
      afterWrite: (row: PredictionRow, patch: object) => {
        calls.push({ row, patch, inTx: db.$client.inTransaction });
        if (fail) throw new Error('outbox refused');
      },
    };
    const recorder = createRecorder(store, pubsub, () => at(1), hook);
    const row = await recorder.record('a', { status: 'PROCESSING' });
    expect(calls).toEqual([{ row, patch: { status: 'PROCESSING' }, inTx: true }]);
    expect(seen).toEqual(['PROCESSING']);
    fail = true;
    await expect(recorder.record('a', { status: 'COMPLETED', completedAt: at(2) })).rejects.toThrow('outbox refused');
    expect(store.findById('a')?.status).toBe('PROCESSING');
    expect(seen).toEqual(['PROCESSING']);
    // A row that is gone: no afterWrite.
    fail = false;
    expect(await recorder.record('gone', { status: 'FAILED' })).toBeUndefined();
    expect(calls).toHaveLength(2);
  });

  test('reschedule: writes bookkeeping without publishing or touching updatedAt; false when the row is gone', async () => {
    const { store } = stores();
    const pubsub = createPredictionPubSub();
    store.insert(newRow('a'));
    const seen: string[] = [];
    pubsub.tap('prediction:updated', (id) => seen.push(id));
    const recorder = createRecorder(store, pubsub, () => at(9999));
    expect(await recorder.reschedule('a', { nextPollAt: at(3000), attempts: 2 })).toBe(true);
    expect(store.findById('a')).toMatchObject({ nextPollAt: at(3000), attempts: 2, updatedAt: T0 });
    expect(await recorder.reschedule('nope', { attempts: 1 })).toBe(false);
    expect(seen).toEqual([]);
  });
});

describe('findSubmittedTask', () => {
  const since = new Date('2026-11-29T10:00:00.000Z');
  const iso = (ms: number) => new Date(since.getTime() + ms).toISOString();
  const item = (id: string, createdMs: number, input: { prompt?: string; image?: string } = { prompt: 'p' }, model = MODEL) => ({
    id,
    model,
    status: 'created',
    outputs: [],
    urls: { get: `http://stub/${id}` },
    has_nsfw_contents: [],
    created_at: iso(createdMs),
    error: '',
    input,
  });

  /** A stub whose list endpoint serves `pages` (1-based) and records each requested page and size. */
  async function lister(pages: object[][]) {
    const asked: { page: number; page_size: number }[] = [];
    const stub = await stubUpstream({
      list: ({ res, body, stub }) => {
        const q = JSON.parse(body) as { page: number; page_size: number };
        asked.push(q);
        stub.ok(res, { page: q.page, items: pages[q.page - 1] ?? [] });
      },
    });
    const client = new WaveSpeedClient({ baseUrl: stub.url, apiKey: 'k', timeoutMs: 5000 });
    return { client, asked };
  }
  const free = async () => false;
  const full = (n: number, createdMs: number, prefix: string) => Array.from({ length: n }, (_, i) => item(`${prefix}${i}`, createdMs, { prompt: 'other' }));

  test('the newest task of the same model and input, created since the window opened, not taken', async () => {
    const { client, asked } = await lister([
      [
        item('wrong-model', 10, { prompt: 'p' }, 'other/model'),
        item('wrong-prompt', 10, { prompt: 'q' }),
        item('with-image', 10, { prompt: 'p', image: 'http://img' }),
        item('taken', 5, { prompt: 'p' }),
        item('mine', 0, { prompt: 'p', image: '' }),
        item('older', -1, { prompt: 'p' }),
      ],
    ]);
    const taken = new Set(['taken']);
    const found = await findSubmittedTask(client, { prompt: 'p', image: null, since, isTaken: async (id) => taken.has(id) });
    expect(found).toMatchObject({ id: 'mine' });
    expect(asked).toEqual([{ page: 1, page_size: 100 }]);
    const withImage = await findSubmittedTask(client, { prompt: 'p', image: 'http://img', since, isTaken: free });
    expect(withImage).toMatchObject({ id: 'with-image' });
  });

  test('the clock-skew allowance: a task created up to 60 s before the intent counts, one older does not', async () => {
    const { client } = await lister([[item('edge', -CLOCK_SKEW_MS)]]);
    expect(await findSubmittedTask(client, { prompt: 'p', image: null, since, isTaken: free })).toMatchObject({ id: 'edge' });
    const older = await lister([[item('old', -CLOCK_SKEW_MS - 1)]]);
    expect(await findSubmittedTask(older.client, { prompt: 'p', image: null, since, isTaken: free })).toBe('absent');
    expect(CLOCK_SKEW_MS).toBe(60_000);
  });

  test('a task without a readable creation time is not ruled out; one without input is', async () => {
    const noTime = { ...item('no-time', 0), created_at: 'yesterday-ish' };
    const noInput = { ...item('no-input', 0), input: undefined };
    const { client } = await lister([[noInput, noTime]]);
    expect(await findSubmittedTask(client, { prompt: 'p', image: null, since, isTaken: free })).toMatchObject({ id: 'no-time' });
  });

  test('absent after a short page, or after a full page that reaches past the window; pages read in order', async () => {
    const { client, asked } = await lister([full(100, 1000, 'a'), full(99, 1000, 'b')]);
    expect(await findSubmittedTask(client, { prompt: 'p', image: null, since, isTaken: free })).toBe('absent');
    expect(asked.map((q) => q.page)).toEqual([1, 2]);
    const past = await lister([[...full(99, 1000, 'a'), item('x', -CLOCK_SKEW_MS - 1, { prompt: 'other' })], full(100, 1000, 'b')]);
    expect(await findSubmittedTask(past.client, { prompt: 'p', image: null, since, isTaken: free })).toBe('absent');
    expect(past.asked.map((q) => q.page)).toEqual([1]);
    // The last item still in the window: the next page is read (and found there).
    const on = await lister([full(100, -CLOCK_SKEW_MS, 'a'), [item('mine', -CLOCK_SKEW_MS)]]);
    expect(await findSubmittedTask(on.client, { prompt: 'p', image: null, since, isTaken: free })).toMatchObject({ id: 'mine' });
    const empty = await lister([]);
    expect(await findSubmittedTask(empty.client, { prompt: 'p', image: null, since, isTaken: free })).toBe('absent');
  });

  test('unknown when ten full pages are all within the window (absence not proven)', async () => {
    const pages = Array.from({ length: 11 }, (_, p) => full(100, 1000, `p${p}-`));
    pages[10] = [item('too-far', 500)];
    const { client, asked } = await lister(pages);
    expect(await findSubmittedTask(client, { prompt: 'p', image: null, since, isTaken: free })).toBe('unknown');
    expect(asked.map((q) => q.page)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    // On the tenth page it is still found.
    pages[9] = [...full(99, 1000, 'z'), item('tenth', 0)];
    const tenth = await lister(pages);
    expect(await findSubmittedTask(tenth.client, { prompt: 'p', image: null, since, isTaken: free })).toMatchObject({ id: 'tenth' });
  });
});

describe('publishQueueMoves', () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  function setup(intervalMs?: number) {
    const { store } = stores();
    const pubsub = createPredictionPubSub();
    const poller = new EventEmitter<PollerEvents>() as unknown as Poller;
    const published: PredictionRow[] = [];
    pubsub.tap('prediction:updated', (_id, row) => published.push(row));
    const follow = (id: string) => onDispose(pubsub.subscribe('prediction:updated', id, () => {}));
    return { store, pubsub, poller, published, follow, deps: { poller, store: sqlitePredictions(store), pubsub, ...(intervalMs ? { intervalMs } : {}) } };
  }

  test('a move republishes, a second later, each followed queued prediction as a refresh, and only those', async () => {
    vi.useFakeTimers();
    const { store, poller, published, follow, deps } = setup();
    store.insert(newRow('queued'));
    store.insert(newRow('unfollowed'));
    store.insert(newRow('submitted'));
    store.update('submitted', { upstreamId: 't' });
    store.insert(newRow('submitting'));
    store.update('submitting', { submitStartedAt: T0 });
    store.insert(newRow('processing'));
    store.update('processing', { status: 'PROCESSING' }, T0);
    // A followed id with no row comes first: it is skipped, not the end of the pass.
    for (const id of ['missing', 'queued', 'submitted', 'submitting', 'processing']) follow(id);
    const stop = publishQueueMoves(deps);
    onDispose(stop);
    poller.emit('queueMoved');
    poller.emit('queueMoved');
    poller.emit('submitted', { id: 'x', upstreamId: 'y', adopted: false });
    await vi.advanceTimersByTimeAsync(999);
    expect(published).toEqual([]);
    await vi.advanceTimersByTimeAsync(1);
    expect(published.map((r) => r.id)).toEqual(['queued']);
    const [refresh] = published;
    expect(refresh).toEqual(store.findById('queued'));
    expect(refresh && refreshes.has(refresh)).toBe(true);
    // Coalesced: the three moves made one pass; nothing more comes.
    await vi.advanceTimersByTimeAsync(5000);
    expect(published).toHaveLength(1);
    // A 'submitted' alone starts a pass too.
    poller.emit('submitted', { id: 'x', upstreamId: 'y', adopted: false });
    await vi.advanceTimersByTimeAsync(1000);
    expect(published).toHaveLength(2);
  });

  test('the interval can be set; stop() cancels a pending pass and stops listening', async () => {
    vi.useFakeTimers();
    const { store, poller, published, follow, deps } = setup(50);
    store.insert(newRow('q'));
    follow('q');
    const stop = publishQueueMoves(deps);
    poller.emit('queueMoved');
    await vi.advanceTimersByTimeAsync(50);
    expect(published).toHaveLength(1);
    poller.emit('queueMoved');
    stop();
    await vi.advanceTimersByTimeAsync(1000);
    expect(published).toHaveLength(1);
    expect(poller.listenerCount('queueMoved')).toBe(0);
    expect(poller.listenerCount('submitted')).toBe(0);
    stop();
  });

  test('a store that cannot be read skips the pass quietly; the next move retries', async () => {
    vi.useFakeTimers();
    const { store, poller, published, follow, deps } = setup(10);
    store.insert(newRow('q'));
    follow('q');
    let broken = true;
    const findById = deps.store.findById;
    deps.store.findById = (id) => (broken ? Promise.reject(new Error('SQLITE_BUSY')) : findById(id));
    onDispose(publishQueueMoves(deps));
    poller.emit('queueMoved');
    await vi.advanceTimersByTimeAsync(10);
    expect(published).toEqual([]);
    broken = false;
    poller.emit('queueMoved');
    await vi.advanceTimersByTimeAsync(10);
    expect(published.map((r) => r.id)).toEqual(['q']);
  });
});
