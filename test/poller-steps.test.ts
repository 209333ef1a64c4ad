import { createHash } from 'node:crypto';
import Database from 'better-sqlite3';
import { afterEach, beforeEach, describe, expect, test, vi } from 'vitest';
import type { PredictionPatch } from '../src/db/predictions.js';
import type { PredictionRow } from '../src/db/schema.js';
import type { Leases, SharedPause } from '../src/db/store.js';
import { WaveSpeedClient } from '../src/upstream/wavespeed.js';
import { at, newRow, T0 } from './helpers/db.js';
import { nextPollerEvent } from './helpers/events.js';
import { must } from './helpers/must.js';
import { freePort } from './helpers/net.js';
import { answer, asRecord, pollerRig, type Rig } from './helpers/poller-rig.js';
import { timersOf } from './helpers/timers.js';

/**
 * The poller's loop (poller.ts) and the steps of a prediction's life (steps.ts), driven in-process:
 * a real Poller on a real SQLite file, a scripted loopback upstream that records every request, and
 * a clock that moves only when the test moves it. Exact request counts (a submission is paid), the
 * stored row after each step, and the typed events with their payloads.
 *
 * Math.random is pinned at 0.5, so a backoff of `attempts` is exactly 3/4 of its ceiling: the retry
 * step's (base 500 ms, cap 8 s) 375, 750, 1500 ms…; a poller-wide pause's (base 1 s) 750 ms first.
 */

beforeEach(() => {
  vi.spyOn(Math, 'random').mockReturnValue(0.5);
});
afterEach(() => {
  vi.restoreAllMocks();
});

const rowOf = (rig: Rig, id: string): PredictionRow => must(rig.store.findById(id), `row ${id}`);
const names = (rig: Rig) => rig.events.map((e) => e.name);
/** Inserts a queued prediction. */
const queued = (rig: Rig, id: string, more: Parameters<typeof newRow>[1] = {}) => rig.store.insert(newRow(id, more));
/** Inserts a prediction and applies `patch` (a task upstream, say) as bookkeeping. */
function withPatch(rig: Rig, id: string, patch: PredictionPatch, more: Parameters<typeof newRow>[1] = {}) {
  rig.store.insert(newRow(id, more));
  rig.store.update(id, patch);
}
/** A prediction with task `task` upstream, submitted at T0, and that task in the stub. */
function polling(rig: Rig, id: string, task: string, status = 'processing', patch: PredictionPatch = {}) {
  withPatch(rig, id, { upstreamId: task, submittedAt: T0, submitAttempts: 1, ...patch });
  rig.up.set(task, status);
}
const logged = (rig: Rig, msg: string) => rig.logs().filter((l) => l.msg === msg);
const sha = (s: string) => createHash('sha256').update(s).digest('hex');
const diskFull = () => new Database.SqliteError('database or disk is full', 'SQLITE_FULL');

