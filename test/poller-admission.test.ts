import { describe, expect, test } from 'vitest';
import { PredictionStore } from '../src/db/predictions.js';
import { QueueStore } from '../src/db/queue.js';
import { sqliteQueue } from '../src/db/store.js';
import { Admission, type AdmissionLimits } from '../src/poller/admission.js';
import { Pauses } from '../src/poller/pauses.js';
import { at, freshDb, newRow, T0 } from './helpers/db.js';

/**
 * The admission rules (poller/admission.ts) against a real SQLite file through the async Queue
 * adapter: the allowance under each limit, when the next queued prediction may start, and the
 * queue-place estimates; and the poller-wide pauses' backoff (poller/pauses.ts).
 */

function setup(limits: AdmissionLimits) {
  const { db } = freshDb();
  const store = new PredictionStore(db);
  const admission = new Admission(sqliteQueue(new QueueStore(db)), limits);
  return { store, admission };
}

/** A row with a task upstream, submitted at `submittedAt`. */
function inFlight(store: PredictionStore, id: string, submittedAt: Date) {
  store.insert(newRow(id, { owner: id }));
  store.update(id, { upstreamId: `task-${id}`, submittedAt, status: 'PROCESSING' }, submittedAt);
}

/** A row whose submission started at `startedAt` (no answer yet). */
function submitting(store: PredictionStore, id: string, startedAt: Date) {
  store.insert(newRow(id, { owner: id }));
  store.update(id, { submitStartedAt: startedAt });
}

/** A completed run of `runMs`, ended at `endedAt`. */
function completed(store: PredictionStore, id: string, runMs: number, endedAt = at(-3_600_000)) {
  store.insert(newRow(id, { owner: id }));
  store.update(id, { upstreamId: `task-${id}`, submittedAt: new Date(endedAt.getTime() - runMs), status: 'COMPLETED', completedAt: endedAt }, endedAt);
}

const none = new Set<string>();

describe('Admission.allowance', () => {
  test('without limits every queued prediction may go', async () => {
    const { store, admission } = setup({});
    inFlight(store, 'a', at(-1000));
    expect(await admission.allowance(T0, none)).toBe(Number.POSITIVE_INFINITY);
  });

  test('concurrency: the limit less the tasks upstream and this process\'s own submissions, never below 0', async () => {
    const { store, admission } = setup({ maxConcurrent: 4 });
    expect(await admission.allowance(T0, none)).toBe(4);
    inFlight(store, 'a', at(-1000));
    expect(await admission.allowance(T0, none)).toBe(3);
    submitting(store, 'b', at(-10));
    expect(await admission.allowance(T0, none)).toBe(2);
    // `b` in `submitting` is counted once, through the set, not again from the database.
    expect(await admission.allowance(T0, new Set(['b']))).toBe(2);
    // One not yet written counts too.
    expect(await admission.allowance(T0, new Set(['b', 'c']))).toBe(1);
    inFlight(store, 'd', at(-1000));
    inFlight(store, 'e', at(-1000));
    expect(await admission.allowance(T0, new Set(['b', 'c']))).toBe(0);
    // Final rows do not count.
    store.update('e', { status: 'COMPLETED', completedAt: T0 }, T0);
    expect(await admission.allowance(T0, none)).toBe(1);
  });

  test('per minute: the limit less the submissions started in the last 60 s (the edge included)', async () => {
    const { store, admission } = setup({ maxPerMinute: 3 });
    inFlight(store, 'old', at(-60_001));
    expect(await admission.allowance(T0, none)).toBe(3);
    inFlight(store, 'edge', at(-60_000));
    expect(await admission.allowance(T0, none)).toBe(2);
    submitting(store, 's', at(-5));
    expect(await admission.allowance(T0, none)).toBe(1);
    expect(await admission.allowance(T0, new Set(['s']))).toBe(1);
    expect(await admission.allowance(T0, new Set(['s', 'x']))).toBe(0);
    expect(await admission.allowance(T0, new Set(['s', 'x', 'y']))).toBe(0);
    // A minute later the window has moved past all of them.
    expect(await admission.allowance(at(60_006), none)).toBe(3);
  });

  test('both limits: the smaller allowance', async () => {
    const { store, admission } = setup({ maxConcurrent: 5, maxPerMinute: 2 });
    inFlight(store, 'a', at(-1000));
    expect(await admission.allowance(T0, none)).toBe(1);
    const b = setup({ maxConcurrent: 2, maxPerMinute: 5 });
    inFlight(b.store, 'a', at(-120_000));
    expect(await b.admission.allowance(T0, none)).toBe(1);
  });
});

