import { createHash } from 'node:crypto';
import { request } from 'node:http';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { readFileSync } from 'node:fs';
import { describe, expect, test } from 'vitest';
import { decodeTaskId } from '../src/upstream/sandbox-tasks.js';
import { startApp, tempDir, waitFor, type TestApp } from './helpers/app.js';
import { listen } from './helpers/listen.js';
import { must } from './helpers/must.js';
import { nextPollerEvent } from './helpers/events.js';
import { record, stubUpstream } from './helpers/stub-upstream.js';

const CREATE = `mutation($p: String!) { createVideo(input: { prompt: $p }) { id } }`;
const GET = `query($id: ID!) { prediction(id: $id) { id status upstreamId outputs keptOutputs error completedAt } }`;
const sandboxVideo = readFileSync(new URL('../assets/sandbox.mp4', import.meta.url));

async function createBatch(t: TestApp, n: number): Promise<string[]> {
  const ids: string[] = [];
  for (let i = 0; i < n; i++) ids.push((await t.gql(CREATE, { p: `batch ${i}` })).body.data.createVideo.id);
  return ids;
}

async function waitTerminal(t: TestApp, ids: string[], timeoutMs = 45_000) {
  return waitFor(
    async () => Promise.all(ids.map(async (id) => (await t.gql(GET, { id })).body.data.prediction)),
    (ps) => ps.every((p) => p.status === 'COMPLETED' || p.status === 'FAILED'),
    timeoutMs,
  );
}


describe('under heavy upstream faults', () => {
  test('a batch reaches the right terminal state for every prediction: 30% 5xx, 429 bursts, timeouts, malformed JSON, failed tasks', async () => {
    const t = await startApp({
      SANDBOX_TASK_SECONDS: '1',
      SANDBOX_ERROR_RATE: '0.3',
      SANDBOX_RATE_LIMIT_RATE: '0.03',
      SANDBOX_RATE_LIMIT_SECONDS: '1',
      SANDBOX_SLOW_RATE: '0.1',
      // Timeouts from the slow answers only: a 200 ms timeout also cut off ordinary requests on a loaded
      // machine, each one more uncertain submission towards the cap.
      SANDBOX_SLOW_MS: '1000',
      SANDBOX_MALFORMED_RATE: '0.1',
      SANDBOX_FAILURE_RATE: '0.25',
      UPSTREAM_TIMEOUT_MS: '400',
      // These faults strike before the sandbox creates a task, yet a 5xx, a timeout or malformed JSON
      // cannot be told apart from one that strikes after: each is reconciled, then resent, and with
      // 45% of requests faulted the default cap of 3 uncertain submissions would end some FAILED.
      MAX_SUBMISSIONS_PER_PREDICTION: '12',
    });
    const ids = await createBatch(t, 20);
    const final = await waitTerminal(t, ids);
    for (const p of final) {
      const fate = decodeTaskId(p.upstreamId)?.fate;
      if (fate === 'f') expect(p).toMatchObject({ status: 'FAILED', error: 'sandbox: injected task failure', outputs: [] });
      else {
        expect(p).toMatchObject({ status: 'COMPLETED', error: null });
        expect(p.outputs).toHaveLength(1);
        expect(p.keptOutputs).toHaveLength(1);
      }
    }
    const { faults } = must(t.app.sandbox).stats;
    expect(faults.serverError).toBeGreaterThan(0);
    expect(faults.rateLimited).toBeGreaterThan(0);
    expect(faults.slow).toBeGreaterThan(0);
    expect(faults.malformed).toBeGreaterThan(0);
    expect((await fetch(`${t.url}/healthz`)).status).toBe(200);
  });

  test('a task that never finishes is FAILED after the maximum age, with a clear error', async () => {
    const t = await startApp({ SANDBOX_HANG_RATE: '1', SANDBOX_TASK_SECONDS: '0.2', MAX_PREDICTION_AGE_SECONDS: '1' });
    const [id] = await createBatch(t, 1);
    const [p] = await waitTerminal(t, [must(id)]);
    expect(p).toMatchObject({ status: 'FAILED', error: 'gave up: no final status from upstream within 1 s' });
    expect(p.upstreamId).toMatch(/^sbx-.*-h-/);
  });

  test('a permanent 4xx on submission fails the prediction with the upstream message, without retrying', async () => {
    let requests = 0;
    const upstream = await listen((_req, res) => {
      requests++;
      res.writeHead(400, { 'content-type': 'application/json' }).end('{"code":400,"message":"image aspect ratio not supported","data":null}');
    });
    const t = await startApp({ WAVESPEED_BASE_URL: upstream });
    const [id] = await createBatch(t, 1);
    const [p] = await waitTerminal(t, [must(id)]);
    expect(p).toMatchObject({
      status: 'FAILED',
      upstreamId: null,
      error: 'upstream rejected the submission: upstream answered HTTP 400: image aspect ratio not supported',
    });
    expect(requests).toBe(1);
  });

  test('a 429 with Retry-After holds the whole poller back, not just the request that got it', async () => {
    // Upstream answers the first submission 429 (Retry-After: 5, so the second prediction is surely
    // created inside the pause on a loaded machine) and accepts every later one.
    const submits: number[] = [];
    const stub = await stubUpstream({
      submit: ({ res, body, n, stub }) => {
        submits.push(Date.now());
        if (n === 1) res.writeHead(429, { 'retry-after': '5', 'content-type': 'application/json' }).end('{"code":429,"message":"slow down"}');
        else stub.ok(res, record(stub.create(body)));
      },
    });
    const t = await startApp({ WAVESPEED_BASE_URL: stub.url });
    const submitted = new Set<string>();
    t.app.poller.on('submitted', ({ id }) => submitted.add(id));
    const paused = nextPollerEvent(t.app.poller, 'paused', (p) => p.kind === 'rate');
    const [first] = await createBatch(t, 1);
    const [pause] = await paused;
    const resumed = nextPollerEvent(t.app.poller, 'resumed', (r) => r.kind === 'rate');
    expect(pause.until - must(submits[0])).toBeGreaterThanOrEqual(5000);
    // A prediction created during the pause has no failure of its own to wait out: only the
    // poller-wide pause keeps it from being submitted at once.
    const [second] = await createBatch(t, 1);
    expect(Date.now()).toBeLessThan(pause.until);
    await resumed;
    await waitFor(() => submitted.size, (n) => n === 2);
    expect([...submitted].sort()).toEqual([must(first), must(second)].sort());
    // Nothing reached upstream during the pause; then each prediction was submitted once.
    expect(submits.slice(1).filter((at) => at < pause.until)).toEqual([]);
    expect(submits).toHaveLength(3);
  });
});