describe('submission', () => {
  test('a queued prediction is submitted once: intent first, then the task, then polls on the schedule', async () => {
    const rig = await pollerRig();
    queued(rig, 'a', { image: 'https://img.example/a.jpg', hasImage: true, enablePromptExpansion: false });
    await rig.poller.runOnce();
    expect(rig.up.count('submit')).toBe(1);
    const [sub] = rig.up.requests;
    expect(JSON.parse(must(sub).body)).toEqual({ prompt: 'prompt of a', enable_prompt_expansion: false, image: 'https://img.example/a.jpg' });
    expect(must(sub).query.has('webhook')).toBe(false);
    expect(rowOf(rig, 'a')).toMatchObject({
      status: 'CREATED',
      upstreamId: 'task-1',
      submittedAt: T0,
      submitStartedAt: null,
      attempts: 0,
      error: null,
      submitAttempts: 1,
      nextPollAt: at(1000),
      completedAt: null,
      webhookToken: null,
      version: 2,
    });
    // The image is let go once upstream has it.
    expect(rig.store.imageOf('a')).toBeNull();
    expect(rig.events).toEqual([
      { name: 'submitted', args: [{ id: 'a', upstreamId: 'task-1', adopted: false }] },
      { name: 'recorded', args: [{ id: 'a', status: 'CREATED' }] },
      { name: 'queueMoved', args: [] },
    ]);
    expect(logged(rig, 'submitted upstream')).toEqual([expect.objectContaining({ predictionId: 'a', upstreamId: 'task-1', webhook: false, adopted: false })]);

    // Not due yet: nothing is read.
    rig.clock.advance(999);
    await rig.poller.runOnce();
    expect(rig.up.count('result')).toBe(0);

    // The same status again: bookkeeping only (no new version), the next poll after initialMs.
    rig.clock.advance(1);
    await rig.poller.runOnce();
    expect(rig.up.count('result')).toBe(1);
    expect(rowOf(rig, 'a')).toMatchObject({ status: 'CREATED', pollCount: 1, attempts: 0, version: 2, nextPollAt: at(2000) });
    expect(rig.seen('polled')).toEqual([{ id: 'a', status: 'created' }]);

    // Processing 19 s after submission: the next look after 20 % of that.
    rig.up.set('task-1', 'processing');
    rig.clock.advance(18_000);
    await rig.poller.runOnce();
    expect(rowOf(rig, 'a')).toMatchObject({ status: 'PROCESSING', pollCount: 2, version: 3, nextPollAt: at(22_800), inferenceMs: 1234 });
    expect(rig.seen('recorded').at(-1)).toEqual({ id: 'a', status: 'PROCESSING' });

    // Long running: the delay is capped at maxMs.
    rig.clock.advance(76_000);
    await rig.poller.runOnce();
    expect(rowOf(rig, 'a')).toMatchObject({ pollCount: 3, nextPollAt: at(103_000), version: 3 });

    rig.up.set('task-1', 'completed', { outputs: ['https://cdn.example/a.mp4'] });
    rig.clock.advance(8000);
    await rig.poller.runOnce();
    expect(rowOf(rig, 'a')).toMatchObject({
      status: 'COMPLETED',
      outputs: ['https://cdn.example/a.mp4'],
      keptOutputs: [],
      urlsGet: 'https://up.example/api/v3/predictions/task-1/result',
      completedAt: at(103_000),
      nextPollAt: null,
      pollCount: 4,
      attempts: 0,
    });
    expect(rig.seen('recorded').at(-1)).toEqual({ id: 'a', status: 'COMPLETED' });
    expect(logged(rig, 'upstream sent an unknown status; polling on')).toEqual([]);
    // Without a media store nothing is downloaded, and nothing is said about it.
    expect(logged(rig, 'could not keep outputs; completing with upstream URLs only')).toEqual([]);
    // Final: never read again.
    rig.clock.advance(60_000);
    await rig.poller.runOnce();
    expect(rig.up.count('result')).toBe(4);
    expect(rig.up.count('submit')).toBe(1);
  });

  test('with webhooks: a token is stored before the URL leaves, reused later, and polls fall back to the slow interval', async () => {
    const rig = await pollerRig({ options: { webhookUrl: (id, token) => `https://gw.example/hooks/${id}?t=${token}` } });
    queued(rig, 'w');
    withPatch(rig, 'k', { webhookToken: 'kept-token' });
    await rig.poller.runOnce();
    const token = must(rowOf(rig, 'w').webhookToken);
    expect(token).toMatch(/^[A-Za-z0-9_-]{43}$/);
    const hooks = rig.up.requests.filter((r) => r.route === 'submit').map((r) => r.query.get('webhook'));
    expect(hooks.sort()).toEqual([`https://gw.example/hooks/k?t=kept-token`, `https://gw.example/hooks/w?t=${token}`]);
    expect(rowOf(rig, 'k').webhookToken).toBe('kept-token');
    expect(rowOf(rig, 'w').nextPollAt).toEqual(at(60_000));
    expect(logged(rig, 'submitted upstream')[0]).toMatchObject({ webhook: true });
    rig.clock.advance(60_000);
    await rig.poller.runOnce();
    expect(rig.up.count('result')).toBe(2);
    expect(rowOf(rig, 'w')).toMatchObject({ nextPollAt: at(120_000), pollCount: 1 });
  });

  test('answered completed at once: the upstream id is recorded and the outputs are left to a poll at once', async () => {
    const rig = await pollerRig();
    queued(rig, 'c');
    rig.clock.advance(1000);
    rig.up.script('submit', answer.record('completed', { id: 'task-c', outputs: ['https://cdn.example/c.mp4'] }));
    await rig.poller.runOnce();
    expect(rowOf(rig, 'c')).toMatchObject({ status: 'CREATED', upstreamId: 'task-c', outputs: [], nextPollAt: at(1000), completedAt: null, submitAttempts: 1 });
    expect(rig.seen('recorded')).toEqual([{ id: 'c', status: 'CREATED' }]);
    await rig.poller.runOnce();
    expect(rowOf(rig, 'c')).toMatchObject({ status: 'COMPLETED', outputs: ['https://cdn.example/c.mp4'], completedAt: at(1000), nextPollAt: null });
    expect(rig.up.count('submit')).toBe(1);
    expect(rig.up.count('result')).toBe(1);
  });

  test('past the age limit before a submission: FAILED without sending, with the last error; exactly at the limit it is sent', async () => {
    const rig = await pollerRig();
    queued(rig, 'old', { createdAt: at(-600_001), nextPollAt: at(-1) });
    withPatch(rig, 'older', { error: 'earlier complaint' }, { createdAt: at(-700_000), nextPollAt: at(-1) });
    queued(rig, 'edge', { createdAt: at(-600_000) });
    await rig.poller.runOnce();
    expect(rig.up.count('submit')).toBe(1);
    expect(JSON.parse(must(rig.up.requests[0]).body).prompt).toBe('prompt of edge');
    expect(rowOf(rig, 'old')).toMatchObject({ status: 'FAILED', error: 'gave up: could not submit upstream within 600 s', nextPollAt: null, completedAt: T0, submitAttempts: 0 });
    expect(rowOf(rig, 'older').error).toBe('gave up: could not submit upstream within 600 s (last error: earlier complaint)');
    expect(rig.seen('failed').sort((x, y) => x.id.localeCompare(y.id))).toEqual([
      { id: 'old', error: 'gave up: could not submit upstream within 600 s' },
      { id: 'older', error: 'gave up: could not submit upstream within 600 s (last error: earlier complaint)' },
    ]);
  });

  test('a 400 refusal: FAILED at once, the intent withdrawn', async () => {
    const rig = await pollerRig();
    queued(rig, 'r', { image: 'https://img.example/r.jpg', hasImage: true });
    rig.up.script('submit', answer.http(400, 'bad prompt'));
    await rig.poller.runOnce();
    expect(rowOf(rig, 'r')).toMatchObject({
      status: 'FAILED',
      error: 'upstream rejected the submission: upstream answered HTTP 400: bad prompt',
      submitAttempts: 0,
      submitStartedAt: null,
      nextPollAt: null,
      completedAt: T0,
    });
    expect(rig.store.imageOf('r')).toBeNull();
    expect(rig.seen('failed')).toEqual([{ id: 'r', error: 'upstream rejected the submission: upstream answered HTTP 400: bad prompt' }]);
    expect(names(rig)).toEqual(['recorded', 'failed', 'queueMoved']);
    expect(logged(rig, 'submission failed permanently')).toEqual([expect.objectContaining({ predictionId: 'r', err: 'upstream answered HTTP 400: bad prompt' })]);
    await rig.poller.runOnce();
    expect(rig.up.count('submit')).toBe(1);
  });

  test('a 5xx is uncertain: never resent before the task list was searched for the grace period, then sent once more', async () => {
    const rig = await pollerRig();
    queued(rig, 'u');
    rig.up.script('submit', answer.http(502, 'bad gateway'));
    await rig.poller.runOnce();
    const message = 'upstream answered HTTP 502: bad gateway';
    expect(rowOf(rig, 'u')).toMatchObject({
      status: 'CREATED',
      error: `submission outcome unknown, looking for it upstream: ${message}`,
      submitAttempts: 1,
      submitStartedAt: T0,
      attempts: 0,
      nextPollAt: at(500),
      version: 2,
    });
    expect(rig.seen('uncertain')).toEqual([{ id: 'u', error: message }]);
    expect(rig.seen('recorded')).toEqual([]);
    expect(logged(rig, 'submission may have reached upstream; reconciling instead of resending')).toEqual([expect.objectContaining({ predictionId: 'u', err: message })]);

    // Within the grace period the list is read; the task is not there; nothing is sent.
    rig.clock.advance(500);
    await rig.poller.runOnce();
    expect(rig.up.count('list')).toBe(1);
    expect(JSON.parse(must(rig.up.requests.at(-1)).body)).toEqual({ page: 1, page_size: 100 });
    expect(rig.up.count('submit')).toBe(1);
    expect(rowOf(rig, 'u')).toMatchObject({ submitStartedAt: T0, nextPollAt: at(1000), attempts: 0, version: 2 });

    rig.clock.advance(1499);
    await rig.poller.runOnce();
    expect(rig.up.count('submit')).toBe(1);
    expect(rowOf(rig, 'u')).toMatchObject({ submitStartedAt: T0, nextPollAt: at(2499) });

    // The grace period is over and still no task: the submission did not take. It is queued again…
    rig.clock.advance(500);
    await rig.poller.runOnce();
    expect(rig.up.count('submit')).toBe(1);
    expect(rowOf(rig, 'u')).toMatchObject({ submitStartedAt: null, submitAttempts: 1, nextPollAt: at(2499), attempts: 0 });
    // …and sent once more.
    await rig.poller.runOnce();
    expect(rig.up.count('submit')).toBe(2);
    expect(rowOf(rig, 'u')).toMatchObject({ upstreamId: 'task-1', submitAttempts: 2, submittedAt: at(2499), error: null });
  });

  test('an uncertain submission whose task shows in the list is adopted, never sent again; a task another prediction owns is not', async () => {
    const rig = await pollerRig();
    queued(rig, 'u', { image: 'https://img.example/u.jpg', hasImage: true });
    // Upstream created the task but the answer was lost.
    rig.up.script('submit', (q, res, up) => {
      const input = JSON.parse(q.body) as { prompt: string; image: string };
      up.set('task-u', 'processing', { input: { prompt: input.prompt, image: input.image } });
      answer.http(500, 'oops')(q, res, up);
    });
    await rig.poller.runOnce();
    // Another prediction with the same input, whose submission is also uncertain; and a task with the same
    // prompt but no image that is not this one's.
    withPatch(rig, 'v', { submitStartedAt: T0, submitAttempts: 1, nextPollAt: at(500) }, { prompt: 'prompt of u', image: 'https://img.example/u.jpg', hasImage: true });
    rig.up.set('task-noimage', 'processing', { input: { prompt: 'prompt of u' } });
    rig.clock.advance(500);
    await rig.poller.runOnce();
    expect(rig.up.count('submit')).toBe(1);
    const adopted = rig.seen('submitted');
    expect(adopted).toHaveLength(1);
    expect(must(adopted[0]).adopted).toBe(true);
    const owner = must(adopted[0]).id;
    const other = owner === 'u' ? 'v' : 'u';
    expect(rowOf(rig, owner)).toMatchObject({ upstreamId: 'task-u', status: 'PROCESSING', submittedAt: T0, submitStartedAt: null, error: null, nextPollAt: at(1500) });
    // The other one finds only a task that is taken, or one of another input: it keeps looking.
    expect(rowOf(rig, other)).toMatchObject({ upstreamId: null, submitStartedAt: T0 });
    expect(logged(rig, 'found the submitted task upstream')).toEqual([expect.objectContaining({ predictionId: owner, upstreamId: 'task-u', adopted: true })]);
  });

  test('an image uploaded before an uncertain submission is looked for by its upload URL', async () => {
    const rig = await pollerRig();
    withPatch(rig, 'i', { submitStartedAt: T0, submitAttempts: 1, imageUploadUrl: 'https://up.example/uploads/9.jpg' }, { hasImage: true, imageFile: 'f'.repeat(64).concat('.jpg') });
    rig.up.set('task-i', 'created', { input: { prompt: 'prompt of i', image: 'https://up.example/uploads/9.jpg' } });
    await rig.poller.runOnce();
    expect(rowOf(rig, 'i')).toMatchObject({ upstreamId: 'task-i', status: 'CREATED' });
    expect(rig.up.count('upload')).toBe(0);
  });

  test('reconciliation gives up after maxSubmissions or the age limit: FAILED SUBMISSION_UNCERTAIN with the last error', async () => {
    const rig = await pollerRig();
    withPatch(rig, 'n', { submitStartedAt: at(-2000), submitAttempts: 2, error: 'earlier' });
    withPatch(rig, 'm', { submitStartedAt: at(-2000), submitAttempts: 1 });
    withPatch(rig, 'e', { submitStartedAt: at(-1000), submitAttempts: 1 }, { createdAt: at(-600_001) });
    await rig.poller.runOnce();
    expect(rig.up.count('submit')).toBe(0);
    expect(rowOf(rig, 'n')).toMatchObject({
      status: 'FAILED',
      error: 'SUBMISSION_UNCERTAIN: upstream never confirmed a task for this prediction after 2 submissions; it may still run and be billed upstream (last error: earlier)',
      submitStartedAt: null,
      nextPollAt: null,
      completedAt: T0,
    });
    expect(rowOf(rig, 'e')).toMatchObject({
      status: 'FAILED',
      error: 'SUBMISSION_UNCERTAIN: upstream never confirmed a task for this prediction after the age limit; it may still run and be billed upstream',
    });
    // Below the cap: may be sent again.
    expect(rowOf(rig, 'm')).toMatchObject({ status: 'CREATED', submitStartedAt: null, nextPollAt: T0 });
    expect(rig.seen('failed').map((f) => f.id).sort()).toEqual(['e', 'n']);
  });

  test('a list longer than one look can read proves nothing: the search goes on past the grace period, until the age limit', async () => {
    const rig = await pollerRig();
    withPatch(rig, 'b', { submitStartedAt: at(-5000), submitAttempts: 1 });
    const busy = Array.from({ length: 100 }, (_, i) => asRecord({ id: `t${i}`, status: 'processing', outputs: [], error: '', input: { prompt: 'someone else' }, createdAt: T0.toISOString() }));
    for (let i = 0; i < 10; i++) rig.up.script('list', answer.list(busy));
    await rig.poller.runOnce();
    expect(rig.up.count('list')).toBe(10);
    expect(rowOf(rig, 'b')).toMatchObject({ submitStartedAt: at(-5000), nextPollAt: at(500), status: 'CREATED' });
    // Past the age limit, the same answer ends it.
    rig.clock.advance(599_999);
    for (let i = 0; i < 10; i++) rig.up.script('list', answer.list(busy));
    await rig.poller.runOnce();
    expect(rowOf(rig, 'b')).toMatchObject({ status: 'CREATED', nextPollAt: at(600_499) });
    rig.clock.advance(500);
    for (let i = 0; i < 10; i++) rig.up.script('list', answer.list(busy));
    await rig.poller.runOnce();
    expect(rowOf(rig, 'b').error).toMatch(/^SUBMISSION_UNCERTAIN: .* after the age limit;/);
    expect(rig.up.count('submit')).toBe(0);
  });

  test('reconciliation gaps are a quarter of the grace period, between 100 ms and 5 s', async () => {
    for (const [grace, gap] of [
      [200, 100],
      [2000, 500],
      [40_000, 5000],
    ] as const) {
      const rig = await pollerRig({ options: { reconcileGraceMs: grace } });
      withPatch(rig, 'g', { submitStartedAt: T0, submitAttempts: 1 });
      await rig.poller.runOnce();
      expect(rowOf(rig, 'g').nextPollAt).toEqual(at(gap));
      queued(rig, 'h');
      rig.up.script('submit', answer.http(503));
      rig.clock.advance(gap);
      await rig.poller.runOnce();
      expect(rowOf(rig, 'h').nextPollAt).toEqual(at(2 * gap));
      await rig.poller.stop();
    }
  });

  test('a failed search of the list is retried with backoff; past the age limit it fails SUBMISSION_UNCERTAIN', async () => {
    const rig = await pollerRig();
    withPatch(rig, 'l', { submitStartedAt: T0, submitAttempts: 1 });
    withPatch(rig, 'x', { submitStartedAt: T0, submitAttempts: 1 }, { createdAt: at(-600_001) });
    rig.up.script('list', answer.http(500, 'list broke'), answer.http(500, 'list broke'));
    await rig.poller.runOnce();
    expect(rowOf(rig, 'l')).toMatchObject({ attempts: 1, error: 'upstream answered HTTP 500: list broke', nextPollAt: at(375), status: 'CREATED', version: 2 });
    expect(rowOf(rig, 'x')).toMatchObject({
      status: 'FAILED',
      error:
        'SUBMISSION_UNCERTAIN: upstream never confirmed a task for this prediction within the age limit; it may still run and be billed upstream (last error: upstream answered HTTP 500: list broke)',
    });
    expect(logged(rig, 'reconcile failed; will retry')).toEqual([expect.objectContaining({ predictionId: 'l', attempts: 1, retryInMs: 375 })]);
  });

  test('429 with Retry-After: every upstream request pauses that long (capped), the intent is withdrawn, and the first success resumes', async () => {
    const rig = await pollerRig();
    queued(rig, 'q');
    rig.up.script('submit', answer.http(429, 'slow down', { 'retry-after': '3' }));
    await rig.poller.runOnce();
    expect(rig.seen('paused')).toEqual([expect.objectContaining({ kind: 'rate', reason: 'upstream rate limit: pausing all upstream requests', until: at(3000).getTime(), streak: 1, since: T0.getTime() })]);
    expect(rowOf(rig, 'q')).toMatchObject({ attempts: 1, error: 'upstream answered HTTP 429: slow down', submitAttempts: 0, submitStartedAt: null, nextPollAt: at(3000), status: 'CREATED' });
    expect(rig.poller.health()).toEqual({ running: false, pauses: [expect.objectContaining({ kind: 'rate' })] });
    rig.clock.advance(2999);
    await rig.poller.runOnce();
    expect(rig.up.count('submit')).toBe(1);
    rig.clock.advance(1);
    await rig.poller.runOnce();
    expect(rig.up.count('submit')).toBe(2);
    expect(rig.seen('resumed')).toEqual([{ kind: 'rate' }]);
    expect(rowOf(rig, 'q')).toMatchObject({ upstreamId: 'task-1', attempts: 0, error: null, submitAttempts: 1 });
    expect(rig.poller.health().pauses).toEqual([]);
    expect(logged(rig, 'pause over: upstream work resumes')).toEqual([expect.objectContaining({ kind: 'rate' })]);
  });

  test('a Retry-After longer than retryAfterMaxMs is cut to it', async () => {
    const rig = await pollerRig({ options: { retryAfterMaxMs: 5000 } });
    queued(rig, 'q');
    rig.up.script('submit', answer.http(429, 'slow down', { 'retry-after': '100' }));
    await rig.poller.runOnce();
    expect(must(rig.seen('paused')[0]).until).toBe(at(5000).getTime());
    expect(rowOf(rig, 'q').nextPollAt).toEqual(at(5000));
  });

  test('connection refused: certainly not sent, retried with growing backoff; the same complaint is not rewritten', async () => {
    const client = new WaveSpeedClient({ baseUrl: `http://127.0.0.1:${await freePort()}`, apiKey: 'k', timeoutMs: 2000 });
    const rig = await pollerRig({ options: { client } });
    queued(rig, 'n');
    await rig.poller.runOnce();
    const first = rowOf(rig, 'n');
    expect(first).toMatchObject({ attempts: 1, submitAttempts: 0, submitStartedAt: null, nextPollAt: at(375), version: 2, status: 'CREATED' });
    expect(first.error).toMatch(/ECONNREFUSED/);
    expect(rig.seen('uncertain')).toEqual([]);
    rig.clock.advance(375);
    await rig.poller.runOnce();
    expect(rowOf(rig, 'n')).toMatchObject({ attempts: 2, nextPollAt: at(375 + 750), version: 2, error: first.error });
    expect(logged(rig, 'submission failed; will retry').map((l) => l.retryInMs)).toEqual([375, 750]);
  });

  test('401: the account pauses, the prediction waits as it is with the reason in error; a repeat is no new pause or version', async () => {
    const rig = await pollerRig();
    queued(rig, 'k');
    rig.up.script('submit', answer.http(401, 'bad key'), answer.http(401, 'bad key'));
    await rig.poller.runOnce();
    const message = 'upstream answered HTTP 401: bad key';
    expect(rig.seen('paused')).toEqual([expect.objectContaining({ kind: 'account', reason: `upstream refused the account: ${message}`, until: at(750).getTime(), streak: 1, since: T0.getTime() })]);
    expect(rowOf(rig, 'k')).toMatchObject({ status: 'CREATED', error: message, attempts: 0, nextPollAt: T0, submitAttempts: 0, submitStartedAt: null, version: 2 });
    rig.clock.advance(750);
    await rig.poller.runOnce();
    expect(rig.up.count('submit')).toBe(2);
    expect(rig.seen('paused')).toHaveLength(1);
    expect(rowOf(rig, 'k').version).toBe(2);
    expect(must(rig.poller.health().pauses[0]).streak).toBe(2);
  });
});

