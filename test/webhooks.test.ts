import { describe, expect, test } from 'vitest';
import { startApp, waitFor } from './helpers/app.js';
import { freePort } from './helpers/process.js';
import { must } from './helpers/must.js';

const CREATE = `mutation($p: String!) { createVideo(input: { prompt: $p }) { id } }`;
const GET = `query($id: ID!) { prediction(id: $id) { status upstreamId updatedAt } }`;

/** An app whose upstream reaches it by webhook, with a safety-net poll too slow to matter in the test. */
async function webhookApp(env: Record<string, string> = {}) {
  const port = await freePort();
  return startApp({ PORT: String(port), PUBLIC_URL: `http://127.0.0.1:${port}`, POLL_WEBHOOK_FALLBACK_MS: '600000', ...env });
}

describe('webhooks', () => {
  test('a webhook delivery makes the prediction be read upstream, with no schedule-driven polling', async () => {
    const t = await webhookApp({ SANDBOX_TASK_SECONDS: '1' });
    const { id } = (await t.gql(CREATE, { p: 'by webhook' })).body.data.createVideo;
    const row = await waitFor(() => must(t.app.store.findById(id)), (r) => r.status === 'COMPLETED', 15_000);
    expect(row.webhookToken).toMatch(/^[\w-]{43}$/);
    // Two deliveries (processing at 0.2 s, completed at 1 s), each re-read upstream once; the
    // second read waits for the end of the 5 s gap between forced reads of one prediction.
    expect(t.app.sandbox?.stats.webhooksDelivered).toBe(2);
    expect(t.app.sandbox?.stats.resultRequests.get(must(row.upstreamId))).toBe(2);
    expect(must(row.completedAt).getTime() - row.createdAt.getTime()).toBeGreaterThanOrEqual(5000);
    expect(must(row.completedAt).getTime() - row.createdAt.getTime()).toBeLessThan(10_000);
  });

  test('a flood of genuine deliveries forces at most one upstream read per prediction per 5 s', async () => {
    const t = await webhookApp({ SANDBOX_TASK_SECONDS: '600' });
    const { id } = (await t.gql(CREATE, { p: 'flooded' })).body.data.createVideo;
    const row = await waitFor(() => must(t.app.store.findById(id)), (r) => r.upstreamId !== null);
    const reads = () => t.app.sandbox?.stats.resultRequests.get(must(row.upstreamId)) ?? 0;
    const polled = new Promise((resolve) => t.app.poller.once('polled', resolve));
    for (let i = 0; i < 20; i++) {
      const res = await fetch(`${t.url}/webhooks/wavespeed/${id}?token=${row.webhookToken}`, { method: 'POST', body: '{}' });
      expect(res.status).toBe(202);
    }
    await polled;
    await t.app.poller.runOnce();
    expect(reads()).toBe(1);
    // The rest of the flood is one read at the end of the gap, not 19.
    expect(t.app.store.findById(id)?.nextPollAt?.getTime()).toBeGreaterThan(Date.now() + 3000);
  });

  test('when deliveries are lost, the safety-net poll still completes the prediction', async () => {
    const port = await freePort();
    // PUBLIC_URL points at a port nobody listens on: every delivery fails.
    const t = await startApp({ PUBLIC_URL: `http://127.0.0.1:${port}`, POLL_WEBHOOK_FALLBACK_MS: '300', SANDBOX_TASK_SECONDS: '0.5' });
    const { id } = (await t.gql(CREATE, { p: 'lost webhooks' })).body.data.createVideo;
    await waitFor(() => t.app.store.findById(id)?.status, (s) => s === 'COMPLETED', 10_000);
    expect(t.app.sandbox?.stats.webhooksDelivered).toBe(0);
  });

  test('forged deliveries are refused and change nothing; even the right token cannot write a status', async () => {
    const t = await webhookApp({ SANDBOX_TASK_SECONDS: '600' });
    const { id } = (await t.gql(CREATE, { p: 'target' })).body.data.createVideo;
    const { id: otherId } = (await t.gql(CREATE, { p: 'other' })).body.data.createVideo;
    await waitFor(() => [must(t.app.store.findById(id)), must(t.app.store.findById(otherId))], (rs) => rs.every((r) => r.upstreamId !== null));
    const row = must(t.app.store.findById(id));
    const other = must(t.app.store.findById(otherId));
    const getsBefore = t.app.sandbox?.stats.resultRequests.get(must(row.upstreamId)) ?? 0;
    const forgedBody = JSON.stringify({ id: row.upstreamId, status: 'completed', outputs: ['http://evil.example/x.mp4'] });
    const post = (path: string, method = 'POST') =>
      fetch(`${t.url}${path}`, { method, headers: { 'content-type': 'application/json' }, body: method === 'POST' ? forgedBody : undefined });

    const refused = [
      await post(`/webhooks/wavespeed/${id}`),
      await post(`/webhooks/wavespeed/${id}?token=`),
      await post(`/webhooks/wavespeed/${id}?token=${'A'.repeat(43)}`),
      await post(`/webhooks/wavespeed/${id}?token=${other.webhookToken}`),
      await post(`/webhooks/wavespeed/${id}?token=${row.webhookToken?.slice(0, -1)}`),
      await post(`/webhooks/wavespeed/no-such-id?token=${row.webhookToken}`),
    ];
    expect(refused.map((r) => r.status)).toEqual([404, 404, 404, 404, 404, 404]);
    expect((await post(`/webhooks/wavespeed/${id}?token=${row.webhookToken}`, 'GET')).status).toBe(405);
    await t.app.poller.runOnce();
    expect(t.app.store.findById(id)).toEqual(row);
    expect(t.app.sandbox?.stats.resultRequests.get(must(row.upstreamId)) ?? 0).toBe(getsBefore);

    // The genuine token triggers a re-read upstream; the body's claim of completion is ignored.
    expect((await post(`/webhooks/wavespeed/${id}?token=${row.webhookToken}`)).status).toBe(202);
    await waitFor(() => t.app.sandbox?.stats.resultRequests.get(must(row.upstreamId)) ?? 0, (n) => n === getsBefore + 1);
    await t.app.poller.runOnce();
    const after = (await t.gql(GET, { id })).body.data.prediction;
    expect(after.status).not.toBe('COMPLETED');
    expect(t.app.store.findById(id)?.outputs).toEqual([]);
  });
});

test('a genuine webhook replayed after the prediction finished changes nothing and asks upstream nothing', async () => {
  const t = await webhookApp({ SANDBOX_TASK_SECONDS: '0.5' });
  const { id } = (await t.gql(CREATE, { p: 'replayed' })).body.data.createVideo;
  const done = await waitFor(() => must(t.app.store.findById(id)), (r) => r.status === 'COMPLETED', 10_000);
  const gets = t.app.sandbox?.stats.resultRequests.get(must(done.upstreamId));
  for (let i = 0; i < 3; i++) {
    const res = await fetch(`${t.url}/webhooks/wavespeed/${id}?token=${done.webhookToken}`, { method: 'POST', body: '{}' });
    expect(res.status).toBe(202);
  }
  await t.app.poller.runOnce();
  expect(t.app.store.findById(id)).toEqual(done);
  expect(t.app.sandbox?.stats.resultRequests.get(must(done.upstreamId))).toBe(gets);
});
