import Database from 'better-sqlite3';
import pg from 'pg';
import { describe, expect, test } from 'vitest';
import { IdempotencyStore } from '../src/db/idempotency.js';
import { closePostgres, openPostgres } from '../src/db/pg/client.js';
import { createPgStore } from '../src/db/pg/index.js';
import { type PredictionInsert, PredictionStore } from '../src/db/predictions.js';
import { QueueStore } from '../src/db/queue.js';
import type { PredictionRow } from '../src/db/schema.js';
import { type Creator, type Idempotency, type Predictions, type Queue, sqliteCreator, sqliteIdempotency, sqlitePredictions, sqliteQueue } from '../src/db/store.js';
import { groupCommitter } from '../src/db/group-commit.js';
import { createRecorder, type Recorder } from '../src/poller/record.js';
import { createPredictionPubSub, type PredictionPubSub } from '../src/pubsub.js';
import { at, freshDb, newRow, T0 } from './helpers/db.js';
import { onDispose } from './helpers/dispose.js';
import { must } from './helpers/must.js';
import { usePostgres } from './helpers/postgres.js';

/**
 * The store contract: the same cases against SQLite (the adapters of src/db/store.ts over a real
 * file) and against Postgres (src/db/pg, on a real embedded Postgres, a fresh database per test).
 * Same data in, same answers out: inserts and their fair turns, reads, the poller's due rows, the
 * recorder's guards and publishing, the admission queue's order, places, windows and deadlines, and
 * createVideo's idempotency and quota. Postgres' own concurrency (leases, races) is in
 * test/pg-store.test.ts.
 */

interface Harness {
  predictions: Predictions;
  queue: Queue;
  idempotency: Idempotency;
  creator: Creator;
  recorder: Recorder;
  pubsub: PredictionPubSub;
  insert(row: PredictionInsert): Promise<PredictionRow>;
  /** The row as another connection sees it: only what has committed. */
  committed(id: string): Promise<{ version: number; status: string } | undefined>;
  /** What the recorder takes as now. */
  clock: { now: Date };
}

type Backend = 'sqlite' | 'postgres';