describe('image upload', () => {
  const dataUri = `data:image/png;base64,${Buffer.from('png bytes').toString('base64')}`;

  test('a kept image is uploaded once, its URL stored and sent in its place', async () => {
    const rig = await pollerRig();
    const { name } = rig.images.put(dataUri);
    queued(rig, 'i', { imageFile: name, hasImage: true });
    withPatch(rig, 'j', { imageUploadUrl: 'https://up.example/uploads/77.jpg' }, { imageFile: name, hasImage: true });
    await rig.poller.runOnce();
    expect(rig.up.count('upload')).toBe(1);
    const upload = must(rig.up.requests.find((r) => r.route === 'upload'));
    expect(upload.body).toContain('png bytes');
    expect(upload.body).toContain(`filename="${name}"`);
    expect(upload.body).toContain('image/png');
    expect(rig.seen('uploaded')).toEqual([{ id: 'i', url: 'https://up.example/uploads/1.jpg' }]);
    expect(rowOf(rig, 'i')).toMatchObject({ imageUploadUrl: 'https://up.example/uploads/1.jpg', upstreamId: expect.any(String) });
    const images = rig.up.requests.filter((r) => r.route === 'submit').map((r) => JSON.parse(r.body).image);
    expect(images.sort()).toEqual(['https://up.example/uploads/1.jpg', 'https://up.example/uploads/77.jpg']);
  });

  test('an upload refused (400) fails the prediction; a 5xx is retried as an upload, never reconciled; nothing is submitted', async () => {
    const rig = await pollerRig();
    const { name } = rig.images.put(dataUri);
    queued(rig, 'r', { imageFile: name, hasImage: true });
    rig.up.script('upload', answer.http(400, 'bad image'));
    await rig.poller.runOnce();
    expect(rowOf(rig, 'r')).toMatchObject({ status: 'FAILED', error: 'upstream refused the image upload: upstream answered HTTP 400: bad image' });
    queued(rig, 's', { imageFile: name, hasImage: true });
    rig.up.script('upload', answer.http(503, 'busy'));
    await rig.poller.runOnce();
    expect(rowOf(rig, 's')).toMatchObject({ status: 'CREATED', attempts: 1, error: 'upstream answered HTTP 503: busy', submitAttempts: 0, submitStartedAt: null, nextPollAt: at(375) });
    expect(rig.seen('uncertain')).toEqual([]);
    expect(rig.up.count('submit')).toBe(0);
    expect(logged(rig, 'upload failed; will retry')).toHaveLength(1);
  });

  test('an image file with no image store is an upload failure, retried', async () => {
    const rig = await pollerRig({ noImages: true });
    queued(rig, 'z', { imageFile: `${'a'.repeat(64)}.png`, hasImage: true });
    await rig.poller.runOnce();
    expect(rowOf(rig, 'z')).toMatchObject({ attempts: 1, error: 'an image file with no image store configured', submitAttempts: 0 });
    expect(rig.up.requests).toEqual([]);
  });
});