describe('Admission.nextAdmissionAt', () => {
  test('now while there is room', async () => {
    const { admission } = setup({ maxConcurrent: 1, maxPerMinute: 1 });
    expect(await admission.nextAdmissionAt(T0, none)).toEqual(T0);
    expect(await setup({}).admission.nextAdmissionAt(T0, none)).toEqual(T0);
  });

  test('undefined while every concurrent slot is taken, whatever the per-minute budget', async () => {
    const { store, admission } = setup({ maxConcurrent: 1, maxPerMinute: 1 });
    inFlight(store, 'a', at(-30_000));
    expect(await admission.nextAdmissionAt(T0, none)).toBeUndefined();
    const only = setup({ maxConcurrent: 1 });
    expect(await only.admission.nextAdmissionAt(T0, new Set(['x']))).toBeUndefined();
  });

  test('per minute: a millisecond after the oldest submission in the window leaves it', async () => {
    const { store, admission } = setup({ maxConcurrent: 5, maxPerMinute: 2 });
    inFlight(store, 'old', at(-90_000));
    inFlight(store, 'a', at(-30_000));
    store.update('a', { status: 'COMPLETED', completedAt: at(-1) }, at(-1));
    submitting(store, 'b', at(-10_000));
    expect(await admission.nextAdmissionAt(T0, none)).toEqual(at(30_001));
    expect(await admission.allowance(at(30_001), none)).toBe(1);
    expect(await admission.allowance(at(30_000), none)).toBe(0);
  });

  test('concurrency taken by this process\'s own submissions alone: undefined, even with a recorded submission in the window', async () => {
    const { store, admission } = setup({ maxConcurrent: 2, maxPerMinute: 5 });
    inFlight(store, 'a', at(-30_000));
    store.update('a', { status: 'COMPLETED', completedAt: at(-1) }, at(-1));
    expect(await admission.allowance(T0, new Set(['x', 'y']))).toBe(0);
    expect(await admission.nextAdmissionAt(T0, new Set(['x', 'y']))).toBeUndefined();
  });

  test('per minute held only by this process\'s own unwritten submissions: undefined (their ends wake the poller)', async () => {
    const { admission } = setup({ maxPerMinute: 2 });
    expect(await admission.nextAdmissionAt(T0, new Set(['x', 'y']))).toBeUndefined();
  });
});