describe.each<Backend>(['sqlite', 'postgres'])('the store on %s', (backend) => {
  const postgres = backend === 'postgres' ? usePostgres() : undefined;

  async function harness(): Promise<Harness> {
    const clock = { now: T0 };
    const pubsub = createPredictionPubSub();
    if (!postgres) {
      const { db, file } = freshDb();
      const store = new PredictionStore(db);
      const idempotency = new IdempotencyStore(db);
      const reader = new Database(file, { readonly: true });
      onDispose(() => reader.close());
      const read = reader.prepare('SELECT version, status FROM predictions WHERE id = ?');
      return {
        predictions: sqlitePredictions(store),
        queue: sqliteQueue(new QueueStore(db)),
        idempotency: sqliteIdempotency(idempotency),
        creator: sqliteCreator(store, idempotency, groupCommitter(db.$client)),
        recorder: createRecorder(store, pubsub, () => clock.now),
        pubsub,
        insert: async (row) => store.insert(row),
        committed: async (id) => read.get(id) as { version: number; status: string } | undefined,
        clock,
      };
    }
    const url = postgres.url();
    const db = await openPostgres(url, { max: 3 });
    onDispose(() => closePostgres(db));
    const reader = new pg.Pool({ connectionString: url, max: 1 });
    onDispose(() => reader.end());
    const s = createPgStore(db, { instanceId: 'contract', leaseMs: 60_000, limits: {}, pubsub, now: () => clock.now });
    return {
      ...s,
      // No leases in play here: the unfenced recorder is the one with SQLite's exact semantics.
      recorder: s.lifecycleRecorder,
      pubsub,
      committed: async (id) => (await reader.query<{ version: number; status: string }>('SELECT version, status FROM predictions WHERE id = $1', [id])).rows[0],
      clock,
    };
  }

  /** Puts a row in a state: a visible write, as the poller would make it. */
  const set = async (h: Harness, id: string, patch: Parameters<Recorder['record']>[1]) => must(await h.recorder.record(id, patch));

  describe('inserts and reads', () => {
    test('insert returns the row as stored, with every default and without the image; findById and imageOf read it back', async () => {
      const h = await harness();
      const row = await h.insert(newRow('p1', { image: 'data:image/png;base64,AAAA', hasImage: true, imageFile: 'abc.png', owner: 'key-1', deadlineAt: at(60_000) }));
      expect(row).toStrictEqual({
        seq: 1,
        id: 'p1',
        upstreamId: null,
        model: 'minimax/video-01',
        status: 'CREATED',
        prompt: 'prompt of p1',
        imageFile: 'abc.png',
        imageUploadUrl: null,
        hasImage: true,
        enablePromptExpansion: true,
        outputs: [],
        hasNsfwContents: [],
        urlsGet: null,
        keptOutputs: [],
        webhookToken: null,
        error: null,
        inferenceMs: null,
        version: 1,
        createdAt: T0,
        updatedAt: T0,
        submittedAt: null,
        completedAt: null,
        nextPollAt: T0,
        pollCount: 0,
        attempts: 0,
        submitAttempts: 0,
        submitStartedAt: null,
        owner: 'key-1',
        deadlineAt: at(60_000),
        queueTurn: 1,
      });
      expect(await h.predictions.findById('p1')).toStrictEqual(row);
      expect(await h.predictions.imageOf('p1')).toBe('data:image/png;base64,AAAA');
      const plain = await h.insert(newRow('p2'));
      expect([plain.seq, plain.owner, plain.deadlineAt, plain.imageFile]).toEqual([2, null, null, null]);
      expect(await h.predictions.imageOf('p2')).toBeNull();
      expect(await h.predictions.imageOf('nobody')).toBeNull();
      expect(await h.predictions.findById('nobody')).toBeUndefined();
      const dup = await h.insert(newRow('p1')).then(
        () => undefined,
        (err: unknown) => err,
      );
      // Drizzle on Postgres wraps the driver's error ("Failed query: …") with it as the cause.
      expect(`${dup}; ${(dup as Error | undefined)?.cause}`).toMatch(/UNIQUE constraint failed: predictions.id|duplicate key value violates unique constraint "predictions_id_unique"/);
      expect(await h.predictions.list({ first: 10 })).toHaveLength(2);
    });

    test('owners take turns: one after the owner’s last waiting prediction, never before the head', async () => {
      const h = await harness();
      const turn = async (id: string, owner: string | null) => (await h.insert(newRow(id, { owner }))).queueTurn;
      for (const [id, owner, expected] of [
        ['a1', 'A', 1],
        ['a2', 'A', 2],
        ['a3', 'A', 3],
        ['b1', 'B', 1],
        ['b2', 'B', 2],
        ['o1', null, 1],
        ['o2', null, 2],
      ] as const) {
        expect(await turn(id, owner)).toBe(expected);
      }
      // a1, b1 and o1 leave the queue (submitted, being submitted, final): the head is at turn 2.
      await set(h, 'a1', { upstreamId: 'up-a1' });
      await h.recorder.reschedule('b1', { submitStartedAt: T0 });
      await set(h, 'o1', { status: 'FAILED' });
      expect(await turn('c1', 'C')).toBe(2);
      expect(await turn('a4', 'A')).toBe(4);
      expect(await turn('b3', 'B')).toBe(3);
      expect(await turn('o3', null)).toBe(3);
      // An owner with nothing waiting starts again at the head's turn, whatever its old rows had.
      await set(h, 'c1', { upstreamId: 'up-c1' });
      expect(await turn('c2', 'C')).toBe(2);
    });

    test('findByUpstreamId, list (newest first, pages, status, owner) and countUnfinished', async () => {
      const h = await harness();
      for (const [id, owner] of [
        ['a1', 'A'],
        ['o1', null],
        ['a2', 'A'],
        ['b1', 'B'],
        ['o2', null],
        ['a3', 'A'],
      ] as const) {
        await h.insert(newRow(id, { owner }));
      }
      await set(h, 'a2', { status: 'COMPLETED' });
      await set(h, 'o1', { status: 'PROCESSING', upstreamId: 'task-o1' });
      await set(h, 'a3', { status: 'CANCELED' });
      expect((await h.predictions.findByUpstreamId('task-o1'))?.id).toBe('o1');
      expect(await h.predictions.findByUpstreamId('task-x')).toBeUndefined();
      const ids = (rows: { id: string }[]) => rows.map((r) => r.id);
      expect(ids(await h.predictions.list({ first: 10 }))).toEqual(['a3', 'o2', 'b1', 'a2', 'o1', 'a1']);
      expect(ids(await h.predictions.list({ first: 2 }))).toEqual(['a3', 'o2']);
      const a2 = must(await h.predictions.findById('a2'));
      expect(ids(await h.predictions.list({ first: 10, beforeSeq: a2.seq }))).toEqual(['o1', 'a1']);
      expect(ids(await h.predictions.list({ first: 10, status: 'CREATED' }))).toEqual(['o2', 'b1', 'a1']);
      expect(ids(await h.predictions.list({ first: 10, owner: 'A' }))).toEqual(['a3', 'a2', 'a1']);
      expect(ids(await h.predictions.list({ first: 10, owner: null }))).toEqual(['o2', 'o1']);
      expect(ids(await h.predictions.list({ first: 10, owner: 'A', status: 'COMPLETED', beforeSeq: 100 }))).toEqual(['a2']);
      expect((await h.predictions.list({ first: 10 }))[0]).not.toHaveProperty('image');
      expect(await h.predictions.countUnfinished('A')).toBe(1);
      expect(await h.predictions.countUnfinished('B')).toBe(1);
      expect(await h.predictions.countUnfinished(null)).toBe(2);
      expect(await h.predictions.countUnfinished('nobody')).toBe(0);
    });

    test('due, nextDueAt and makeDue: started rows only, earliest first; makeDue only pulls forward', async () => {
      const h = await harness();
      await h.insert(newRow('queued', { nextPollAt: at(-5000) }));
      await h.insert(newRow('late'));
      await set(h, 'late', { upstreamId: 'u-late', nextPollAt: at(-1000) });
      await h.insert(newRow('early'));
      await h.recorder.reschedule('early', { submitStartedAt: at(-9000), nextPollAt: at(-3000) });
      await h.insert(newRow('now'));
      await set(h, 'now', { upstreamId: 'u-now', nextPollAt: T0 });
      await h.insert(newRow('future'));
      await set(h, 'future', { upstreamId: 'u-future', nextPollAt: at(1) });
      await h.insert(newRow('final'));
      await set(h, 'final', { upstreamId: 'u-final', status: 'COMPLETED', nextPollAt: null });
      expect(await h.predictions.due(T0, 10)).toEqual(['early', 'late', 'now']);
      expect(await h.predictions.due(T0, 2)).toEqual(['early', 'late']);
      expect(await h.predictions.due(at(-1), 10)).toEqual(['early', 'late']);
      expect(await h.predictions.due(at(1), 10)).toEqual(['early', 'late', 'now', 'future']);
      expect(await h.predictions.nextDueAt(new Set())).toEqual(at(-3000));
      expect(await h.predictions.nextDueAt(new Set(['early']))).toEqual(at(-1000));
      expect(await h.predictions.nextDueAt(new Map([['early', 1]]))).toEqual(at(-1000));
      expect(await h.predictions.nextDueAt(new Set(['late', 'now']))).toEqual(at(-3000));
      expect(await h.predictions.nextDueAt(new Set(['early', 'late', 'now', 'future']))).toBeUndefined();
      // makeDue: later is pulled to now, sooner is left, final stays final, unknown is ignored; no version bump.
      const before = must(await h.predictions.findById('future')).version;
      for (const id of ['future', 'early', 'final', 'nobody']) await h.predictions.makeDue(id, T0);
      expect((await h.predictions.findById('future'))?.nextPollAt).toEqual(T0);
      expect((await h.predictions.findById('future'))?.version).toBe(before);
      expect((await h.predictions.findById('early'))?.nextPollAt).toEqual(at(-3000));
      expect((await h.predictions.findById('final'))?.nextPollAt).toBeNull();
      await expect(h.predictions.probeWrite()).resolves.toBeUndefined();
    });
  });

  describe('the recorder', () => {
    test('record bumps version and updatedAt and publishes the committed row; reschedule changes neither and publishes nothing', async () => {
      const h = await harness();
      await h.insert(newRow('p'));
      const heard: { version: number; committed: Promise<unknown> }[] = [];
      h.pubsub.subscribe('prediction:updated', 'p', (row) => heard.push({ version: row.version, committed: h.committed('p') }));
      h.clock.now = at(1000);
      const visible = must(await h.recorder.record('p', { status: 'PROCESSING', upstreamId: 'u', outputs: ['https://cdn.example/o.mp4'], hasNsfwContents: [false] }));
      expect(visible).toMatchObject({ status: 'PROCESSING', upstreamId: 'u', version: 2, updatedAt: at(1000), outputs: ['https://cdn.example/o.mp4'], hasNsfwContents: [false] });
      expect(visible).not.toHaveProperty('image');
      expect(heard.map((e) => e.version)).toEqual([2]);
      // At publish time, another connection already sees the write: it had committed.
      expect(await must(heard[0]).committed).toEqual({ version: 2, status: 'PROCESSING' });
      h.clock.now = at(2000);
      expect(await h.recorder.reschedule('p', { pollCount: 3, nextPollAt: at(5000), attempts: 1 })).toBe(true);
      expect(await h.predictions.findById('p')).toMatchObject({ pollCount: 3, nextPollAt: at(5000), attempts: 1, version: 2, updatedAt: at(1000) });
      expect(heard).toHaveLength(1);
      expect(await h.recorder.record('p', { error: 'x' })).toMatchObject({ version: 3, updatedAt: at(2000) });
      expect(heard.map((e) => e.version)).toEqual([2, 3]);
    });

    test('a final row never changes again, an unknown one is not there, and an invalid date is refused before any write', async () => {
      const h = await harness();
      await h.insert(newRow('p'));
      await h.insert(newRow('q'));
      const heard: string[] = [];
      h.pubsub.tap('prediction:updated', (id) => heard.push(id));
      await set(h, 'p', { status: 'CANCELED', nextPollAt: null });
      expect(await h.recorder.record('p', { status: 'COMPLETED' })).toBeUndefined();
      expect(await h.recorder.reschedule('p', { nextPollAt: at(1) })).toBe(false);
      expect(await h.predictions.findById('p')).toMatchObject({ status: 'CANCELED', nextPollAt: null, version: 2 });
      expect(await h.recorder.record('nobody', { error: 'x' })).toBeUndefined();
      expect(await h.recorder.reschedule('nobody', { attempts: 1 })).toBe(false);
      expect(heard).toEqual(['p']);
      await expect(h.recorder.record('q', { error: 'x', nextPollAt: new Date(Number.NaN) })).rejects.toThrow(new RangeError('refusing to store an invalid date in nextPollAt'));
      await expect(h.recorder.reschedule('q', { submitStartedAt: new Date('nope') })).rejects.toThrow('refusing to store an invalid date in submitStartedAt');
      expect(await h.predictions.findById('q')).toMatchObject({ error: null, nextPollAt: T0, submitStartedAt: null, version: 1 });
      expect(heard).toEqual(['p']);
    });
  });

  describe('the admission queue', () => {
    test('due: queued rows whose time has come, in fair order, leaving out busy ones; nextDue', async () => {
      const h = await harness();
      for (const [id, owner, ms] of [
        ['a1', 'A', 0],
        ['a2', 'A', 0],
        ['a3', 'A', 0],
        ['b1', 'B', 0],
        ['b2', 'B', 1000],
        ['c1', 'C', 0],
        ['sub', 'D', 0],
        ['starting', 'D', 0],
        ['gone', 'D', 0],
      ] as const) {
        await h.insert(newRow(id, { owner, nextPollAt: at(ms) }));
      }
      await set(h, 'sub', { upstreamId: 'task' });
      await h.recorder.reschedule('starting', { submitStartedAt: T0 });
      await set(h, 'gone', { status: 'CANCELED' });
      expect(await h.queue.due(T0, 10)).toEqual(['a1', 'b1', 'c1', 'a2', 'a3']);
      expect(await h.queue.due(at(1000), 10)).toEqual(['a1', 'b1', 'c1', 'a2', 'b2', 'a3']);
      expect(await h.queue.due(at(999), 10)).toEqual(['a1', 'b1', 'c1', 'a2', 'a3']);
      expect(await h.queue.due(T0, 2)).toEqual(['a1', 'b1']);
      expect(await h.queue.due(T0, 2, ['a1', 'c1'])).toEqual(['b1', 'a2']);
      expect(await h.queue.due(T0, 10, new Set(['a1', 'a2', 'a3', 'b1', 'c1']))).toEqual([]);
      expect(await h.queue.due(at(-1), 10)).toEqual([]);
      expect(await h.queue.nextDue()).toEqual(T0);
      expect(await h.queue.nextDue(['a1', 'a2', 'a3', 'b1', 'c1'])).toEqual(at(1000));
      expect(await h.queue.nextDue(['a1', 'a2', 'a3', 'b1', 'c1', 'b2'])).toBeUndefined();
    });

    test('position: the 1-based place in the fair order with several owners; none once out of the queue', async () => {
      const h = await harness();
      for (const [id, owner] of [
        ['a1', 'A'],
        ['a2', 'A'],
        ['a3', 'A'],
        ['b1', 'B'],
        ['o1', null],
        ['b2', 'B'],
      ] as const) {
        await h.insert(newRow(id, { owner, nextPollAt: at(60_000) }));
      }
      const places = (ids: string[]) => Promise.all(ids.map((id) => h.queue.position(id)));
      // Turn 1: a1, b1, o1; turn 2: a2, b2; turn 3: a3. Not being due yet changes no place.
      expect(await places(['a1', 'b1', 'o1', 'a2', 'b2', 'a3'])).toEqual([1, 2, 3, 4, 5, 6]);
      await h.recorder.reschedule('a1', { submitStartedAt: T0 });
      expect(await places(['a1', 'b1', 'o1', 'a2', 'b2', 'a3'])).toEqual([undefined, 1, 2, 3, 4, 5]);
      await set(h, 'b1', { upstreamId: 'task-b1' });
      await set(h, 'o1', { status: 'FAILED' });
      // A newcomer of a new owner comes right after the head (turn 2), after those already at turn 2.
      await h.insert(newRow('c1', { owner: 'C' }));
      expect(await places(['b1', 'o1', 'a2', 'b2', 'c1', 'a3'])).toEqual([undefined, undefined, 1, 2, 3, 4]);
      await set(h, 'a2', { status: 'PROCESSING' });
      expect(await places(['a2', 'b2', 'c1', 'a3', 'nobody'])).toEqual([undefined, 1, 2, 3, undefined]);
    });

    /** Rows in each state that matters upstream: queued, being submitted, submitted, processing, resent, final. */
    async function scene(h: Harness) {
      for (const id of ['queued', 'starting', 'submitted', 'processing', 'resent', 'done', 'failed-start']) await h.insert(newRow(id));
      await h.recorder.reschedule('starting', { submitStartedAt: at(300) });
      await set(h, 'submitted', { upstreamId: 'u1', submittedAt: at(100) });
      await set(h, 'processing', { upstreamId: 'u2', status: 'PROCESSING', submittedAt: at(200) });
      await set(h, 'resent', { upstreamId: null, submittedAt: at(50), submitStartedAt: at(400) });
      await set(h, 'done', { upstreamId: 'u3', status: 'COMPLETED', submittedAt: at(10), completedAt: at(20) });
      await set(h, 'failed-start', { submitStartedAt: at(5), status: 'FAILED' });
    }

    test('what holds a place upstream: in flight, submission times, per-window counts and the oldest in a window', async () => {
      const h = await harness();
      await scene(h);
      expect(await h.queue.upstreamInFlight()).toBe(4);
      expect(await h.queue.upstreamInFlight(['starting', 'queued'])).toBe(3);
      expect(await h.queue.upstreamInFlight(new Set(['starting', 'submitted', 'processing', 'resent']))).toBe(0);
      expect(await h.queue.upstreamSubmittedAt(10)).toEqual([at(50), at(100), at(200), at(300)]);
      expect(await h.queue.upstreamSubmittedAt(2)).toEqual([at(50), at(100)]);
      expect(await h.queue.submittedSince(at(100))).toBe(4);
      expect(await h.queue.submittedSince(at(101))).toBe(3);
      expect(await h.queue.submittedSince(at(101), ['resent'])).toBe(2);
      expect(await h.queue.submittedSince(at(0))).toBe(6);
      expect(await h.queue.submittedSince(at(10))).toBe(5);
      expect(await h.queue.submittedSince(at(401))).toBe(0);
      expect(await h.queue.oldestSubmissionSince(at(0))).toEqual(at(5));
      expect(await h.queue.oldestSubmissionSince(at(100))).toEqual(at(100));
      expect(await h.queue.oldestSubmissionSince(at(301))).toEqual(at(400));
      expect(await h.queue.oldestSubmissionSince(at(401))).toBeUndefined();
    });

    test('deadlines: live rows past theirs, earliest first; the next one', async () => {
      const h = await harness();
      expect(await h.queue.nextDeadline()).toBeUndefined();
      await h.insert(newRow('none'));
      await h.insert(newRow('d300', { deadlineAt: at(300) }));
      await h.insert(newRow('d100', { deadlineAt: at(100) }));
      await h.insert(newRow('d200', { deadlineAt: at(200) }));
      await set(h, 'd200', { upstreamId: 'u', status: 'PROCESSING' });
      await h.insert(newRow('final', { deadlineAt: at(50) }));
      await set(h, 'final', { status: 'CANCELED' });
      expect(await h.queue.pastDeadline(at(1000), 10)).toEqual(['d100', 'd200', 'd300']);
      expect(await h.queue.pastDeadline(at(200), 10)).toEqual(['d100', 'd200']);
      expect(await h.queue.pastDeadline(at(199), 10)).toEqual(['d100']);
      expect(await h.queue.pastDeadline(at(1000), 1)).toEqual(['d100']);
      expect(await h.queue.pastDeadline(at(99), 10)).toEqual([]);
      expect(await h.queue.nextDeadline()).toEqual(at(100));
      await set(h, 'd100', { status: 'FAILED' });
      expect(await h.queue.nextDeadline()).toEqual(at(200));
    });

    test('recentRunMs: the rounded mean run of the last n completed predictions', async () => {
      const h = await harness();
      expect(await h.queue.recentRunMs()).toBeUndefined();
      const complete = async (id: string, submitted: number, completed: number) => {
        await h.insert(newRow(id));
        await set(h, id, { upstreamId: `u-${id}`, submittedAt: at(submitted), status: 'COMPLETED', completedAt: at(completed) });
      };
      await complete('r1', 0, 1000);
      await complete('r2', 500, 2500);
      await complete('r3', 1000, 4001);
      await h.insert(newRow('f'));
      await set(h, 'f', { upstreamId: 'u-f', submittedAt: at(0), status: 'FAILED', completedAt: at(100_000) });
      await h.insert(newRow('nosub'));
      await set(h, 'nosub', { status: 'COMPLETED', completedAt: at(200_000) });
      expect(await h.queue.recentRunMs()).toBe(2000);
      expect(await h.queue.recentRunMs(2)).toBe(2501); // 2500.5, rounded
      expect(await h.queue.recentRunMs(1)).toBe(3001);
    });
  });

  describe('the creator', () => {
    const request = (id: string, owner: string | null, more: Partial<Parameters<Creator['create']>[0]> = {}) => ({ row: { ...newRow(id), owner }, ...more });

    test('an idempotency key replays the same input, refuses another one, is per owner, and lasts 24 h', async () => {
      const h = await harness();
      const withRow: string[] = [];
      const key = (inputHash: string) => ({ key: 'k', inputHash });
      const first = await h.creator.create({ ...request('p1', 'A', { idempotency: key('h1') }), withRow: (row) => void withRow.push(row.id) }, T0);
      expect(first).toMatchObject({ kind: 'created', row: { id: 'p1', owner: 'A', version: 1 } });
      expect(withRow).toEqual(['p1']);
      expect(await h.idempotency.find('A', 'k', at(1000))).toEqual({ predictionId: 'p1', inputHash: 'h1', createdAt: T0 });
      expect(await h.idempotency.find('B', 'k', at(1000))).toBeUndefined();
      const replay = await h.creator.create(request('p2', 'A', { idempotency: key('h1') }), at(1000));
      expect(replay).toEqual({ kind: 'replayed', row: await h.predictions.findById('p1') });
      expect(await h.creator.create(request('p3', 'A', { idempotency: key('h2') }), at(2000))).toEqual({ kind: 'conflict' });
      // Another owner's same key is another key; so is open mode's.
      expect(await h.creator.create(request('p4', 'B', { idempotency: key('h2') }), at(3000))).toMatchObject({ kind: 'created', row: { id: 'p4' } });
      expect(await h.creator.create(request('p5', null, { idempotency: key('h1') }), at(3000))).toMatchObject({ kind: 'created', row: { id: 'p5', owner: null } });
      expect(await h.creator.create(request('p6', null, { idempotency: key('h1') }), at(3001))).toMatchObject({ kind: 'replayed', row: { id: 'p5' } });
      // 24 h later the key is forgotten: a new creation, remembered in its place.
      const day = 24 * 60 * 60 * 1000;
      expect(await h.idempotency.find('A', 'k', at(day - 1))).toEqual({ predictionId: 'p1', inputHash: 'h1', createdAt: T0 });
      expect(await h.idempotency.find('A', 'k', at(day))).toBeUndefined();
      expect(await h.creator.create(request('p7', 'A', { idempotency: key('h2') }), at(day))).toMatchObject({ kind: 'created', row: { id: 'p7' } });
      expect(await h.idempotency.find('A', 'k', at(day))).toEqual({ predictionId: 'p7', inputHash: 'h2', createdAt: at(day) });
      expect((await h.predictions.list({ first: 10 })).map((r) => r.id)).toEqual(['p7', 'p5', 'p4', 'p1']);
    });

    test('the in-flight quota counts the owner’s unfinished predictions only', async () => {
      const h = await harness();
      expect(await h.creator.create(request('a1', 'A', { maxInFlight: 2 }), T0)).toMatchObject({ kind: 'created' });
      expect(await h.creator.create(request('a2', 'A', { maxInFlight: 2 }), T0)).toMatchObject({ kind: 'created' });
      expect(await h.creator.create(request('a3', 'A', { maxInFlight: 2 }), T0)).toEqual({ kind: 'tooManyInFlight', unfinished: 2, max: 2 });
      expect(await h.creator.create(request('b1', 'B', { maxInFlight: 2 }), T0)).toMatchObject({ kind: 'created' });
      await set(h, 'a1', { status: 'COMPLETED', nextPollAt: null });
      expect(await h.creator.create(request('a3', 'A', { maxInFlight: 2 }), T0)).toMatchObject({ kind: 'created', row: { id: 'a3', queueTurn: 3 } });
      expect(await h.creator.create(request('a4', 'A'), T0)).toMatchObject({ kind: 'created' });
      expect(await h.predictions.countUnfinished('A')).toBe(3);
      // A replay is not a new prediction: the quota does not refuse it.
      await h.creator.create(request('a5', 'A', { idempotency: { key: 'k', inputHash: 'h' } }), T0);
      expect(await h.creator.create(request('a6', 'A', { maxInFlight: 1, idempotency: { key: 'k', inputHash: 'h' } }), T0)).toMatchObject({ kind: 'replayed', row: { id: 'a5' } });
    });
  });
});
