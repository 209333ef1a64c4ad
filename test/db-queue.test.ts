import { describe, expect, test } from 'vitest';
import { PredictionStore } from '../src/db/predictions.js';
import { QueueStore } from '../src/db/queue.js';
import { at, freshDb, newRow, T0 } from './helpers/db.js';

/**
 * QueueStore against a real SQLite file: which rows are queued (CREATED, no task, no submission under
 * way), their fair order and place, the busy rows left out, and the counts behind admission (in
 * flight upstream, submissions per window), deadlines and run-time estimates.
 */

function stores() {
  const { db } = freshDb();
  return { store: new PredictionStore(db), queue: new QueueStore(db) };
}

describe('the admission queue', () => {
  test('due: queued rows whose time has come, in fair order, leaving out busy ones, up to the limit', () => {
    const { store: s, queue: q } = stores();
    s.insert(newRow('a1', { owner: 'A' }));
    s.insert(newRow('a2', { owner: 'A' }));
    s.insert(newRow('a3', { owner: 'A' }));
    s.insert(newRow('b1', { owner: 'B' }));
    s.insert(newRow('b2', { owner: 'B', nextPollAt: at(1000) }));
    s.insert(newRow('c1', { owner: 'C' }));
    // Not queued: submitted, being submitted, processing, final.
    s.insert(newRow('sub', { owner: 'D' }));
    s.update('sub', { upstreamId: 'task' });
    s.insert(newRow('starting', { owner: 'D' }));
    s.update('starting', { submitStartedAt: T0 });
    s.insert(newRow('gone', { owner: 'D' }));
    s.update('gone', { status: 'CANCELED' }, T0);
    // Fair order: turn 1 of A, B, C (by seq), then turn 2 of A, B, ...
    expect(q.due(T0, 10)).toEqual(['a1', 'b1', 'c1', 'a2', 'a3']);
    expect(q.due(at(1000), 10)).toEqual(['a1', 'b1', 'c1', 'a2', 'b2', 'a3']);
    expect(q.due(at(999), 10)).toEqual(['a1', 'b1', 'c1', 'a2', 'a3']);
    expect(q.due(T0, 2)).toEqual(['a1', 'b1']);
    expect(q.due(T0, 2, ['a1', 'c1'])).toEqual(['b1', 'a2']);
    expect(q.due(T0, 10, new Set(['a1', 'a2', 'a3', 'b1', 'c1']))).toEqual([]);
    expect(q.due(at(-1), 10)).toEqual([]);
  });

  test('position: a 1-based place in the fair order; none once a prediction has left the queue', () => {
    const { store: s, queue: q } = stores();
    for (const [id, owner] of [
      ['a1', 'A'],
      ['a2', 'A'],
      ['b1', 'B'],
      ['o1', null],
    ] as const) {
      s.insert(newRow(id, { owner, nextPollAt: at(60_000) }));
    }
    // Fair order: a1 (1), b1 (1), o1 (1), a2 (2); not due yet does not change a place.
    expect(['a1', 'b1', 'o1', 'a2'].map((id) => q.position(id))).toEqual([1, 2, 3, 4]);
    s.update('a1', { submitStartedAt: T0 });
    expect(q.position('a1')).toBeUndefined();
    expect(['b1', 'o1', 'a2'].map((id) => q.position(id))).toEqual([1, 2, 3]);
    s.update('b1', { upstreamId: 'task-b1', submitStartedAt: null });
    s.update('o1', { status: 'FAILED' }, T0);
    expect([q.position('b1'), q.position('o1'), q.position('a2')]).toEqual([undefined, undefined, 1]);
    s.update('a2', { status: 'PROCESSING' }, T0);
    expect(q.position('a2')).toBeUndefined();
    expect(q.position('nobody')).toBeUndefined();
  });

  test('nextDue: when the earliest queued prediction not busy is due', () => {
    const { store: s, queue: q } = stores();
    expect(q.nextDue()).toBeUndefined();
    s.insert(newRow('late', { nextPollAt: at(3000) }));
    s.insert(newRow('early', { nextPollAt: at(1000) }));
    s.insert(newRow('started', { nextPollAt: at(10) }));
    s.update('started', { upstreamId: 'task' });
    expect(q.nextDue()).toEqual(at(1000));
    expect(q.nextDue(['early'])).toEqual(at(3000));
    expect(q.nextDue(new Set(['late']))).toEqual(at(1000));
    expect(q.nextDue(['early', 'late'])).toBeUndefined();
  });
});