describe('Admission.estimate', () => {
  const noTasks = async () => [] as Date[];

  test('a final prediction has no place or estimate', async () => {
    const { store, admission } = setup({});
    completed(store, 'done', 60_000);
    const row = store.findById('done');
    expect(row).toBeDefined();
    if (!row) return;
    expect(await admission.estimate(row, T0, noTasks)).toEqual({ queuePosition: null, estimatedStartAt: null, estimatedCompletionAt: null });
    const failed = store.insert(newRow('f'));
    const gone = store.update(failed.id, { status: 'FAILED' }, T0);
    if (!gone) throw new Error('no row');
    expect(await admission.estimate(gone, T0, noTasks)).toEqual({ queuePosition: null, estimatedStartAt: null, estimatedCompletionAt: null });
  });

  test('before any completed run: the place only', async () => {
    const { store, admission } = setup({});
    store.insert(newRow('q1'));
    const row = store.insert(newRow('q2'));
    expect(await admission.estimate(row, T0, noTasks)).toEqual({ queuePosition: 2, estimatedStartAt: null, estimatedCompletionAt: null });
    inFlight(store, 'p', at(-1000));
    const p = store.findById('p');
    if (!p) throw new Error('no row');
    expect(await admission.estimate(p, T0, noTasks)).toEqual({ queuePosition: null, estimatedStartAt: null, estimatedCompletionAt: null });
  });

  test('started: from its submission, a mean run later, never before now', async () => {
    const { store, admission } = setup({ maxConcurrent: 1, maxPerMinute: 1 });
    completed(store, 'c1', 50_000);
    completed(store, 'c2', 70_000, at(-3_000_000));
    inFlight(store, 'p', at(-10_000));
    const p = store.findById('p');
    if (!p) throw new Error('no row');
    expect(await admission.estimate(p, T0, noTasks)).toEqual({ queuePosition: null, estimatedStartAt: at(-10_000), estimatedCompletionAt: at(50_000) });
    inFlight(store, 'late', at(-100_000));
    const late = store.findById('late');
    if (!late) throw new Error('no row');
    expect(await admission.estimate(late, T0, noTasks)).toEqual({ queuePosition: null, estimatedStartAt: at(-100_000), estimatedCompletionAt: T0 });
    submitting(store, 's', at(-5_000));
    const s = store.findById('s');
    if (!s) throw new Error('no row');
    expect(await admission.estimate(s, T0, noTasks)).toEqual({ queuePosition: null, estimatedStartAt: at(-5_000), estimatedCompletionAt: at(55_000) });
  });

  test('a row no longer queued in the database (a stale copy): from now', async () => {
    const { store, admission } = setup({});
    completed(store, 'c', 60_000);
    const row = store.insert(newRow('q'));
    store.update('q', { status: 'CANCELED' }, T0);
    expect(await admission.estimate(row, T0, noTasks)).toEqual({ queuePosition: null, estimatedStartAt: T0, estimatedCompletionAt: at(60_000) });
  });

  test('the row as given decides whether it is queued: a copy taken before its submission was written', async () => {
    const { store, admission } = setup({ maxPerMinute: 1 });
    completed(store, 'c', 60_000);
    inFlight(store, 'r1', at(-20_000));
    inFlight(store, 'r2', at(-10_000));
    const queuedInDb = store.insert(newRow('q'));
    // The caller's copy already has its task: estimated from its submission, not from the queue.
    const started = { ...queuedInDb, upstreamId: 'task-q', submittedAt: at(-1000), status: 'PROCESSING' as const };
    expect(await admission.estimate(started, T0, noTasks)).toEqual({ queuePosition: null, estimatedStartAt: at(-1000), estimatedCompletionAt: at(59_000) });
    const submittingCopy = { ...queuedInDb, submitStartedAt: at(-2000) };
    expect(await admission.estimate(submittingCopy, T0, noTasks)).toEqual({ queuePosition: null, estimatedStartAt: at(-2000), estimatedCompletionAt: at(58_000) });
    // Queued in the copy but no longer in the database: from now, whatever the per-minute budget.
    store.update('q', { status: 'CANCELED' }, T0);
    expect(await admission.estimate(queuedInDb, T0, noTasks)).toEqual({ queuePosition: null, estimatedStartAt: T0, estimatedCompletionAt: at(60_000) });
  });

  test('queued without limits: starts now', async () => {
    const { store, admission } = setup({});
    completed(store, 'c', 60_000);
    store.insert(newRow('q1'));
    const row = store.insert(newRow('q2'));
    let asked = 0;
    const tasks = async () => {
      asked++;
      return [at(-10_000)];
    };
    expect(await admission.estimate(row, T0, tasks)).toEqual({ queuePosition: 2, estimatedStartAt: T0, estimatedCompletionAt: at(60_000) });
    // Upstream's tasks are not read when no concurrency limit makes them matter.
    expect(asked).toBe(0);
  });

  test('queued under a concurrency limit: the slots are simulated, each freed a mean run after its task\'s submission', async () => {
    const { store, admission } = setup({ maxConcurrent: 2 });
    completed(store, 'c', 60_000);
    const rows = ['q1', 'q2', 'q3', 'q4'].map((id) => store.insert(newRow(id)));
    // One slot free now, the other frees at +50 s.
    const tasks = async () => [at(-10_000)];
    const starts = [];
    for (const row of rows) starts.push((await admission.estimate(row, T0, tasks)).estimatedStartAt);
    expect(starts).toEqual([T0, at(50_000), at(60_000), at(110_000)]);
    const q3 = await admission.estimate(rows[2] as (typeof rows)[0], T0, tasks);
    expect(q3).toEqual({ queuePosition: 3, estimatedStartAt: at(60_000), estimatedCompletionAt: at(120_000) });
    // More tasks than slots (a lowered limit): only the first `slots` count; one already overdue frees now.
    const many = async () => [at(-100_000), at(-20_000), at(-5_000)];
    const first = rows[0] as (typeof rows)[0];
    expect((await admission.estimate(first, T0, many)).estimatedStartAt).toEqual(T0);
    const second = rows[1] as (typeof rows)[0];
    expect((await admission.estimate(second, T0, many)).estimatedStartAt).toEqual(at(40_000));
    expect((await admission.estimate(rows[2] as (typeof rows)[0], T0, many)).estimatedStartAt).toEqual(at(60_000));
    // Slots that free out of order with the simulated ones (tasks stamped by a clock ahead of ours):
    // each freed slot goes back in its place, the soonest taken first.
    const three = setup({ maxConcurrent: 3 });
    completed(three.store, 'c', 1_000);
    const r3 = ['q1', 'q2', 'q3', 'q4', 'q5'].map((id) => three.store.insert(newRow(id)));
    const ahead = async () => [at(500), at(200)];
    const s3 = [];
    for (const row of r3) s3.push((await three.admission.estimate(row, T0, ahead)).estimatedStartAt);
    expect(s3).toEqual([T0, at(1000), at(1200), at(1500), at(2000)]);
    // Both slots taken until later: the first queued waits for the sooner one.
    const busy = async () => [at(-1_000), at(-30_000)];
    expect((await admission.estimate(first, T0, busy)).estimatedStartAt).toEqual(at(30_000));
    expect((await admission.estimate(second, T0, busy)).estimatedStartAt).toEqual(at(59_000));
  });

  test('queued under a per-minute limit: whole minutes once the window\'s budget is used', async () => {
    const { store, admission } = setup({ maxPerMinute: 2 });
    completed(store, 'c', 60_000);
    inFlight(store, 'recent', at(-30_000));
    const rows = ['q1', 'q2', 'q3', 'q4', 'q5', 'q6'].map((id) => store.insert(newRow(id)));
    const starts = [];
    for (const row of rows) starts.push((await admission.estimate(row, T0, async () => [])).estimatedStartAt);
    expect(starts).toEqual([T0, at(60_000), at(60_000), at(120_000), at(120_000), at(180_000)]);
  });

  test('both limits: the later of the slot and the budget', async () => {
    const { store, admission } = setup({ maxConcurrent: 1, maxPerMinute: 1 });
    completed(store, 'c', 10_000);
    const rows = ['q1', 'q2', 'q3'].map((id) => store.insert(newRow(id)));
    const starts = [];
    for (const row of rows) starts.push((await admission.estimate(row, T0, async () => [])).estimatedStartAt);
    // Slots free every 10 s, the budget every minute.
    expect(starts).toEqual([T0, at(60_000), at(120_000)]);
    const slow = setup({ maxConcurrent: 1, maxPerMinute: 10 });
    completed(slow.store, 'c', 100_000);
    const r = ['q1', 'q2'].map((id) => slow.store.insert(newRow(id)));
    const s = [];
    for (const row of r) s.push((await slow.admission.estimate(row, T0, async () => [at(-40_000)])).estimatedStartAt);
    expect(s).toEqual([at(60_000), at(160_000)]);
  });

  test('far down the queue the start is extrapolated: whole rounds of the slots after the soonest', async () => {
    const { db } = freshDb();
    const store = new PredictionStore(db);
    const admission = new Admission(sqliteQueue(new QueueStore(db)), { maxConcurrent: 2 });
    completed(store, 'c', 1_000);
    // One transaction: 10 001 commits would take seconds.
    db.$client.transaction(() => {
      for (let i = 1; i <= 10_002; i++) store.insert(newRow(`q${String(i).padStart(5, '0')}`));
    })();
    const row = (id: string) => {
      const r = store.findById(id);
      if (!r) throw new Error(`no ${id}`);
      return r;
    };
    // The two slots free at +500 and +800 ms, then each a 1 s run later: place 2k+1 starts at
    // k s + 500 ms, place 2k+2 at k s + 800 ms.
    const tasks = async () => [at(-500), at(-200)];
    const simulated = await admission.estimate(row('q10000'), T0, tasks);
    expect(simulated.queuePosition).toBe(10_000);
    expect(simulated.estimatedStartAt).toEqual(at(4_999_800));
    // Place 10 001 is past the simulated ones: the soonest slot plus 5000 rounds, as simulated.
    const next = await admission.estimate(row('q10001'), T0, tasks);
    expect(next.queuePosition).toBe(10_001);
    expect(next.estimatedStartAt).toEqual(at(5_000_500));
    expect(next.estimatedCompletionAt).toEqual(at(5_001_500));
    // Past the simulated places whole rounds are rounded up: place 10 002 (the simulation would say
    // +5000.8 s) gets the soonest slot plus 5001 rounds, at most one run later.
    const later = await admission.estimate(row('q10002'), T0, tasks);
    expect(later.estimatedStartAt).toEqual(at(5_001_500));
  }, 60_000);
});