describe('polling', () => {
  test('a failed task ends FAILED with upstream\'s reason', async () => {
    const rig = await pollerRig();
    polling(rig, 'f', 'task-f');
    rig.up.set('task-f', 'failed', { error: 'moderation' });
    await rig.poller.runOnce();
    expect(rowOf(rig, 'f')).toMatchObject({ status: 'FAILED', error: 'moderation', nextPollAt: null, completedAt: T0, pollCount: 1 });
    expect(rig.seen('failed')).toEqual([{ id: 'f', error: 'moderation' }]);
    expect(rig.seen('polled')).toEqual([{ id: 'f', status: 'failed' }]);
  });

  test('an unknown status is logged and polled on, unchanged', async () => {
    const rig = await pollerRig();
    polling(rig, 'w', 'task-w', 'weird');
    await rig.poller.runOnce();
    expect(rowOf(rig, 'w')).toMatchObject({ status: 'CREATED', pollCount: 1, version: 1, nextPollAt: at(1000) });
    expect(logged(rig, 'upstream sent an unknown status; polling on')).toEqual([expect.objectContaining({ predictionId: 'w', status: 'weird' })]);
  });

  test('404: FAILED at once after one read', async () => {
    const rig = await pollerRig();
    withPatch(rig, 'g', { upstreamId: 'task-gone', submittedAt: T0 });
    await rig.poller.runOnce();
    expect(rowOf(rig, 'g')).toMatchObject({ status: 'FAILED', error: 'upstream no longer has this prediction: upstream answered HTTP 404: no such task' });
    expect(rig.up.count('result')).toBe(1);
  });

  test('a 5xx or a body that is not JSON is retried with backoff, the error not shown, the schedule kept', async () => {
    const rig = await pollerRig();
    polling(rig, 'p', 'task-p');
    rig.up.script('result', answer.http(500, 'down'), answer.malformed());
    await rig.poller.runOnce();
    expect(rowOf(rig, 'p')).toMatchObject({ attempts: 1, error: null, version: 1, nextPollAt: at(375), pollCount: 0 });
    rig.clock.advance(375);
    await rig.poller.runOnce();
    expect(rowOf(rig, 'p')).toMatchObject({ attempts: 2, error: null, version: 1, nextPollAt: at(375 + 750) });
    expect(logged(rig, 'poll failed; will retry')).toHaveLength(2);
    rig.clock.advance(750);
    await rig.poller.runOnce();
    expect(rowOf(rig, 'p')).toMatchObject({ attempts: 0, status: 'PROCESSING', pollCount: 1 });
  });

  test('past the age limit: FAILED after one last look, unless that look finds it final; a failed last look fails too', async () => {
    const rig = await pollerRig();
    polling(rig, 'a', 'task-a');
    polling(rig, 'b', 'task-b', 'completed');
    polling(rig, 'c', 'task-c');
    polling(rig, 'w', 'task-w', 'weird');
    rig.clock.advance(600_001);
    rig.up.script('result', (q, res, up) => (q.taskId === 'task-c' ? answer.http(500, 'down') : answer.record(must(up.tasks.find((t) => t.id === q.taskId)).status))(q, res, up));
    rig.up.script('result', (q, res, up) => (q.taskId === 'task-c' ? answer.http(500, 'down') : answer.record(must(up.tasks.find((t) => t.id === q.taskId)).status))(q, res, up));
    rig.up.script('result', (q, res, up) => (q.taskId === 'task-c' ? answer.http(500, 'down') : answer.record(must(up.tasks.find((t) => t.id === q.taskId)).status))(q, res, up));
    await rig.poller.runOnce();
    expect(rowOf(rig, 'a')).toMatchObject({ status: 'FAILED', error: 'gave up: no final status from upstream within 600 s', nextPollAt: null });
    expect(rowOf(rig, 'b').status).toBe('COMPLETED');
    expect(rowOf(rig, 'c')).toMatchObject({ status: 'FAILED', error: 'gave up: no final status from upstream within 600 s (last error: upstream answered HTTP 500: down)' });
    expect(rig.up.count('result')).toBe(4);
    expect(rowOf(rig, 'w')).toMatchObject({ status: 'FAILED', error: 'gave up: no final status from upstream within 600 s' });
  });

  test('outputs are kept before COMPLETED is written; a transient download failure retries the poll, up to 5 tries in all', async () => {
    const rig = await pollerRig({ media: true });
    const outs = [`${rig.up.url}/out/a.mp4`, `${rig.up.url}/out/b.mp4`];
    polling(rig, 'k', 'task-k', 'completed');
    rig.up.set('task-k', 'completed', { outputs: outs });
    await rig.poller.runOnce();
    expect(rowOf(rig, 'k')).toMatchObject({ status: 'COMPLETED', outputs: outs, keptOutputs: [`/media/${sha('video bytes of /out/a.mp4')}.mp4`, `/media/${sha('video bytes of /out/b.mp4')}.mp4`] });

    polling(rig, 't', 'task-t', 'completed', { attempts: 3 });
    rig.up.set('task-t', 'completed', { outputs: [`${rig.up.url}/out/t.mp4`] });
    rig.up.script('output', answer.http(503));
    await rig.poller.runOnce();
    expect(rowOf(rig, 't')).toMatchObject({ status: 'CREATED', attempts: 4, keptOutputs: [], nextPollAt: at(3000) });
    rig.up.script('output', answer.http(503));
    rig.clock.advance(3000);
    await rig.poller.runOnce();
    expect(rowOf(rig, 't')).toMatchObject({ status: 'COMPLETED', keptOutputs: [], outputs: [`${rig.up.url}/out/t.mp4`], attempts: 0 });
    expect(logged(rig, 'could not keep outputs; completing with upstream URLs only')).toEqual([expect.objectContaining({ predictionId: 't', err: expect.stringContaining('HTTP 503') })]);
  });

  test('a permanent download failure completes at once with upstream URLs only; no outputs, no download', async () => {
    const rig = await pollerRig({ media: true });
    polling(rig, 'p', 'task-p', 'completed');
    rig.up.set('task-p', 'completed', { outputs: [`${rig.up.url}/out/p.mp4`] });
    rig.up.script('output', answer.http(404));
    polling(rig, 'e', 'task-e', 'completed');
    await rig.poller.runOnce();
    expect(rowOf(rig, 'p')).toMatchObject({ status: 'COMPLETED', keptOutputs: [], attempts: 0 });
    expect(rowOf(rig, 'e')).toMatchObject({ status: 'COMPLETED', keptOutputs: [] });
    expect(rig.up.count('output')).toBe(1);
  });

  test('guards: a row that is gone, final, or not scheduled is not stepped', async () => {
    let extra: string[] = [];
    const rig = await pollerRig({ wrapPredictions: (p) => ({ ...p, due: async (now, limit) => [...(await p.due(now, limit)), ...extra] }) });
    polling(rig, 'done', 'task-done', 'processing', { status: 'COMPLETED', nextPollAt: null });
    polling(rig, 'idle', 'task-idle', 'processing', { nextPollAt: null });
    extra = ['missing', 'done', 'idle'];
    await rig.poller.runOnce();
    expect(rig.up.requests).toEqual([]);
    expect(rig.events).toEqual([]);
    expect(logged(rig, 'poller step failed')).toEqual([]);
  });
});