describe('what holds a place upstream', () => {
  /** Rows in each state that matters: queued, being submitted, submitted, processing, final. */
  function scene() {
    const t = stores();
    const { store: s } = t;
    s.insert(newRow('queued'));
    s.insert(newRow('starting'));
    s.update('starting', { submitStartedAt: at(300) });
    s.insert(newRow('submitted'));
    s.update('submitted', { upstreamId: 'u1', submittedAt: at(100) });
    s.insert(newRow('processing'));
    s.update('processing', { upstreamId: 'u2', status: 'PROCESSING', submittedAt: at(200) }, T0);
    s.insert(newRow('resent'));
    // A resend under way: both times set, the pending one wins until it is answered.
    s.update('resent', { upstreamId: null, submittedAt: at(50), submitStartedAt: at(400) });
    s.insert(newRow('done'));
    s.update('done', { upstreamId: 'u3', status: 'COMPLETED', submittedAt: at(10), completedAt: at(20) }, T0);
    s.insert(newRow('failed-start'));
    s.update('failed-start', { submitStartedAt: at(5), status: 'FAILED' }, T0);
    return t;
  }

  test('upstreamInFlight counts live rows with a task or a submission under way, less the exceptions', () => {
    const { queue: q } = scene();
    expect(q.upstreamInFlight()).toBe(4);
    expect(q.upstreamInFlight(['starting', 'queued'])).toBe(3);
    expect(q.upstreamInFlight(new Set(['starting', 'submitted', 'processing', 'resent']))).toBe(0);
  });

  test('upstreamSubmittedAt: their submission times, oldest first, up to the limit', () => {
    const { queue: q } = scene();
    // submitted 100, processing 200, starting 300; resent: submitted_at (50) first, as coalesce says.
    expect(q.upstreamSubmittedAt(10)).toEqual([at(50), at(100), at(200), at(300)]);
    expect(q.upstreamSubmittedAt(2)).toEqual([at(50), at(100)]);
  });

  test('submittedSince counts each row once whose latest submission is in the window, from its start inclusive', () => {
    const { queue: q } = scene();
    // In the window from 100: submitted (100), processing (200), starting (300), resent (400: its pending one).
    expect(q.submittedSince(at(100))).toBe(4);
    expect(q.submittedSince(at(101))).toBe(3);
    expect(q.submittedSince(at(101), ['resent'])).toBe(2);
    expect(q.submittedSince(at(0))).toBe(7 - 1);
    expect(q.submittedSince(at(401))).toBe(0);
    // Final rows count too: a window is about what was sent, not what is still running.
    expect(q.submittedSince(at(10))).toBe(5);
    expect(q.submittedSince(at(5))).toBe(6);
  });

  test('oldestSubmissionSince: when the oldest submission in the window started', () => {
    const { queue: q } = scene();
    expect(q.oldestSubmissionSince(at(0))).toEqual(at(5));
    expect(q.oldestSubmissionSince(at(100))).toEqual(at(100));
    expect(q.oldestSubmissionSince(at(101))).toEqual(at(200));
    // resent's pending start (400) is in the window even though its earlier submission (50) is not.
    expect(q.oldestSubmissionSince(at(301))).toEqual(at(400));
    expect(q.oldestSubmissionSince(at(401))).toBeUndefined();
  });
});

describe('deadlines and run times', () => {
  test('pastDeadline: live rows whose deadline has come, earliest first, up to the limit', () => {
    const { store: s, queue: q } = stores();
    expect(q.nextDeadline()).toBeUndefined();
    s.insert(newRow('none'));
    s.insert(newRow('d300', { deadlineAt: at(300) }));
    s.insert(newRow('d100', { deadlineAt: at(100) }));
    s.insert(newRow('d200', { deadlineAt: at(200) }));
    s.update('d200', { upstreamId: 'u', status: 'PROCESSING' }, T0);
    s.insert(newRow('final', { deadlineAt: at(50) }));
    s.update('final', { status: 'CANCELED' }, T0);
    expect(q.pastDeadline(at(1000), 10)).toEqual(['d100', 'd200', 'd300']);
    expect(q.pastDeadline(at(200), 10)).toEqual(['d100', 'd200']);
    expect(q.pastDeadline(at(199), 10)).toEqual(['d100']);
    expect(q.pastDeadline(at(1000), 1)).toEqual(['d100']);
    expect(q.pastDeadline(at(99), 10)).toEqual([]);
    expect(q.nextDeadline()).toEqual(at(100));
    s.update('d100', { status: 'FAILED' }, T0);
    expect(q.nextDeadline()).toEqual(at(200));
  });

  test('recentRunMs: the rounded mean run time of the last n completed predictions', () => {
    const { store: s, queue: q } = stores();
    expect(q.recentRunMs()).toBeUndefined();
    const complete = (id: string, submitted: number, completed: number) => {
      s.insert(newRow(id));
      s.update(id, { upstreamId: `u-${id}`, submittedAt: at(submitted), status: 'COMPLETED', completedAt: at(completed) }, T0);
    };
    complete('r1', 0, 1000); // 1000 ms, oldest completion
    complete('r2', 500, 2500); // 2000 ms
    complete('r3', 1000, 4001); // 3001 ms, newest completion
    // Not runs: failed, or completed without a submission time.
    s.insert(newRow('f'));
    s.update('f', { upstreamId: 'u-f', submittedAt: at(0), status: 'FAILED', completedAt: at(100_000) }, T0);
    s.insert(newRow('nosub'));
    s.update('nosub', { status: 'COMPLETED', completedAt: at(200_000) }, T0);
    expect(q.recentRunMs()).toBe(2000);
    expect(q.recentRunMs(3)).toBe(2000);
    expect(q.recentRunMs(2)).toBe(2501); // (2000 + 3001) / 2 = 2500.5, rounded
    expect(q.recentRunMs(1)).toBe(3001);
    // The default is the last 20.
    for (let i = 0; i < 20; i++) complete(`n${i}`, 10_000 + i, 10_000 + i + 100);
    expect(q.recentRunMs()).toBe(100);
    expect(q.recentRunMs(23)).toBe(Math.round((20 * 100 + 1000 + 2000 + 3001) / 23));
  });
});