describe('Pauses', () => {
  test('a first hold waits a backoff step from the base; a given wait (Retry-After) is used as is', () => {
    const p = new Pauses(1000, 60_000);
    const { pause, isNew } = p.hold('rate', 'HTTP 429', 10_000);
    expect(isNew).toBe(true);
    expect(pause).toMatchObject({ kind: 'rate', reason: 'HTTP 429', streak: 1, since: 10_000 });
    // Equal jitter over a 1 s ceiling: between 0.5 s and 1 s.
    expect(pause.until).toBeGreaterThanOrEqual(10_500);
    expect(pause.until).toBeLessThanOrEqual(11_000);
    const q = new Pauses(1000, 60_000);
    expect(q.hold('rate', 'HTTP 429', 10_000, 7000).pause.until).toBe(17_000);
  });

  test('a repeat while the pause is in force keeps its step (one outage, one step); a hold after it ran out goes one step further', () => {
    const p = new Pauses(1000, 4000);
    p.hold('account', 'no balance', 0, 30_000);
    const second = p.hold('account', 'no balance', 1000, 5000);
    expect(second.isNew).toBe(false);
    expect(second.pause).toEqual({ kind: 'account', reason: 'no balance', streak: 1, since: 0, heldAt: 1000, until: 30_000 });
    const third = p.hold('account', 'key revoked', 2000);
    expect(third.isNew).toBe(true);
    expect(third.pause).toMatchObject({ streak: 1, since: 0, heldAt: 2000, until: 30_000 });
    // A later Retry-After reaching further moves the end; the step stays.
    expect(p.hold('account', 'key revoked', 3000, 28_000).pause).toMatchObject({ streak: 1, until: 31_000 });
    // The probe at the end failed: one step further. Streak 2: ceiling 2 s, so 1 to 2 s after now.
    const fourth = p.hold('account', 'key revoked', 31_000);
    expect(fourth.pause.streak).toBe(2);
    expect(fourth.pause.until).toBeGreaterThanOrEqual(32_000);
    expect(fourth.pause.until).toBeLessThanOrEqual(33_000);
    expect(p.get('account')).toBe(fourth.pause);
  });

  test('a burst of failures from one outage (every step under way when the database restarted) is one backoff step, not one per step', () => {
    const p = new Pauses(1000, 60_000);
    const first = p.hold('storage', '57P01: terminating connection', 5000);
    for (const reason of ['ECONNREFUSED', 'ECONNREFUSED', 'Connection terminated unexpectedly', '57P01: terminating connection', 'ECONNREFUSED']) {
      p.hold('storage', reason, 5001);
    }
    expect(p.get('storage')).toMatchObject({ streak: 1, since: 5000, heldAt: 5001, until: first.pause.until });
    expect(first.pause.until).toBeLessThanOrEqual(6000);
  });

  test('only work started at or after the latest hold ends a pause: a request already under way at a repeat does not', () => {
    const p = new Pauses(1000, 60_000);
    p.hold('rate', 'HTTP 429', 10_000, 2000);
    expect(p.clear('rate', 10_500, 9_999)).toBe(false); // sent before the 429 was answered
    expect(p.get('rate')?.heldAt).toBe(10_000);
    // A repeat while the pause holds moves heldAt (not since): work started between the two proves nothing.
    p.hold('rate', 'HTTP 429', 11_000, 2000);
    expect(p.get('rate')).toMatchObject({ since: 10_000, heldAt: 11_000, until: 13_000 });
    expect(p.clear('rate', 13_100, 10_500)).toBe(false);
    expect(p.clear('rate', 13_100, 11_000)).toBe(true);
    expect(p.get('rate')).toBeUndefined();
    // Without a start time (a probe that proves it by itself), any clear ends it.
    p.hold('storage', 'SQLITE_FULL', 20_000);
    expect(p.clear('storage', 20_001)).toBe(true);
  });

  test('kinds are held and cleared apart; until() is the latest end, 0 with none', () => {
    const p = new Pauses(1000, 60_000);
    expect(p.until()).toBe(0);
    expect(p.list()).toEqual([]);
    p.hold('rate', 'r', 0, 5000);
    p.hold('storage', 's', 0, 9000);
    p.hold('crash', 'c', 0, 2000);
    expect(p.until()).toBe(9000);
    expect(p.list().map((x) => x.kind)).toEqual(['rate', 'storage', 'crash']);
    expect(p.clear('storage', 100)).toBe(true);
    expect(p.clear('storage', 100)).toBe(false);
    expect(p.clear('account', 100)).toBe(false);
    expect(p.get('storage')).toBeUndefined();
    expect(p.get('rate')?.reason).toBe('r');
    expect(p.until()).toBe(5000);
  });

  test('a kind that returns within 10 minutes of its end continues its backoff; later it starts over', () => {
    const p = new Pauses(1000, 1_000_000);
    p.hold('account', 'a', 0, 1);
    p.hold('account', 'a', 1, 1); // its probe failed: streak 2
    p.clear('account', 1000);
    const soon = p.hold('account', 'a', 1000 + 599_999);
    expect(soon.isNew).toBe(true);
    expect(soon.pause.streak).toBe(3);
    expect(soon.pause.since).toBe(600_999);
    // Streak 3: ceiling 4 s.
    expect(soon.pause.until - 600_999).toBeGreaterThanOrEqual(2000);
    p.clear('account', 700_000);
    expect(p.hold('account', 'a', 700_000 + 600_000).pause.streak).toBe(1);
    // The memory is per kind.
    p.hold('rate', 'r', 0, 1);
    p.clear('rate', 10);
    expect(p.hold('storage', 's', 20, 1).pause.streak).toBe(1);
    expect(p.hold('rate', 'r', 20, 1).pause.streak).toBe(2);
    // Clearing without a time uses the clock: a hold right after continues.
    p.clear('crash');
    p.hold('crash', 'x', 0, 1);
    p.clear('crash');
    expect(p.hold('crash', 'x', Date.now(), 1).pause.streak).toBe(2);
  });
});