function rawGetStatus(base: string, path: string): Promise<number> {
  return new Promise((resolve, reject) => {
    request(`${base}${path}`, (res) => {
      res.resume();
      resolve(must(res.statusCode));
    })
      .on('error', reject)
      .end();
  });
}

describe('kept outputs', () => {
  test('a completed output is copied into DATA_DIR/media and served by the gateway with Range support', async () => {
    const t = await startApp({ SANDBOX_TASK_SECONDS: '0.3' });
    const [id] = await createBatch(t, 1);
    const [p] = await waitTerminal(t, [must(id)]);
    expect(p.status).toBe('COMPLETED');
    const sha = createHash('sha256').update(sandboxVideo).digest('hex');
    expect(p.keptOutputs).toEqual([`${t.url}/media/${sha}.mp4`]);

    const whole = await fetch(p.keptOutputs[0]);
    expect(whole.headers.get('content-type')).toBe('video/mp4');
    expect(Buffer.from(await whole.arrayBuffer()).equals(sandboxVideo)).toBe(true);
    const part = await fetch(p.keptOutputs[0], { headers: { range: 'bytes=100-199' } });
    expect(part.status).toBe(206);
    expect(part.headers.get('content-range')).toBe(`bytes 100-199/${sandboxVideo.length}`);
    expect(Buffer.from(await part.arrayBuffer()).equals(sandboxVideo.subarray(100, 200))).toBe(true);

    // Raw paths: fetch would normalise `..` away before the request left.
    for (const bad of ['/media/../cinegraph.sqlite', '/media/..%2fcinegraph.sqlite', '/media/%2e%2e/cinegraph.sqlite', `/media/${sha}.sqlite`, '/media/nothing.mp4', `/media/${'0'.repeat(64)}.mp4`]) {
      expect(await rawGetStatus(t.url, bad)).toBe(404);
    }
  });

  test('outputs are served when DATA_DIR sits under a dot directory (~/.cinegraph)', async () => {
    const dataDir = join(tempDir(), '.cinegraph');
    mkdirSync(dataDir);
    const t = await startApp({ SANDBOX_TASK_SECONDS: '0.3', DATA_DIR: dataDir });
    const [id] = await createBatch(t, 1);
    const [p] = await waitTerminal(t, [must(id)]);
    const res = await fetch(p.keptOutputs[0]);
    expect(res.status).toBe(200);
    expect(Buffer.from(await res.arrayBuffer()).equals(sandboxVideo)).toBe(true);
  });

  test('with KEEP_OUTPUTS=false only upstream URLs are given', async () => {
    const t = await startApp({ SANDBOX_TASK_SECONDS: '0.3', KEEP_OUTPUTS: 'false' });
    const [id] = await createBatch(t, 1);
    const [p] = await waitTerminal(t, [must(id)]);
    expect(p).toMatchObject({ status: 'COMPLETED', keptOutputs: [] });
    expect(p.outputs).toHaveLength(1);
  });
});