describe('stop', () => {
  test('a poll in flight is cancelled: no attempt spent, due again at once', async () => {
    const rig = await pollerRig({ clientTimeoutMs: 30_000 });
    polling(rig, 'p', 'task-p');
    const held = rig.up.hold('result');
    rig.poller.start();
    await held.reached;
    rig.clock.advance(40);
    const began = Date.now();
    await rig.poller.stop();
    expect(Date.now() - began).toBeLessThan(5000);
    expect(rowOf(rig, 'p')).toMatchObject({ attempts: 0, nextPollAt: at(40), error: null, status: 'CREATED', version: 1 });
    expect(rig.poller.health().running).toBe(false);
  });

  test('a submission in flight is let finish; stop resolves after its outcome is written', async () => {
    const rig = await pollerRig();
    queued(rig, 's');
    const held = rig.up.hold('submit');
    rig.poller.start();
    await held.reached;
    let stopped = false;
    const stopping = rig.poller.stop().then(() => (stopped = true));
    await new Promise((r) => setImmediate(r));
    expect(stopped).toBe(false);
    held.release();
    await stopping;
    expect(rowOf(rig, 's')).toMatchObject({ upstreamId: 'task-1', submitAttempts: 1, submitStartedAt: null });
    expect(rig.up.count('submit')).toBe(1);
  });

  test('a submission that times out while stopping is uncertain, not retried blindly', async () => {
    const rig = await pollerRig({ clientTimeoutMs: 300 });
    queued(rig, 't');
    const held = rig.up.hold('submit');
    rig.poller.start();
    await held.reached;
    await rig.poller.stop();
    expect(rowOf(rig, 't')).toMatchObject({ submitAttempts: 1, submitStartedAt: T0, upstreamId: null });
    expect(must(rowOf(rig, 't').error)).toMatch(/^submission outcome unknown, looking for it upstream: POST \/api\/v3\/minimax\/video-01: no answer within 300 ms/);
  });
});

describe('crashes', () => {
  test('a storage error in a step pauses all work; the row cools down, then a commit ends the pause', async () => {
    let fail = true;
    const rig = await pollerRig({
      wrapRecorder: (r) => ({
        record: r.record,
        reschedule: async (id, patch) => {
          if (fail) throw diskFull();
          return r.reschedule(id, patch);
        },
      }),
    });
    queued(rig, 'd');
    await rig.poller.runOnce();
    expect(rig.seen('paused')).toEqual([expect.objectContaining({ kind: 'storage', reason: 'storage unavailable: SQLITE_FULL: database or disk is full', until: at(750).getTime(), streak: 1, since: T0.getTime() })]);
    expect(rig.up.count('submit')).toBe(0);
    expect(rowOf(rig, 'd')).toMatchObject({ submitAttempts: 0, submitStartedAt: null });
    fail = false;
    // Past the pause but inside the cooldown (maxMs): not stepped.
    rig.clock.advance(7999);
    await rig.poller.runOnce();
    expect(rig.up.count('submit')).toBe(0);
    rig.clock.advance(1);
    await rig.poller.runOnce();
    expect(rig.up.count('submit')).toBe(1);
    expect(rig.seen('resumed')).toEqual([{ kind: 'storage' }]);
  });

  test('a step started before a storage pause that then succeeds does not end it (its writes may predate the failure)', async () => {
    const rig = await pollerRig({
      wrapRecorder: (r) => ({
        record: async (id, patch) => {
          if (id === 'bad') throw diskFull();
          return r.record(id, patch);
        },
        reschedule: async (id, patch) => {
          if (id === 'bad') throw diskFull();
          return r.reschedule(id, patch);
        },
      }),
    });
    polling(rig, 'ok', 'task-ok');
    polling(rig, 'bad', 'task-bad');
    const held = [rig.up.hold('result'), rig.up.hold('result')];
    const pass = rig.poller.runOnce();
    const reached = await Promise.all(held.map((h) => h.reached));
    const byTask = (task: string) => must(held[reached.findIndex((q) => q.taskId === task)]);
    // Both steps are under way; the failure comes a moment later.
    rig.clock.advance(1);
    const paused = nextPollerEvent(rig.poller, 'paused');
    byTask('task-bad').release();
    await paused;
    byTask('task-ok').release(answer.record('completed', { outputs: ['https://up.example/out/ok.mp4'] }));
    await pass;
    expect(rowOf(rig, 'ok').status).toBe('COMPLETED');
    expect(rig.seen('paused')).toEqual([expect.objectContaining({ kind: 'storage', streak: 1, heldAt: T0.getTime() + 1 })]);
    expect(rig.seen('resumed')).toEqual([]);
    expect(rig.poller.health().pauses.map((p) => p.kind)).toEqual(['storage']);
  });

  test('any other exception: logged, the row pushed back by maxMs and held back in memory', async () => {
    let fail = 1;
    const rig = await pollerRig({
      wrapPredictions: (p) => ({
        ...p,
        findById: async (id) => {
          if (fail-- > 0) throw new Error('boom');
          return p.findById(id);
        },
      }),
    });
    polling(rig, 'x', 'task-x');
    await rig.poller.runOnce();
    expect(logged(rig, 'poller step failed')).toEqual([expect.objectContaining({ predictionId: 'x', level: 50 })]);
    expect(rowOf(rig, 'x').nextPollAt).toEqual(at(8000));
    expect(rig.events).toEqual([]);
    // Made due again by hand, it is still held back until the cooldown ends.
    rig.store.update('x', { nextPollAt: T0 });
    await rig.poller.runOnce();
    expect(rig.up.count('result')).toBe(0);
    rig.clock.advance(8000);
    await rig.poller.runOnce();
    expect(rig.up.count('result')).toBe(1);
  });

  test('a crash whose push-back also fails on storage pauses for storage', async () => {
    let fail = true;
    const rig = await pollerRig({
      wrapPredictions: (p) => ({
        ...p,
        findById: async (id) => {
          if (fail) throw new Error('boom');
          return p.findById(id);
        },
      }),
      wrapRecorder: (r) => ({
        record: r.record,
        reschedule: async (id, patch) => {
          if (fail) throw diskFull();
          return r.reschedule(id, patch);
        },
      }),
    });
    polling(rig, 'x', 'task-x');
    await rig.poller.runOnce();
    expect(rig.seen('paused')).toEqual([expect.objectContaining({ kind: 'storage', reason: 'storage unavailable: SQLITE_FULL: database or disk is full' })]);
    fail = false;
  });
});

/** Waits (with a deadline) until the loop sets a timer of `ms`: it has gone to sleep for that long. */
async function sleepsFor(rig: Rig, ms: number, deadlineMs = 5000): Promise<void> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`the loop never slept ${ms} ms (timers: ${rig.clock.delays.join(', ')})`)), deadlineMs);
  });
  try {
    for (let i = 0; i < 50; i++) if ((await Promise.race([rig.clock.nextTimer(), deadline])) === ms) return;
    throw new Error(`the loop never slept ${ms} ms (timers: ${rig.clock.delays.join(', ')})`);
  } finally {
    clearTimeout(timer);
  }
}
const turn = () => new Promise((r) => setImmediate(r));

