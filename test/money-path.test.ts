import type { ServerResponse } from 'node:http';
import Database from 'better-sqlite3';
import { describe, expect, test } from 'vitest';
import type { PredictionRow } from '../src/db/schema.js';
import { startApp, waitFor, type TestApp } from './helpers/app.js';
import { nextPollerEvent } from './helpers/events.js';
import { capturedLogger, record, stubUpstream, type StubUpstream } from './helpers/stub-upstream.js';
import { must } from './helpers/must.js';

const CREATE = `mutation($p: String!) { createVideo(input: { prompt: $p }) { id } }`;

async function create(t: TestApp, prompt: string): Promise<string> {
  const res = await t.gql(CREATE, { p: prompt });
  expect(res.body.errors).toBeUndefined();
  return res.body.data.createVideo.id;
}

const row = (t: TestApp, id: string) => must(t.app.store.findById(id));
const final = (r: PredictionRow) => r.status === 'COMPLETED' || r.status === 'FAILED';
const settled = (t: TestApp, ids: string[], timeoutMs = 30_000) =>
  waitFor(() => ids.map((id) => row(t, id)), (rs) => rs.every(final), timeoutMs);

/** The gateway against a counting stub upstream instead of its sandbox. */
const withStub = (stub: StubUpstream, env: Record<string, string> = {}, log = capturedLogger()) =>
  startApp({ WAVESPEED_API_KEY: 'stub-key', WAVESPEED_BASE_URL: stub.url, UPSTREAM_TIMEOUT_MS: '500', ...env }, { log: log.log });