describe('shutdown', () => {
  test('stop() cancels a poll in flight instead of waiting for it, and leaves the prediction due for the next start', async () => {
    const t = await startApp({ SANDBOX_TASK_SECONDS: '600', UPSTREAM_TIMEOUT_MS: '30000' });
    const [id] = await createBatch(t, 1);
    await waitFor(() => t.app.store.findById(must(id))?.upstreamId, (u) => u !== null);
    t.app.sandbox?.setFaults({ slowRate: 1, slowMs: 20_000 });
    await waitFor(() => t.app.sandbox?.stats.faults.slow, (n) => n === 1);
    const started = Date.now();
    await t.app.poller.stop();
    // The sandbox would answer only after 20 s; stopping must not wait for that.
    expect(Date.now() - started).toBeLessThan(10_000);
    const row = must(t.app.store.findById(must(id)));
    expect(row).toMatchObject({ attempts: 0, error: null });
    expect(row.nextPollAt?.getTime()).toBeLessThanOrEqual(Date.now());
  });

  test('stop() lets a submission in flight finish and records it, so a restart cannot submit it twice', async () => {
    const t = await startApp({ SANDBOX_SLOW_RATE: '1', SANDBOX_SLOW_MS: '1000', UPSTREAM_TIMEOUT_MS: '10000' });
    const [id] = await createBatch(t, 1);
    await waitFor(() => t.app.sandbox?.stats.faults.slow, (n) => n === 1);
    await t.app.poller.stop();
    expect(t.app.store.findById(must(id))?.upstreamId).toMatch(/^sbx-/);
    expect(t.app.sandbox?.stats.submissions).toBe(1);
  });
});