describe('the loop', () => {
  test('idles, wakes on a nudge, sleeps until the next poll; one loop however often started; stop ends it', async () => {
    const rig = await pollerRig();
    const idle = sleepsFor(rig, 5000);
    rig.poller.start();
    rig.poller.start();
    await idle;
    expect(rig.clock.delays).toEqual([5000]);
    expect(rig.poller.health()).toEqual({ running: true, pauses: [] });
    queued(rig, 'a');
    const firstPoll = sleepsFor(rig, 1000);
    rig.poller.nudge();
    rig.poller.nudge();
    await firstPoll;
    expect(rig.up.count('submit')).toBe(1);
    const polled = nextPollerEvent(rig.poller, 'polled');
    rig.clock.advance(1000);
    await polled;
    await rig.poller.stop();
    expect(rig.poller.health().running).toBe(false);
    const timers = rig.clock.delays.length;
    rig.clock.advance(60_000);
    await turn();
    expect(rig.clock.delays.length).toBe(timers);
    expect(rig.up.count('result')).toBe(1);
  });

  test('stop() during a pass ends the loop after that pass, without waiting out the sleep it would have begun', async () => {
    let reached!: () => void;
    const inPass = new Promise<void>((r) => (reached = r));
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    let block = false;
    const rig = await pollerRig({
      wrapPredictions: (p) => ({
        ...p,
        nextDueAt: async (...args) => {
          if (block) {
            reached();
            await gate;
          }
          return p.nextDueAt(...args);
        },
      }),
    });
    const idle = sleepsFor(rig, 5000);
    rig.poller.start();
    await idle;
    block = true;
    rig.poller.nudge();
    await inPass;
    let stopped = false;
    const stopping = rig.poller.stop().then(() => (stopped = true));
    release();
    // The manual clock never moves here: a loop that went to sleep after this pass would never end.
    const deadline = new Promise((r) => setTimeout(r, 3000).unref());
    await Promise.race([stopping, deadline]);
    expect(stopped).toBe(true);
    expect(rig.clock.delays).toEqual([5000]);
  });

  test('a pass that threw after starting its work does not end the crash pause: one pause, one log line, one resume', async () => {
    let failures = 2;
    const rig = await pollerRig({
      wrapPredictions: (p) => ({
        ...p,
        nextDueAt: async (...args) => {
          if (failures > 0) {
            failures--;
            throw new Error('database disk image is malformed (injected)');
          }
          return p.nextDueAt(...args);
        },
      }),
    });
    const firstPause = nextPollerEvent(rig.poller, 'paused');
    rig.poller.start();
    const [pause] = await firstPause;
    expect(pause).toMatchObject({ kind: 'crash', reason: 'poller pass failed: database disk image is malformed (injected)', streak: 1 });
    // The second pass starts its (empty) work, then fails the same way: the same pause goes on.
    const secondSleep = rig.clock.nextTimer();
    rig.clock.advance(pause.until - rig.clock.t);
    await secondSleep;
    expect(failures).toBe(0);
    expect(rig.seen('resumed')).toEqual([]);
    const resumed = nextPollerEvent(rig.poller, 'resumed');
    rig.clock.advance(60_000);
    expect(await resumed).toEqual([{ kind: 'crash' }]);
    expect(rig.seen('paused')).toHaveLength(1);
    expect(logged(rig, 'poller pass failed: database disk image is malformed (injected)')).toHaveLength(1);
    await rig.poller.stop();
  });

  test('sleeps until the sooner of the next poll, the next deadline and idleMs', async () => {
    const rig = await pollerRig();
    polling(rig, 'p', 'task-p', 'processing', { nextPollAt: at(2500) });
    rig.poller.start();
    await sleepsFor(rig, 2500);
    await rig.poller.stop();

    const rig2 = await pollerRig();
    polling(rig2, 'p', 'task-p', 'processing', { nextPollAt: at(9000) });
    rig2.poller.start();
    await sleepsFor(rig2, 5000);
    await rig2.poller.stop();

    const rig3 = await pollerRig();
    polling(rig3, 'p', 'task-p', 'processing', { nextPollAt: at(4000) });
    rig3.store.update('p', { status: 'PROCESSING' }, T0);
    rig3.store.insert(newRow('d', { deadlineAt: at(1200), nextPollAt: at(3000) }));
    rig3.store.update('d', { upstreamId: 'task-d', submittedAt: T0 });
    rig3.poller.start();
    await sleepsFor(rig3, 1200);
    const deleted = nextPollerEvent(rig3.poller, 'deletedUpstream');
    rig3.clock.advance(1200);
    expect(await deleted).toEqual([{ upstreamIds: ['task-d'] }]);
    expect(rowOf(rig3, 'd')).toMatchObject({ status: 'CANCELED', error: 'canceled: the deadline of 1 s passed before the prediction was final', nextPollAt: null, completedAt: at(1200) });
    expect(rowOf(rig3, 'p').status).toBe('PROCESSING');
  });

  test('with every slot busy and more due, it looks again within a second', async () => {
    const rig = await pollerRig({ options: { concurrency: 1 } });
    queued(rig, 'a');
    queued(rig, 'b');
    const held = rig.up.hold('submit');
    const busy = sleepsFor(rig, 1000);
    rig.poller.start();
    await held.reached;
    await busy;
    expect(rig.clock.delays).toEqual([1000]);
    expect(rig.up.count('submit')).toBe(1);
    held.release();
    await nextPollerEvent(rig.poller, 'submitted', (s) => s.id === 'b');
    expect(rig.up.count('submit')).toBe(2);
  });

  test('a rate pause holds the loop until it ends (or until a sooner deadline); then work resumes', async () => {
    const rig = await pollerRig();
    queued(rig, 'q');
    rig.up.script('submit', answer.http(429, 'slow down', { 'retry-after': '3' }));
    rig.poller.start();
    await sleepsFor(rig, 3000);
    withPatch(rig, 'd', { upstreamId: 'task-d', submittedAt: T0, nextPollAt: at(9000) }, { deadlineAt: at(2000) });
    rig.poller.nudge();
    await sleepsFor(rig, 2000);
    const resumed = nextPollerEvent(rig.poller, 'resumed');
    const submitted = nextPollerEvent(rig.poller, 'submitted');
    rig.clock.advance(3000);
    expect(await resumed).toEqual([{ kind: 'rate' }]);
    await submitted;
    expect(rig.up.count('submit')).toBe(2);
    expect(rowOf(rig, 'd').status).toBe('CANCELED');
  });

  test('an account pause is probed with one free list request once its backoff runs out; a failed probe holds on', async () => {
    const rig = await pollerRig();
    queued(rig, 'k');
    rig.up.script('submit', answer.http(401, 'bad key'));
    rig.up.script('list', answer.http(401, 'bad key'));
    rig.poller.start();
    await sleepsFor(rig, 750);
    expect(rig.up.count('list')).toBe(0);
    const again = sleepsFor(rig, 1500);
    rig.clock.advance(750);
    await again;
    expect(rig.up.count('list')).toBe(1);
    expect(JSON.parse(must(rig.up.requests.at(-1)).body)).toEqual({ page: 1, page_size: 1 });
    expect(rig.seen('paused')).toHaveLength(1);
    expect(rig.poller.health().pauses).toEqual([expect.objectContaining({ kind: 'account', streak: 2, until: at(750 + 1500).getTime() })]);
    const resumed = nextPollerEvent(rig.poller, 'resumed');
    const submitted = nextPollerEvent(rig.poller, 'submitted');
    rig.clock.advance(1500);
    expect(await resumed).toEqual([{ kind: 'account' }]);
    await submitted;
    expect(rig.up.count('list')).toBe(2);
    expect(rig.up.count('submit')).toBe(2);
  });

  test('a pass that throws is logged once and retried with backoff; the next pass that runs ends the pause', async () => {
    let fail = 2;
    const rig = await pollerRig({
      wrapPredictions: (p) => ({
        ...p,
        due: async (now, limit) => {
          if (fail-- > 0) throw new Error('index page broken');
          return p.due(now, limit);
        },
      }),
    });
    rig.poller.start();
    await sleepsFor(rig, 750);
    expect(rig.seen('paused')).toEqual([expect.objectContaining({ kind: 'crash', reason: 'poller pass failed: index page broken', until: at(750).getTime(), streak: 1, since: T0.getTime() })]);
    const again = sleepsFor(rig, 1500);
    rig.clock.advance(750);
    await again;
    expect(rig.seen('paused')).toHaveLength(1);
    expect(rig.seen('resumed')).toEqual([]);
    const resumed = nextPollerEvent(rig.poller, 'resumed');
    rig.clock.advance(1500);
    expect(await resumed).toEqual([{ kind: 'crash' }]);
    expect(logged(rig, 'poller pass failed: index page broken')).toHaveLength(1);
  });

  test('a storage failure in a pass pauses for storage; a probe write that commits ends it', async () => {
    let fail = 1;
    let probes = 0;
    const rig = await pollerRig({
      wrapPredictions: (p) => ({
        ...p,
        nextDueAt: async (busy) => {
          if (fail-- > 0) throw diskFull();
          return p.nextDueAt(busy);
        },
        probeWrite: async () => {
          probes++;
          return p.probeWrite();
        },
      }),
    });
    rig.poller.start();
    await sleepsFor(rig, 750);
    expect(rig.seen('paused')).toEqual([expect.objectContaining({ kind: 'storage', reason: 'poller pass failed: database or disk is full' })]);
    expect(probes).toBe(0);
    const resumed = nextPollerEvent(rig.poller, 'resumed');
    rig.clock.advance(750);
    expect(await resumed).toEqual([{ kind: 'storage' }]);
    expect(probes).toBe(1);
  });
});

describe('concurrency and admission', () => {
  test('never more steps at once than `concurrency`; polls before submissions', async () => {
    const rig = await pollerRig({ options: { concurrency: 2 } });
    for (const id of ['a', 'b', 'c', 'd']) queued(rig, id);
    const h1 = rig.up.hold('submit');
    const h2 = rig.up.hold('submit');
    const pass = rig.poller.runOnce();
    await h1.reached;
    await h2.reached;
    h1.release();
    h2.release();
    await pass;
    expect(rig.up.count('submit')).toBe(2);
    await rig.poller.runOnce();
    expect(rig.up.count('submit')).toBe(4);

    const one = await pollerRig({ options: { concurrency: 1 } });
    queued(one, 'q');
    polling(one, 'p', 'task-p');
    await one.poller.runOnce();
    expect(one.up.requests.map((r) => r.route)).toEqual(['result']);
  });

  test('the tier\'s limit on tasks upstream holds submissions back', async () => {
    const rig = await pollerRig({ limits: { maxConcurrent: 1 } });
    queued(rig, 'a');
    queued(rig, 'b');
    await rig.poller.runOnce();
    await rig.poller.runOnce();
    expect(rig.up.count('submit')).toBe(1);
  });
});