describe('ambiguous submissions are reconciled, not resent', () => {
  test('a stall past the timeout and a 502 after the task was created: 10 predictions, exactly one upstream task each', async () => {
    const t = await startApp({ UPSTREAM_TIMEOUT_MS: '300', SANDBOX_SLOW_MS: '1000', SANDBOX_TASK_SECONDS: '1', SUBMIT_RECONCILE_GRACE_MS: '10000' });
    const sandbox = must(t.app.sandbox);
    sandbox.setFaults({ acceptThenErrorRate: 1 });
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) ids.push(await create(t, `answered 502 ${i}`));
    await waitFor(() => sandbox.stats.faults.acceptedThenFailed, (n) => n === 5);
    sandbox.setFaults({ acceptThenErrorRate: 0, acceptThenStallRate: 1 });
    for (let i = 0; i < 5; i++) ids.push(await create(t, `stalled ${i}`));
    await waitFor(() => sandbox.stats.faults.acceptedThenStalled, (n) => n === 5);
    sandbox.setFaults({ acceptThenStallRate: 0 });

    const rows = await settled(t, ids);
    expect(rows.map((r) => r.status)).toEqual(Array(10).fill('COMPLETED'));
    expect(new Set(rows.map((r) => r.upstreamId)).size).toBe(10);
    // Every submission the sandbox saw was one of the ten faulted first ones: nothing was sent twice.
    expect(sandbox.stats.submissions).toBe(10);
    expect(rows.every((r) => r.submitAttempts === 1 && r.submitStartedAt === null)).toBe(true);
    expect(sandbox.stats.listRequests).toBeGreaterThanOrEqual(10);
  });

  test('a connection reset after the request was sent: the task is found in the list and adopted; the webhook token never reaches an error or a log', async () => {
    const stub = await stubUpstream({
      submit: ({ req, body, stub }) => {
        stub.create(body); // upstream created (and will bill) the task, then the connection broke
        req.socket.destroy();
      },
    });
    const logs = capturedLogger();
    const t = await withStub(stub, { PUBLIC_URL: 'http://127.0.0.1:9', POLL_WEBHOOK_FALLBACK_MS: '200' }, logs);
    const uncertain = new Promise((resolve) => t.app.poller.once('uncertain', resolve));
    const id = await create(t, 'reset after sending');
    await uncertain;
    const waiting = row(t, id);
    expect(waiting.status).toBe('CREATED');
    expect(waiting.error).toMatch(/^submission outcome unknown, looking for it upstream: POST \/api\/v3\/minimax\/video-01: /);
    const [done] = await settled(t, [id]);
    expect(done).toMatchObject({ status: 'COMPLETED', upstreamId: 'stub-1', submitAttempts: 1, error: null });
    expect(stub.counts.submit).toBe(1);
    expect(stub.counts.list).toBeGreaterThanOrEqual(1);
    const token = must(done?.webhookToken);
    expect(token).toBeTruthy();
    expect(logs.lines.join('\n')).not.toContain(token);
    expect(logs.lines.join('\n')).not.toContain('webhook=');
    expect(waiting.error).not.toContain(token);
  });

  test('no task appears within the grace period: sent again, and the second answer is taken', async () => {
    const stub = await stubUpstream({
      submit: ({ req, res, body, n, stub }) => {
        if (n === 1) return void req.socket.destroy(); // lost before upstream created anything
        stub.ok(res, record(stub.create(body)));
      },
    });
    const t = await withStub(stub, { SUBMIT_RECONCILE_GRACE_MS: '400' });
    const id = await create(t, 'lost first time');
    const [done] = await settled(t, [id]);
    expect(done).toMatchObject({ status: 'COMPLETED', upstreamId: 'stub-1', submitAttempts: 2 });
    expect(stub.counts.submit).toBe(2);
  });

  test('past MAX_SUBMISSIONS_PER_PREDICTION uncertain submissions the prediction ends FAILED with SUBMISSION_UNCERTAIN, and nothing more is sent', async () => {
    const stub = await stubUpstream({ submit: ({ res }) => void res.writeHead(502).end('bad gateway') });
    const t = await withStub(stub, { SUBMIT_RECONCILE_GRACE_MS: '200', MAX_SUBMISSIONS_PER_PREDICTION: '2' });
    const id = await create(t, 'never confirmed');
    const [done] = await settled(t, [id]);
    expect(done?.status).toBe('FAILED');
    expect(done?.error).toMatch(/^SUBMISSION_UNCERTAIN: upstream never confirmed a task for this prediction after 2 submissions/);
    await t.app.poller.runOnce();
    expect(stub.counts.submit).toBe(2);
  });

  test('a refused or rejected submission was certainly not received: it does not count against the cap', async () => {
    const stub = await stubUpstream({
      submit: ({ res, body, n, stub }) => {
        if (n <= 2) return void res.writeHead(429, { 'retry-after': '0' }).end('{"code":429,"message":"slow down"}');
        stub.ok(res, record(stub.create(body)));
      },
    });
    // A submission slow enough to time out would be uncertain and looked for: no timeout in reach.
    const t = await withStub(stub, { MAX_SUBMISSIONS_PER_PREDICTION: '1', UPSTREAM_TIMEOUT_MS: '5000' });
    const id = await create(t, 'rate limited twice');
    const [done] = await settled(t, [id]);
    expect(done).toMatchObject({ status: 'COMPLETED', submitAttempts: 1 });
    expect(stub.counts.submit).toBe(3);
    expect(stub.counts.list).toBe(0); // nothing was uncertain, so nothing was looked for
  });

  test('a moderation refusal in the envelope fails at once; a server-side code in the envelope is reconciled, not failed', async () => {
    const stub = await stubUpstream({
      submit: ({ res, body, n, stub }) => {
        if (n <= 2) return void res.writeHead(200, { 'content-type': 'application/json' }).end('{"code":500,"message":"internal error","data":null}');
        stub.ok(res, record(stub.create(body)));
      },
    });
    const moderated = await stubUpstream({
      submit: ({ res }) => void res.writeHead(200, { 'content-type': 'application/json' }).end('{"code":400,"message":"prompt flagged by content moderation","data":null}'),
    });
    const t1 = await withStub(moderated);
    const flagged = await create(t1, 'flagged');
    const [f] = await settled(t1, [flagged]);
    expect(f).toMatchObject({ status: 'FAILED', error: 'upstream rejected the submission: upstream answered code 400: prompt flagged by content moderation' });
    expect(moderated.counts.submit).toBe(1);

    const t2 = await withStub(stub, { SUBMIT_RECONCILE_GRACE_MS: '200', MAX_SUBMISSIONS_PER_PREDICTION: '3' });
    const id = await create(t2, 'server trouble');
    const [done] = await settled(t2, [id]);
    expect(done).toMatchObject({ status: 'COMPLETED', submitAttempts: 3 });
    expect(stub.counts.submit).toBe(3);
  });
});