describe('scheduling', () => {
  test('a request stuck upstream does not hold back other predictions', async () => {
    const t = await startApp({ SANDBOX_TASK_SECONDS: '0.3', UPSTREAM_TIMEOUT_MS: '20000' });
    // Stuck for 9 s: the quick one's whole life (create, submit, polls, kept copy) must fit before that.
    t.app.sandbox?.setFaults({ slowRate: 1, slowMs: 9000 });
    const [stuck] = await createBatch(t, 1);
    await waitFor(() => t.app.sandbox?.stats.faults.slow, (n) => n === 1);
    t.app.sandbox?.setFaults({ slowRate: 0 });
    const [quick] = await createBatch(t, 1);
    await waitFor(() => t.app.store.findById(must(quick))?.status, (s) => s === 'COMPLETED', 8000);
    // The stuck submission is still waiting for its answer.
    expect(t.app.store.findById(must(stuck))?.upstreamId).toBeNull();
  });

  test('polls that change nothing leave version and updatedAt alone', async () => {
    const t = await startApp({ SANDBOX_TASK_SECONDS: '600' });
    const [id] = await createBatch(t, 1);
    const processing = await waitFor(() => must(t.app.store.findById(must(id))), (r) => r.upstreamId !== null);
    await waitFor(() => must(t.app.store.findById(must(id))).pollCount, (n) => n >= processing.pollCount + 3);
    const later = must(t.app.store.findById(must(id)));
    expect(later.version).toBe(processing.version);
    expect(later.updatedAt).toEqual(processing.updatedAt);
  });

  test('a failure reported in the submission answer is kept with its reason', async () => {
    const upstream = await listen((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' }).end(
        JSON.stringify({ code: 200, message: 'success', data: { id: 'up-1', status: 'failed', error: 'prompt flagged by moderation', outputs: [] } }),
      );
    });
    const t = await startApp({ WAVESPEED_BASE_URL: upstream });
    const [id] = await createBatch(t, 1);
    const [p] = await waitTerminal(t, [must(id)]);
    expect(p).toMatchObject({ status: 'FAILED', upstreamId: 'up-1', error: 'prompt flagged by moderation' });
  });

  test('the age limit takes a last look upstream: a task that finished in time is COMPLETED, not failed', async () => {
    // Polls are 10 s apart, so the prediction's age passes the limit before the poller looks again.
    const t = await startApp({ SANDBOX_TASK_SECONDS: '1', MAX_PREDICTION_AGE_SECONDS: '2', POLL_INITIAL_MS: '3000', POLL_GROWTH: '0', POLL_MAX_MS: '3000' });
    const [id] = await createBatch(t, 1);
    const [p] = await waitTerminal(t, [must(id)]);
    expect(p.status).toBe('COMPLETED');
  });
});

describe('sandbox fault controls', () => {
  test('GET shows the faults in force; POST changes them and refuses unknown or impossible settings', async () => {
    const t = await startApp();
    const control = `${t.url}/sandbox/_control/faults`;
    const post = (body: string) => fetch(control, { method: 'POST', headers: { 'content-type': 'application/json' }, body });
    expect(await (await fetch(control)).json()).toMatchObject({ serverErrorRate: 0, rateLimitSeconds: 1 });
    const changed = await post('{"serverErrorRate":0.5,"slowMs":100}');
    expect(changed.status).toBe(200);
    expect(await changed.json()).toMatchObject({ serverErrorRate: 0.5, slowMs: 100 });
    for (const [body, message] of [
      ['{"nope":1}', 'unknown or invalid fault setting nope'],
      ['{"__proto__":1}', 'unknown or invalid fault setting'],
      ['{"toString":1}', 'unknown or invalid fault setting toString'],
      ['{"failureRate":1.5}', 'unknown or invalid fault setting failureRate'],
      ['{"slowMs":-1}', 'unknown or invalid fault setting slowMs'],
      ['{"rateLimitSeconds":1e999}', 'unknown or invalid fault setting rateLimitSeconds'],
      ['{"slowMs":"5"}', 'unknown or invalid fault setting slowMs'],
      ['not json', 'body must be a JSON object of fault settings'],
    ] as const) {
      const res = await post(body);
      expect(res.status).toBe(400);
      expect(((await res.json()) as { message: string }).message).toContain(message);
    }
    expect(t.app.sandbox?.setFaults({})).toMatchObject({ serverErrorRate: 0.5, slowMs: 100, failureRate: 0 });
  });
});

test('a submission answered with a completed result is recorded once and its outputs kept by the poll that follows', async () => {
  let submissions = 0;
  const video = sandboxVideo;
  const upstream = await listen((req, res) => {
    if (req.url === '/out.mp4') return void res.writeHead(200, { 'content-type': 'video/mp4' }).end(video);
    if (req.method === 'POST') submissions++;
    const base = `http://${req.headers.host}`;
    res.writeHead(200, { 'content-type': 'application/json' }).end(
      JSON.stringify({ code: 200, message: 'success', data: { id: 'cached-1', status: 'completed', outputs: [`${base}/out.mp4`] } }),
    );
  });
  const t = await startApp({ WAVESPEED_BASE_URL: upstream });
  const [id] = await createBatch(t, 1);
  const [p] = await waitTerminal(t, [must(id)]);
  expect(p).toMatchObject({ status: 'COMPLETED', upstreamId: 'cached-1' });
  expect(p.keptOutputs).toHaveLength(1);
  expect(submissions).toBe(1);
});