describe('cancel', () => {
  test('a queued prediction: CANCELED, nothing sent; an unknown id: undefined; a final one is returned as it is', async () => {
    const rig = await pollerRig();
    queued(rig, 'q');
    const row = await rig.poller.cancel('q');
    expect(row).toMatchObject({ id: 'q', status: 'CANCELED', error: null, completedAt: T0, nextPollAt: null });
    expect(rowOf(rig, 'q')).toEqual(row);
    expect(rig.events).toEqual([
      { name: 'recorded', args: [{ id: 'q', status: 'CANCELED' }] },
      { name: 'queueMoved', args: [] },
    ]);
    expect(logged(rig, 'prediction canceled')).toEqual([expect.objectContaining({ predictionId: 'q', reason: 'asked by the client' })]);
    expect(await rig.poller.cancel('nope')).toBeUndefined();
    expect(await rig.poller.cancel('q')).toEqual(row);
    expect(rig.events).toHaveLength(2);
    expect(rig.up.requests).toEqual([]);
  });

  test('a prediction with a task: the task is deleted upstream once, whatever names it again', async () => {
    const rig = await pollerRig();
    polling(rig, 't', 'task-t');
    const row = await rig.poller.cancel('t', 'no longer wanted');
    expect(row).toMatchObject({ status: 'CANCELED', error: 'no longer wanted' });
    expect(rig.up.requests.map((r) => [r.route, r.body])).toEqual([['delete', JSON.stringify({ ids: ['task-t'] })]]);
    expect(rig.seen('deletedUpstream')).toEqual([{ upstreamIds: ['task-t'] }]);
    expect(logged(rig, 'prediction canceled')).toEqual([expect.objectContaining({ predictionId: 't', upstreamId: 'task-t', reason: 'no longer wanted' })]);
  });

  test('a refused delete is logged, and the prediction is CANCELED anyway', async () => {
    const rig = await pollerRig();
    polling(rig, 't', 'task-t');
    rig.up.script('delete', answer.http(500, 'nope'));
    expect(await rig.poller.cancel('t')).toMatchObject({ status: 'CANCELED' });
    expect(rig.seen('deletedUpstream')).toEqual([]);
    expect(logged(rig, 'could not delete canceled tasks upstream')).toEqual([expect.objectContaining({ upstreamIds: ['task-t'], err: 'upstream answered HTTP 500: nope' })]);
  });

  test('canceled while its submission is under way: the task that arrives is deleted, exactly once', async () => {
    const rig = await pollerRig();
    queued(rig, 's');
    const held = rig.up.hold('submit');
    const pass = rig.poller.runOnce();
    await held.reached;
    // The search for an orphan looks first before the task exists.
    rig.up.script('list', answer.list([]));
    expect(await rig.poller.cancel('s')).toMatchObject({ status: 'CANCELED', upstreamId: null });
    const deleted = nextPollerEvent(rig.poller, 'deletedUpstream');
    held.release();
    await pass;
    expect(await deleted).toEqual([{ upstreamIds: ['task-1'] }]);
    expect(logged(rig, 'a task arrived for a prediction already final; deleting it upstream')).toEqual([expect.objectContaining({ predictionId: 's', upstreamId: 'task-1' })]);
    expect(rig.seen('submitted')).toEqual([]);
    // The search for an orphan of the canceled submission finds the same task: not deleted twice.
    for (let i = 0; i < 4; i++) {
      rig.clock.advance(667);
      await turn();
      await turn();
    }
    expect(rig.up.count('delete')).toBe(1);
    expect(rowOf(rig, 's').status).toBe('CANCELED');
  });

  test('canceled after an uncertain submission: upstream\'s list is searched over the grace period, and the task deleted when it shows', async () => {
    const rig = await pollerRig();
    withPatch(rig, 'u', { submitStartedAt: T0, submitAttempts: 1 });
    rig.up.script('list', answer.list([]));
    const gap = rig.clock.nextTimer();
    await rig.poller.cancel('u');
    expect(await gap).toBe(667);
    expect(rig.up.count('list')).toBe(1);
    rig.up.set('task-late', 'processing', { input: { prompt: 'prompt of u' } });
    const deleted = nextPollerEvent(rig.poller, 'deletedUpstream');
    rig.clock.advance(667);
    expect(await deleted).toEqual([{ upstreamIds: ['task-late'] }]);
    expect(rig.up.count('list')).toBe(2);
  });

  test('a lifecycle recorder, when given, writes the cancel; a cancel it did not write returns the row as it is', async () => {
    const rig = await pollerRig({ options: { lifecycleRecorder: { record: async () => undefined, reschedule: async () => false } } });
    queued(rig, 'q');
    expect(await rig.poller.cancel('q')).toMatchObject({ status: 'CREATED' });
    expect(rig.events).toEqual([]);
  });

  test('a submission answered after this instance lost the row: the task is left to the row\'s new holder, never deleted', async () => {
    const rig = await pollerRig({
      wrapRecorder: (r) => ({ record: async (id, patch) => (patch.upstreamId ? undefined : r.record(id, patch)), reschedule: r.reschedule }),
    });
    queued(rig, 'l');
    await rig.poller.runOnce();
    expect(rig.up.count('submit')).toBe(1);
    expect(rig.up.count('delete')).toBe(0);
    expect(rig.seen('submitted')).toEqual([]);
    expect(logged(rig, 'lost the lease while submitting; the instance that holds the prediction now adopts its task')).toEqual([
      expect.objectContaining({ predictionId: 'l', upstreamId: 'task-1' }),
    ]);
  });
});

describe('pollNow (webhook deliveries)', () => {
  test('makes the prediction due now; again within 5 s only at the gap\'s end; a third in the gap is dropped', async () => {
    const rig = await pollerRig();
    polling(rig, 'p', 'task-p', 'processing', { nextPollAt: at(60_000) });
    const reset = () => rig.store.update('p', { nextPollAt: at(60_000) });
    rig.poller.pollNow('p');
    await turn();
    expect(rowOf(rig, 'p').nextPollAt).toEqual(T0);
    reset();
    rig.poller.pollNow('p');
    await turn();
    expect(rowOf(rig, 'p').nextPollAt).toEqual(at(5000));
    reset();
    rig.poller.pollNow('p');
    await turn();
    expect(rowOf(rig, 'p').nextPollAt).toEqual(at(60_000));
    rig.clock.advance(5000);
    rig.poller.pollNow('p');
    await turn();
    expect(rowOf(rig, 'p').nextPollAt).toEqual(at(10_000));
  });

  test('a delivery during a poll of the same prediction polls it once more after', async () => {
    const rig = await pollerRig();
    polling(rig, 'p', 'task-p');
    const held = rig.up.hold('result');
    const pass = rig.poller.runOnce();
    await held.reached;
    rig.poller.pollNow('p');
    held.release();
    await pass;
    await turn();
    expect(rowOf(rig, 'p')).toMatchObject({ status: 'PROCESSING', nextPollAt: T0 });
  });
});

