import { readFileSync } from 'node:fs';
import { describe, expect, test } from 'vitest';
import { systemClock } from '../src/clock.js';
import { startApp, waitFor, type TestApp } from './helpers/app.js';
import { nextPollerEvent } from './helpers/events.js';
import { must } from './helpers/must.js';
import { record, type StubContext, stubUpstream } from './helpers/stub-upstream.js';

const CREATE = `mutation($p: String!) { createVideo(input: { prompt: $p }) { id } }`;
const video = readFileSync(new URL('../assets/sandbox.mp4', import.meta.url));

const row = (t: TestApp, id: string) => must(t.app.store.findById(id));
async function create(t: TestApp): Promise<string> {
  return (await t.gql(CREATE, { p: 'outcome' })).body.data.createVideo.id;
}

describe('how a prediction ends when upstream misbehaves', () => {
  test('a submission never received (408 every time) is retried, then FAILED at the age limit with "could not submit" and the last error', async () => {
    const stub = await stubUpstream({
      submit: ({ res }) => void res.writeHead(408, { 'content-type': 'application/json' }).end('{"code":408,"message":"request timeout"}'),
    });
    const t = await startApp({ WAVESPEED_API_KEY: 'k', WAVESPEED_BASE_URL: stub.url, MAX_PREDICTION_AGE_SECONDS: '2' });
    const failure = nextPollerEvent(t.app.poller, 'failed');
    const id = await create(t);
    const [failed] = await failure;
    expect(failed.id).toBe(id);
    expect(failed.error).toMatch(/^gave up: could not submit upstream within 2 s \(last error: .*408.*\)$/);
    expect(row(t, id)).toMatchObject({ status: 'FAILED', upstreamId: null, nextPollAt: null });
    expect(stub.counts.submit).toBeGreaterThanOrEqual(2); // retried while there was time
    expect(stub.tasks).toEqual([]);
  });

  test('a prediction whose next submission comes up after the age limit is FAILED with "could not submit", and that submission is not sent', async () => {
    // The poller's time stands still until the test moves it: the retry after the first 408 stays
    // not yet due, and then comes due only after the age limit.
    const base = Date.now();
    let offset = 0;
    const clock = { now: () => new Date(base + offset), setTimeout: systemClock.setTimeout };
    const stub = await stubUpstream({
      submit: ({ res }) => void res.writeHead(408, { 'content-type': 'application/json' }).end('{"code":408,"message":"request timeout"}'),
    });
    const t = await startApp({ WAVESPEED_API_KEY: 'k', WAVESPEED_BASE_URL: stub.url, MAX_PREDICTION_AGE_SECONDS: '60' }, { clock });
    const id = await create(t);
    const waiting = await waitFor(() => row(t, id), (r) => r.error !== null && r.nextPollAt !== null);
    expect(waiting.status).toBe('CREATED');
    expect(stub.counts.submit).toBe(1);
    const failure = nextPollerEvent(t.app.poller, 'failed');
    offset = 61_000;
    const [failed] = await failure;
    expect(failed).toEqual({ id, error: `gave up: could not submit upstream within 60 s (last error: ${waiting.error})` });
    expect(stub.counts.submit).toBe(1);
  });

  test('a 404 while polling (upstream no longer has the task) ends FAILED at once, after one read', async () => {
    const stub = await stubUpstream({
      result: ({ res }) => void res.writeHead(404, { 'content-type': 'application/json' }).end('{"code":404,"message":"prediction not found","data":null}'),
    });
    const t = await startApp({ WAVESPEED_API_KEY: 'k', WAVESPEED_BASE_URL: stub.url });
    const failure = nextPollerEvent(t.app.poller, 'failed');
    const id = await create(t);
    const [failed] = await failure;
    expect(failed.id).toBe(id);
    expect(failed.error).toMatch(/^upstream no longer has this prediction: .*prediction not found/);
    expect(row(t, id)).toMatchObject({ status: 'FAILED', upstreamId: 'stub-1', nextPollAt: null });
    expect(stub.counts.result).toBe(1);
  });
});

describe('kept outputs', () => {
  /** A gateway whose upstream completes every task with one output, served by `serve`. */
  async function completedWith(serve: (ctx: StubContext) => void, env: Record<string, string> = {}) {
    let downloads = 0;
    const stub = await stubUpstream({
      result: ({ res }) => stub.ok(res, record({ id: 'stub-1' }, 'completed', [`${stub.url}/video.mp4`])),
      other: (ctx) => {
        if (ctx.req.url !== '/video.mp4') return void ctx.res.writeHead(404).end();
        downloads++;
        serve(ctx);
      },
    });
    const t = await startApp({ WAVESPEED_API_KEY: 'k', WAVESPEED_BASE_URL: stub.url, ...env });
    const id = await create(t);
    const done = await waitFor(() => row(t, id), (r) => r.status === 'COMPLETED');
    return { done, downloads: () => downloads, output: `${stub.url}/video.mp4` };
  }
  const mp4 = (headers: Record<string, string | number> = {}) => (ctx: StubContext) =>
    void ctx.res.writeHead(200, { 'content-type': 'video/mp4', ...headers }).end(video);

  test('an output that keeps failing to download (503) is tried 5 times in all, then the prediction completes with upstream URLs only', async () => {
    const { done, downloads, output } = await completedWith(({ res }) => void res.writeHead(503).end());
    expect(downloads()).toBe(5);
    expect(done).toMatchObject({ outputs: [output], keptOutputs: [], error: null });
  });

  test.each([
    ['declared in Content-Length', { 'content-length': video.length }],
    ['sent chunked, with no length', {}],
  ])('MEDIA_MAX_BYTES is the largest output kept (%s): exactly that size is kept, one byte more is not', async (_how, headers) => {
    const atLimit = await completedWith(mp4(headers), { MEDIA_MAX_BYTES: String(video.length) });
    expect(atLimit.done.keptOutputs).toEqual([expect.stringMatching(/^\/media\/[0-9a-f]{64}\.mp4$/)]);
    const over = await completedWith(mp4(headers), { MEDIA_MAX_BYTES: String(video.length - 1) });
    expect(over.done).toMatchObject({ outputs: [over.output], keptOutputs: [] });
    expect(over.downloads()).toBe(1); // too large is permanent: not retried
  });
});
