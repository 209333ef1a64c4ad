import { describe, expect, test } from 'vitest';
import { decodeTaskId } from '../src/upstream/sandbox-tasks.js';
import { postGraphql, startApp, tempDir, waitFor, type TestApp } from './helpers/app.js';
import { wsClient, wsSubscribe } from './helpers/clients.js';
import { bearer, createKey } from './helpers/keys.js';
import { record, stubUpstream } from './helpers/stub-upstream.js';
import { must } from './helpers/must.js';

const CREATE = `mutation($p: String!, $d: Int) { createVideo(input: { prompt: $p, deadlineSeconds: $d }) { id status deadlineAt } }`;
const CANCEL = `mutation($id: ID!) { cancelPrediction(id: $id) { id status error completedAt queuePosition } }`;
const QUEUE = `query($id: ID!) { prediction(id: $id) { status queuePosition estimatedStartAt estimatedCompletionAt } }`;
const FOLLOW = `subscription($id: ID!) { predictionUpdated(id: $id) { status queuePosition error } }`;

async function create(t: TestApp, prompt: string, deadlineSeconds?: number): Promise<string> {
  const res = await t.gql(CREATE, { p: prompt, d: deadlineSeconds });
  expect(res.body.errors).toBeUndefined();
  return res.body.data.createVideo.id;
}
const row = (t: TestApp, id: string) => must(t.app.store.findById(id));