describe('leases and the shared pause (the Postgres mode\'s hooks, over SQLite)', () => {
  function fakeLeases(rig: () => Rig, claim = true) {
    const calls = { claimDue: [] as unknown[][], claimQueued: [] as unknown[][], renew: [] as string[][], release: [] as (readonly string[] | undefined)[] };
    let renewed: (ids: readonly string[]) => void = () => {};
    const leases: Leases = {
      claimDue: async (now, limit, busy = []) => {
        calls.claimDue.push([now, limit, [...busy]]);
        return claim ? (await rig().predictions.due(now, limit)).filter((id) => !busy.includes(id)) : [];
      },
      claimQueued: async (now, limit, busy = []) => {
        calls.claimQueued.push([now, limit, [...busy]]);
        return claim ? rig().queue.due(now, limit, busy) : [];
      },
      renew: async (ids) => {
        calls.renew.push([...ids]);
        renewed(ids);
      },
      release: async (ids) => {
        calls.release.push(ids);
      },
    };
    return { leases, calls, renewal: () => new Promise<readonly string[]>((r) => (renewed = r)) };
  }

  test('work is claimed, polls first, each step\'s lease released after it, all of them on stop', async () => {
    let rig!: Rig;
    const { leases, calls } = fakeLeases(() => rig);
    rig = await pollerRig({ options: { leases, concurrency: 3 } });
    queued(rig, 'a');
    polling(rig, 'p', 'task-p');
    await rig.poller.runOnce();
    expect(calls.claimDue).toEqual([[T0, 3, []]]);
    expect(calls.claimQueued).toEqual([[T0, 2, ['p']]]);
    expect(calls.release.map((ids) => ids && [...ids]).sort()).toEqual([['a'], ['p']]);
    await rig.poller.stop();
    expect(calls.release.at(-1)).toBeUndefined();
    expect(calls.release).toHaveLength(3);
  });

  test('leases of steps in flight are renewed every third of LEASE_MS, and only while steps are in flight', async () => {
    let rig!: Rig;
    const { leases, renewal } = fakeLeases(() => rig);
    rig = await pollerRig({ options: { leases, leaseMs: 600 } });
    polling(rig, 'p', 'task-p');
    const held = rig.up.hold('result');
    const renewed = renewal();
    const started = Date.now();
    const heartbeat = await timersOf(
      200,
      async () => {
        rig.poller.start();
        await held.reached;
        expect(await renewed).toEqual(['p']);
        expect(Date.now() - started).toBeGreaterThanOrEqual(190);
        held.release();
        await rig.poller.stop();
      },
      { interval: true },
    );
    // The heartbeat (a 200 ms interval) is stopped with the poller: no renewal can come after.
    expect(heartbeat).toEqual({ set: 1, allCleared: true });
  });

  test('due work that another instance holds: the loop looks again after 500 ms, not at once', async () => {
    let rig!: Rig;
    const { leases } = fakeLeases(() => rig, false);
    rig = await pollerRig({ options: { leases } });
    polling(rig, 'p', 'task-p');
    rig.poller.start();
    await sleepsFor(rig, 500);
  });

  test('a 429 is shared with the other instances; a pause another instance shared holds this one, and is not shared back', async () => {
    const holds: [Date, string][] = [];
    let shared: { until: Date; reason: string } | undefined;
    const sharedPause: SharedPause = {
      hold: async (until, reason) => void holds.push([until, reason]),
      current: async () => shared,
    };
    const rig = await pollerRig({ options: { sharedPause } });
    queued(rig, 'q');
    rig.up.script('submit', answer.http(429, 'slow down', { 'retry-after': '3' }));
    await rig.poller.runOnce();
    expect(holds).toEqual([[at(3000), 'upstream rate limit: pausing all upstream requests']]);

    const rig2 = await pollerRig({ options: { sharedPause } });
    shared = { until: at(4000), reason: 'another instance got a 429' };
    rig2.poller.start();
    await sleepsFor(rig2, 4000);
    expect(rig2.seen('paused')).toEqual([expect.objectContaining({ kind: 'rate', reason: 'another instance got a 429', until: at(4000).getTime(), streak: 1, since: T0.getTime() })]);
    expect(holds).toHaveLength(1);
  });

  test('storage and crash pauses stay with this instance', async () => {
    const holds: unknown[] = [];
    const sharedPause: SharedPause = { hold: async (...a) => void holds.push(a), current: async () => undefined };
    let fail = 1;
    const rig = await pollerRig({
      options: { sharedPause },
      wrapRecorder: (r) => ({
        record: r.record,
        reschedule: async (id, patch) => {
          if (fail-- > 0) throw diskFull();
          return r.reschedule(id, patch);
        },
      }),
    });
    queued(rig, 'q');
    await rig.poller.runOnce();
    expect(rig.seen('paused')).toHaveLength(1);
    expect(holds).toEqual([]);
  });
});

describe('more edges', () => {
  test('canceled between the read and the intent write: nothing is sent', async () => {
    let cancelOnRead = true;
    let rig!: Rig;
    rig = await pollerRig({
      wrapPredictions: (p) => ({
        ...p,
        findById: async (id) => {
          const row = await p.findById(id);
          if (cancelOnRead) {
            cancelOnRead = false;
            rig.store.update(id, { status: 'CANCELED', nextPollAt: null, completedAt: T0 }, T0);
          }
          return row;
        },
      }),
    });
    queued(rig, 'c');
    await rig.poller.runOnce();
    expect(rig.up.requests).toEqual([]);
    expect(rowOf(rig, 'c')).toMatchObject({ status: 'CANCELED', submitAttempts: 0, submitStartedAt: null });
  });

  test('a submission answered failed at once ends FAILED with upstream\'s reason', async () => {
    const rig = await pollerRig();
    queued(rig, 'f');
    rig.up.script('submit', answer.record('failed', { id: 'task-f', error: 'flagged' }));
    await rig.poller.runOnce();
    expect(rowOf(rig, 'f')).toMatchObject({ status: 'FAILED', error: 'flagged', upstreamId: 'task-f', completedAt: T0, nextPollAt: null, submitAttempts: 1 });
    expect(rig.seen('failed')).toEqual([{ id: 'f', error: 'flagged' }]);
    expect(rig.seen('submitted')).toEqual([{ id: 'f', upstreamId: 'task-f', adopted: false }]);
  });

  test('a row with a task but no submission time is scheduled from its creation', async () => {
    const rig = await pollerRig();
    withPatch(rig, 'n', { upstreamId: 'task-n' }, { createdAt: at(-20_000) });
    rig.up.set('task-n', 'processing');
    await rig.poller.runOnce();
    expect(rowOf(rig, 'n')).toMatchObject({ status: 'PROCESSING', nextPollAt: at(4000) });
  });

  test('a download in flight on stop: not completed without outputs, due again at once, no attempt spent', async () => {
    const rig = await pollerRig({ media: true });
    polling(rig, 'd', 'task-d', 'completed', { attempts: 4 });
    rig.up.set('task-d', 'completed', { outputs: [`${rig.up.url}/out/d.mp4`] });
    const held = rig.up.hold('output');
    rig.poller.start();
    await held.reached;
    rig.clock.advance(25);
    await rig.poller.stop();
    expect(rowOf(rig, 'd')).toMatchObject({ status: 'CREATED', attempts: 4, nextPollAt: at(25), keptOutputs: [] });
  });

  test('failures of the shared hooks are logged, never thrown', async () => {
    const rig = await pollerRig({
      options: {
        leases: {
          claimDue: async () => [],
          claimQueued: async () => [],
          renew: async () => {
            throw new Error('renew broke');
          },
          release: async () => {
            throw new Error('release broke');
          },
        },
        sharedPause: {
          hold: async () => {
            throw new Error('share broke');
          },
          current: async () => undefined,
        },
      },
    });
    const idle = sleepsFor(rig, 5000);
    rig.poller.start();
    await idle;
    await rig.poller.stop();
    expect(logged(rig, 'could not release leases; they expire by themselves')).toEqual([expect.objectContaining({ err: 'release broke' })]);
  });

  test('a webhook for a prediction whose row cannot be made due is logged', async () => {
    const rig = await pollerRig({
      wrapPredictions: (p) => ({
        ...p,
        makeDue: async () => {
          throw new Error('makeDue broke');
        },
      }),
    });
    rig.poller.pollNow('w');
    await turn();
    expect(logged(rig, 'could not make a prediction due after its webhook')).toEqual([expect.objectContaining({ predictionId: 'w', err: 'makeDue broke' })]);
  });
});

describe('more edges, 2', () => {
  test('an upload in flight on stop is cancelled: nothing submitted, due again at once', async () => {
    const rig = await pollerRig({ clientTimeoutMs: 30_000 });
    const { name } = rig.images.put(`data:image/png;base64,${Buffer.from('png').toString('base64')}`);
    queued(rig, 'i', { imageFile: name, hasImage: true });
    const held = rig.up.hold('upload');
    rig.poller.start();
    await held.reached;
    rig.clock.advance(30);
    const began = Date.now();
    await rig.poller.stop();
    expect(Date.now() - began).toBeLessThan(5000);
    expect(rig.up.count('submit')).toBe(0);
    expect(rowOf(rig, 'i')).toMatchObject({ attempts: 0, nextPollAt: at(30), imageUploadUrl: null, submitAttempts: 0 });
  });

  test('a token left from when webhooks were on is not used once they are off', async () => {
    const rig = await pollerRig();
    withPatch(rig, 'o', { webhookToken: 'old-token' });
    await rig.poller.runOnce();
    expect(rig.up.count('submit')).toBe(1);
    expect(must(rig.up.requests[0]).query.has('webhook')).toBe(false);
    expect(rowOf(rig, 'o')).toMatchObject({ upstreamId: 'task-1', nextPollAt: at(60_000) });
  });

  test('a task another prediction already owns is never adopted', async () => {
    const rig = await pollerRig();
    withPatch(rig, 'owner', { upstreamId: 'task-u', submittedAt: T0, nextPollAt: at(60_000) }, { prompt: 'same' });
    withPatch(rig, 'u', { submitStartedAt: T0, submitAttempts: 1 }, { prompt: 'same' });
    rig.up.set('task-u', 'processing', { input: { prompt: 'same' } });
    await rig.poller.runOnce();
    expect(rowOf(rig, 'u')).toMatchObject({ upstreamId: null, attempts: 0, error: null, nextPollAt: at(500), submitStartedAt: T0 });
    expect(rig.seen('submitted')).toEqual([]);
  });

  test('canceled while its poll is under way: the answer is not written, nothing is retried', async () => {
    const rig = await pollerRig();
    polling(rig, 'p', 'task-p', 'completed');
    const held = rig.up.hold('result');
    const pass = rig.poller.runOnce();
    await held.reached;
    await rig.poller.cancel('p');
    held.release();
    await pass;
    expect(rowOf(rig, 'p')).toMatchObject({ status: 'CANCELED', attempts: 0 });
    expect(rig.seen('recorded')).toEqual([{ id: 'p', status: 'CANCELED' }]);
    expect(logged(rig, 'poll failed; will retry')).toEqual([]);
    expect(logged(rig, 'poller step failed')).toEqual([]);
  });
});