describe('account errors pause, they do not fail', () => {
  test('a 401 period of a few seconds leaves every prediction unfailed, /readyz says why, and all complete afterwards', async () => {
    const t = await startApp({ SANDBOX_TASK_SECONDS: '0.5' });
    const sandbox = must(t.app.sandbox);
    sandbox.setFaults({ unauthorizedSeconds: 3 });
    const paused = new Promise((resolve) => t.app.poller.once('paused', resolve));
    const ids: string[] = [];
    for (let i = 0; i < 4; i++) ids.push(await create(t, `while unauthorized ${i}`));
    expect(await paused).toMatchObject({ kind: 'account', reason: expect.stringContaining('401') });
    const ready = await fetch(`${t.url}/readyz`);
    expect(ready.status).toBe(503);
    expect((await ready.json()).reasons.join()).toMatch(/^account: upstream refused the account: upstream answered HTTP 401/);
    expect((await fetch(`${t.url}/healthz`)).status).toBe(200);
    const during = ids.map((id) => row(t, id));
    expect(during.every((r) => r.status === 'CREATED')).toBe(true);
    expect(during.some((r) => r.error?.includes('401'))).toBe(true);

    const resumed = new Promise((resolve) => t.app.poller.once('resumed', resolve));
    expect(await resumed).toEqual({ kind: 'account' });
    const rows = await settled(t, ids);
    expect(rows.map((r) => r.status)).toEqual(['COMPLETED', 'COMPLETED', 'COMPLETED', 'COMPLETED']);
    expect(rows.every((r) => r.error === null)).toBe(true);
    expect(sandbox.stats.submissions).toBe(4);
    expect((await fetch(`${t.url}/readyz`)).status).toBe(200);
  });
});