describe('admission queue', () => {
  test('UPSTREAM_MAX_CONCURRENT=2: 8 predictions, never more than 2 tasks upstream; places 1..6 shrink as work finishes; the estimated start is within 50% of the actual wait', async () => {
    // 3 s tasks: the places are read (and the follow opened) before the first two end, and a queue move
    // is republished (at most once a second) while the last one is still at place 1 or 2.
    const t = await startApp({ UPSTREAM_MAX_CONCURRENT: '2', SANDBOX_TASK_SECONDS: '3' });
    const sandbox = must(t.app.sandbox);
    // Upstream's own view: at every submission, how many of its tasks are still running.
    const running: number[] = [];
    const submittedAt = new Map<string, number>();
    t.app.poller.on('submitted', ({ id, upstreamId }) => {
      const now = Date.now();
      submittedAt.set(id, now);
      const live = [...submittedAt.keys()].map((p) => must(row(t, p).upstreamId)).filter((u) => {
        const task = must(decodeTaskId(u));
        return task.createdAt + task.durationMs > now;
      });
      running.push(live.length);
      expect(upstreamId).toBeTruthy();
    });
    const ids: string[] = [];
    for (let i = 0; i < 8; i++) ids.push(await create(t, `queued ${i}`));
    await waitFor(() => sandbox.stats.submissions, (n) => n === 2);
    const places = await Promise.all(ids.map(async (id) => (await t.gql(QUEUE, { id })).body.data.prediction.queuePosition));
    expect(places).toEqual([null, null, 1, 2, 3, 4, 5, 6]);

    // The last one, followed live: its place only ever shrinks, one step at a time, then it is submitted.
    const follow = wsSubscribe(wsClient(t.url), FOLLOW, { id: ids[7] });

    // Once the first two have completed, durations are known: estimates for the rest.
    await waitFor(() => ids.slice(0, 2).map((id) => row(t, id).status), (s) => s.every((x) => x === 'COMPLETED'));
    const estimatedAt = Date.now();
    const estimates = new Map<string, number>();
    for (const id of ids.slice(2)) {
      const p = (await t.gql(QUEUE, { id })).body.data.prediction;
      if (p.queuePosition !== null) estimates.set(id, Date.parse(p.estimatedStartAt));
      expect(p.estimatedCompletionAt === null || Date.parse(p.estimatedCompletionAt) > Date.parse(p.estimatedStartAt)).toBe(true);
    }
    expect(estimates.size).toBeGreaterThanOrEqual(3);

    const final = await waitFor(() => ids.map((id) => row(t, id)), (rs) => rs.every((r) => r.status === 'COMPLETED'), 60_000);
    expect(final).toHaveLength(8);
    expect(Math.max(...running)).toBeLessThanOrEqual(2);
    expect(sandbox.stats.submissions).toBe(8);
    for (const [id, estimate] of estimates) {
      const actual = must(submittedAt.get(id));
      const wait = actual - estimatedAt;
      expect({ id, error: Math.abs(actual - estimate) }).toEqual({ id, error: expect.toSatisfy((e: number) => e <= Math.max(0.5 * wait, 300)) });
    }
    const seen = (await follow.done).map((v) => v.predictionUpdated.queuePosition as number | null);
    const queuedPlaces = seen.filter((p): p is number => p !== null);
    expect(queuedPlaces[0]).toBe(6);
    expect(queuedPlaces.at(-1)).toBeLessThanOrEqual(2);
    for (let i = 1; i < queuedPlaces.length; i++) expect(queuedPlaces[i]).toBeLessThanOrEqual(must(queuedPlaces[i - 1]));
    expect(new Set(queuedPlaces).size).toBeGreaterThanOrEqual(3); // it was told as the queue moved, not only at the end
    expect(seen.at(-1)).toBeNull();
  });

  test('owners take turns: one key\'s burst does not hold back another key\'s first prediction', async () => {
    const dataDir = tempDir();
    const alice = await createKey(dataDir, 'alice');
    const bob = await createKey(dataDir, 'bob');
    const t = await startApp({ DATA_DIR: dataDir, UPSTREAM_MAX_CONCURRENT: '1', SANDBOX_TASK_SECONDS: '30' });
    const as = async (key: string, p: string) => (await postGraphql(t.url, CREATE, { p }, bearer(key))).body.data.createVideo.id as string;
    const first = await as(alice, 'alice 0');
    await waitFor(() => row(t, first).upstreamId, (u) => u !== null);
    const aliceQueued = [await as(alice, 'alice 1'), await as(alice, 'alice 2'), await as(alice, 'alice 3')];
    const bobFirst = await as(bob, 'bob 0');
    const place = async (key: string, id: string) => (await postGraphql(t.url, QUEUE, { id }, bearer(key))).body.data.prediction.queuePosition;
    expect(await place(alice, must(aliceQueued[0]))).toBe(1);
    expect(await place(bob, bobFirst)).toBe(2); // before alice's second and third
    expect(await place(alice, must(aliceQueued[1]))).toBe(3);
    expect(await place(alice, must(aliceQueued[2]))).toBe(4);
    // A cancel at the head moves everyone behind it up one place, turns kept.
    expect((await postGraphql(t.url, CANCEL, { id: aliceQueued[0] }, bearer(alice))).body.data.cancelPrediction.queuePosition).toBeNull();
    expect(await place(bob, bobFirst)).toBe(1);
    expect(await place(alice, must(aliceQueued[1]))).toBe(2);
    expect(await place(alice, must(aliceQueued[2]))).toBe(3);
  });

  test('UPSTREAM_MAX_PER_MINUTE=2: a third prediction waits for the window', async () => {
    const t = await startApp({ UPSTREAM_MAX_PER_MINUTE: '2', SANDBOX_TASK_SECONDS: '0.3' });
    const ids = [await create(t, 'a'), await create(t, 'b'), await create(t, 'c')];
    await waitFor(() => ids.slice(0, 2).map((id) => row(t, id).status), (s) => s.every((x) => x === 'COMPLETED'));
    await t.app.poller.runOnce();
    expect(row(t, must(ids[2])).upstreamId).toBeNull();
    expect(t.app.sandbox?.stats.submissions).toBe(2);
    expect((await t.gql(QUEUE, { id: ids[2] })).body.data.prediction.queuePosition).toBe(1);
  });
});

describe('cancelPrediction', () => {
  test('a queued prediction is never submitted; its subscribers get CANCELED and complete', async () => {
    const t = await startApp({ UPSTREAM_MAX_CONCURRENT: '1', SANDBOX_TASK_SECONDS: '1' });
    const running = await create(t, 'runs');
    const queued = await create(t, 'waits');
    await waitFor(() => row(t, running).upstreamId, (u) => u !== null);
    const follow = wsSubscribe(wsClient(t.url), FOLLOW, { id: queued });
    const res = await t.gql(CANCEL, { id: queued });
    expect(res.body.errors).toBeUndefined();
    expect(res.body.data.cancelPrediction).toMatchObject({ id: queued, status: 'CANCELED', error: null, queuePosition: null });
    expect(res.body.data.cancelPrediction.completedAt).toBeTruthy();
    const seen = await follow.done;
    expect(seen.at(-1).predictionUpdated.status).toBe('CANCELED');
    await waitFor(() => row(t, running).status, (s) => s === 'COMPLETED');
    await t.app.poller.runOnce();
    expect(t.app.sandbox?.stats.submissions).toBe(1);
    expect(row(t, queued)).toMatchObject({ status: 'CANCELED', upstreamId: null, submitAttempts: 0 });
  });

  test('a processing prediction ends CANCELED, the sandbox receives the delete, and no later poll revives it', async () => {
    const t = await startApp({ SANDBOX_TASK_SECONDS: '3' });
    const id = await create(t, 'stopped midway');
    await waitFor(() => row(t, id).status, (s) => s === 'PROCESSING');
    const follow = wsSubscribe(wsClient(t.url), FOLLOW, { id });
    const deleted = new Promise((resolve) => t.app.poller.once('deletedUpstream', resolve));
    const res = await t.gql(CANCEL, { id });
    expect(res.body.data.cancelPrediction.status).toBe('CANCELED');
    const upstreamId = must(row(t, id).upstreamId);
    expect(await deleted).toEqual({ upstreamIds: [upstreamId] });
    expect(t.app.sandbox?.stats.deleted.has(upstreamId)).toBe(true);
    expect((await follow.done).at(-1).predictionUpdated.status).toBe('CANCELED');
    // The sandbox's task reads as gone; the gateway no longer looks at it.
    const gone = await fetch(`${t.url}/sandbox/api/v3/predictions/${upstreamId}/result`, { headers: { authorization: 'Bearer x' } });
    expect(gone.status).toBe(404);
    const version = row(t, id).version;
    await t.app.poller.runOnce();
    expect(row(t, id)).toMatchObject({ status: 'CANCELED', version, nextPollAt: null });
  });

  test('a canceled prediction whose submission had no certain answer has its task found and deleted upstream', async () => {
    // A long grace: the reconcile (its first look a quarter of it, at most 5 s, after the timeout) must not
    // adopt the task before the cancel; the cancel's own search looks at once.
    const t = await startApp({ UPSTREAM_TIMEOUT_MS: '300', SANDBOX_SLOW_MS: '2000', SANDBOX_TASK_SECONDS: '30', SUBMIT_RECONCILE_GRACE_MS: '20000' });
    const sandbox = must(t.app.sandbox);
    sandbox.setFaults({ acceptThenStallRate: 1 });
    const id = await create(t, 'canceled while uncertain');
    // The task exists upstream; the gateway's request is still waiting for an answer that will not come in time.
    await waitFor(() => sandbox.stats.faults.acceptedThenStalled, (n) => n === 1);
    const deleted = new Promise<{ upstreamIds: string[] }>((resolve) => t.app.poller.once('deletedUpstream', resolve));
    expect((await t.gql(CANCEL, { id })).body.data.cancelPrediction.status).toBe('CANCELED');
    const { upstreamIds } = await deleted;
    expect(upstreamIds).toHaveLength(1);
    expect(sandbox.stats.deleted.has(must(upstreamIds[0]))).toBe(true);
    expect(row(t, id)).toMatchObject({ status: 'CANCELED', upstreamId: null });
    expect(sandbox.stats.submissions).toBe(1);
  });

  test('a task that arrives for a prediction canceled during its submission is deleted upstream', async () => {
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    const stub = await stubUpstream({
      submit: async ({ res, body, stub }) => {
        const task = stub.create(body);
        await held;
        stub.ok(res, record(task));
      },
      other: ({ req, res, body, stub }) => {
        if (req.url === '/api/v3/predictions/delete') return stub.ok(res, { deleted: JSON.parse(body).ids });
        res.writeHead(404).end();
      },
    });
    const t = await startApp({ WAVESPEED_API_KEY: 'k', WAVESPEED_BASE_URL: stub.url, UPSTREAM_TIMEOUT_MS: '10000' });
    const id = await create(t, 'canceled in flight');
    await waitFor(() => stub.counts.submit, (n) => n === 1);
    expect((await t.gql(CANCEL, { id })).body.data.cancelPrediction.status).toBe('CANCELED');
    const deleted = new Promise((resolve) => t.app.poller.once('deletedUpstream', resolve));
    release();
    expect(await deleted).toEqual({ upstreamIds: ['stub-1'] });
    expect(row(t, id)).toMatchObject({ status: 'CANCELED', upstreamId: null });
    expect(stub.counts.other).toBe(1);
  });

  test('refusals: a final prediction is ALREADY_FINAL; an unknown id and another key\'s are NOT_FOUND; nothing changes', async () => {
    const dataDir = tempDir();
    const alice = await createKey(dataDir, 'alice');
    const bob = await createKey(dataDir, 'bob');
    const t = await startApp({ DATA_DIR: dataDir, SANDBOX_TASK_SECONDS: '0.3' });
    const as = (key: string, q: string, v: Record<string, unknown>) => postGraphql(t.url, q, v, bearer(key)).then((r) => r.body);
    const done = (await as(alice, CREATE, { p: 'finishes' })).data.createVideo.id;
    const live = (await as(alice, CREATE, { p: 'goes on' })).data.createVideo.id;
    await waitFor(() => row(t, done).status, (s) => s === 'COMPLETED');
    const final = await as(alice, CANCEL, { id: done });
    expect(final.errors?.[0]).toMatchObject({ message: `prediction "${done}" is already COMPLETED`, extensions: { code: 'ALREADY_FINAL', field: 'id' } });
    const unknown = await as(alice, CANCEL, { id: 'no-such-id' });
    expect(unknown.errors?.[0]).toMatchObject({ message: 'no prediction with id "no-such-id"', extensions: { code: 'NOT_FOUND' } });
    const foreign = await as(bob, CANCEL, { id: live });
    expect(foreign.errors?.[0]).toMatchObject({ message: `no prediction with id "${live}"`, extensions: { code: 'NOT_FOUND' } });
    expect(row(t, live).status).not.toBe('CANCELED');
    const noId = await postGraphql(t.url, 'mutation { cancelPrediction { id } }', {}, bearer(alice));
    expect(noId.status).toBe(400);
    expect(row(t, done).status).toBe('COMPLETED');
  });
});