describe('bounded waits and a loop that never dies', () => {
  test.each(['10000000', '1e13'])('Retry-After: %s delays a prediction by at most RETRY_AFTER_MAX_MS', async (retryAfter) => {
    const sent: number[] = [];
    const stub = await stubUpstream({
      submit: ({ res, body, n, stub }) => {
        sent.push(Date.now());
        if (n === 1) return void res.writeHead(429, { 'retry-after': retryAfter }).end('{"code":429,"message":"slow down"}');
        stub.ok(res, record(stub.create(body)));
      },
    });
    const t = await withStub(stub, { RETRY_AFTER_MAX_MS: '1000' });
    const paused = new Promise<{ until: number; heldAt: number }>((resolve) => t.app.poller.once('paused', resolve));
    const id = await create(t, 'told to wait forever');
    const pause = await paused;
    // Measured from the pause's own hold, not from when the stub saw the request: the 429's way back
    // takes as long as a loaded machine makes it.
    expect(pause.until - pause.heldAt).toBeLessThanOrEqual(1000);
    const waiting = row(t, id);
    expect(waiting.nextPollAt).not.toBeNull(); // an impossible date would have been stored as NULL: never polled again
    expect(must(waiting.nextPollAt).getTime() - pause.heldAt).toBeLessThanOrEqual(1000 + 250);
    const [done] = await settled(t, [id]);
    expect(done?.status).toBe('COMPLETED');
    expect(sent).toHaveLength(2);
    // The resubmission went out when the capped wait ended: not before it, and nowhere near the 10^7 s asked.
    const waited = must(sent[1]) - must(sent[0]);
    expect(waited).toBeGreaterThanOrEqual(1000 - 50);
    expect(waited).toBeLessThan(1000 + 250 + 2000); // 250 ms of jitter, 2 s for a loaded machine
  });

  test('a request sent before a 429 and answered after it does not end the Retry-After pause early', async () => {
    const submits: number[] = [];
    let holdResults = false;
    const held: { res: ServerResponse; id: string }[] = [];
    const stub = await stubUpstream({
      submit: async ({ res, body, n, stub }) => {
        submits.push(Date.now());
        if (n !== 2) return stub.ok(res, record(stub.create(body)));
        // The second submission is refused while a poll of the first is under way; that poll is
        // answered 200 just after the 429.
        await waitFor(() => held.length, (k) => k >= 1, 5000);
        res.writeHead(429, { 'retry-after': '2', 'content-type': 'application/json' }).end('{"code":429,"message":"slow down"}');
        setImmediate(() => {
          holdResults = false;
          for (const h of held.splice(0)) stub.ok(h.res, record({ id: h.id }, 'processing'));
        });
      },
      result: ({ req, res, stub }) => {
        const id = must(/predictions\/([^/]+)\/result/.exec(req.url ?? '')?.[1]);
        if (holdResults) held.push({ res, id });
        else stub.ok(res, record({ id }, 'processing'));
      },
    });
    const t = await withStub(stub, { POLL_INITIAL_MS: '100', POLL_MAX_MS: '100', UPSTREAM_TIMEOUT_MS: '5000' });
    const firstSubmitted = nextPollerEvent(t.app.poller, 'submitted');
    await create(t, 'submitted before the 429');
    await firstSubmitted;
    holdResults = true;
    const paused = nextPollerEvent(t.app.poller, 'paused', (p) => p.kind === 'rate');
    const resumed = nextPollerEvent(t.app.poller, 'resumed', (r) => r.kind === 'rate');
    await create(t, 'refused with Retry-After: 2');
    const [pause] = await paused;
    await create(t, 'created during the pause');
    await resumed;
    expect(Date.now()).toBeGreaterThanOrEqual(pause.until);
    await waitFor(() => submits.length, (n) => n >= 4, 10_000);
    // Nothing went out before the pause's end: the held poll's late 200 did not end it.
    expect(submits.slice(2).filter((at) => at < pause.until)).toEqual([]);
  });

  test('an exception in a poller pass is logged once, retried with backoff, and work goes on', async () => {
    const logs = capturedLogger();
    const t = await startApp({ SANDBOX_TASK_SECONDS: '0.3' }, { log: logs.log });
    const store = t.app.store;
    const due = store.due.bind(store);
    let failures = 0;
    store.due = (...args: Parameters<typeof due>) => {
      if (failures < 3) {
        failures++;
        throw new Error('database disk image is malformed (injected)');
      }
      return due(...args);
    };
    const id = await create(t, 'survives a broken pass');
    await waitFor(() => failures, (n) => n === 3);
    store.due = due;
    const [done] = await settled(t, [id]);
    expect(done?.status).toBe('COMPLETED');
    expect(logs.lines.filter((l) => l.includes('poller pass failed'))).toHaveLength(1);
  });

  test('after a storage failure in a pass, an idle gateway probes with a real write and /readyz recovers by itself', async () => {
    const t = await startApp();
    const store = t.app.store;
    const due = store.due.bind(store);
    let failed = false;
    store.due = (...args: Parameters<typeof due>) => {
      if (!failed) {
        failed = true;
        throw new Database.SqliteError('disk I/O error (injected)', 'SQLITE_IOERR');
      }
      return due(...args);
    };
    const paused = new Promise((resolve) => t.app.poller.once('paused', resolve));
    t.app.poller.nudge();
    expect(await paused).toMatchObject({ kind: 'storage' });
    expect((await fetch(`${t.url}/readyz`)).status).toBe(503);
    // No prediction exists, so no step will ever write: only the probe can end the pause.
    const resumed = new Promise((resolve) => t.app.poller.once('resumed', resolve));
    expect(await resumed).toEqual({ kind: 'storage' });
    expect((await fetch(`${t.url}/readyz`)).status).toBe(200);
  });

  test('a submitted prediction whose polls keep failing ends FAILED at the age limit', async () => {
    const stub = await stubUpstream({ result: ({ res }) => void res.writeHead(500).end('{"code":500,"message":"down","data":null}') });
    // No timeout in reach: a timed-out poll would be the last error instead of the 500.
    const t = await withStub(stub, { MAX_PREDICTION_AGE_SECONDS: '1', UPSTREAM_TIMEOUT_MS: '5000' });
    const id = await create(t, 'polls never answer');
    const [done] = await settled(t, [id]);
    expect(done?.status).toBe('FAILED');
    expect(done?.error).toBe('gave up: no final status from upstream within 1 s (last error: upstream answered HTTP 500: down)');
    expect(stub.counts.submit).toBe(1);
  });
});