describe('deadlines', () => {
  test('a 3-second deadline on an 8-second task ends CANCELED with an error saying so, and the task is deleted upstream', async () => {
    const t = await startApp({ SANDBOX_TASK_SECONDS: '8' });
    const res = await t.gql(CREATE, { p: 'too slow', d: 3 });
    const { id, deadlineAt } = res.body.data.createVideo;
    expect(Date.parse(deadlineAt) - row(t, id).createdAt.getTime()).toBe(3000);
    const follow = wsSubscribe(wsClient(t.url), FOLLOW, { id });
    const ended = await waitFor(() => row(t, id), (r) => r.status === 'CANCELED', 15_000);
    expect(ended.error).toBe('canceled: the deadline of 3 s passed before the prediction was final');
    expect(must(ended.completedAt).getTime() - ended.createdAt.getTime()).toBeGreaterThanOrEqual(3000);
    expect(must(ended.completedAt).getTime() - ended.createdAt.getTime()).toBeLessThan(6000);
    expect((await follow.done).at(-1).predictionUpdated).toMatchObject({ status: 'CANCELED', error: ended.error });
    await waitFor(() => must(t.app.sandbox).stats.deleted.has(must(ended.upstreamId)), (x) => x);
  });

  test.each([
    [0, 'deadlineSeconds must be between 1 and 86400 (24 h)'],
    [-5, 'deadlineSeconds must be between 1 and 86400 (24 h)'],
    [86_401, 'deadlineSeconds must be between 1 and 86400 (24 h)'],
  ])('deadlineSeconds %s is refused with BAD_USER_INPUT, storing and sending nothing', async (d, message) => {
    const t = await startApp();
    const res = await t.gql(CREATE, { p: 'x', d });
    expect(res.body.data?.createVideo ?? null).toBeNull();
    expect(res.body.errors?.[0]).toMatchObject({ message, extensions: { code: 'BAD_USER_INPUT', field: 'input.deadlineSeconds' } });
    expect(t.app.store.count()).toBe(0);
    expect(t.app.sandbox?.stats.submissions).toBe(0);
  });

  test('a deadline of the wrong type is a request error', async () => {
    const t = await startApp();
    for (const d of ['soon', 1.5, 2 ** 40]) {
      const res = await t.gql(CREATE, { p: 'x', d });
      expect(res.status).toBe(400);
      expect(res.body.errors?.[0]?.extensions?.code).toBe('BAD_USER_INPUT');
    }
    expect(t.app.store.count()).toBe(0);
  });
});
