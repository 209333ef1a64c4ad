import { expect, test } from 'vitest';
import { distinct, wsClient, wsSubscribe } from './helpers/clients.js';
import { postGraphql, tempDir, waitFor } from './helpers/app.js';
import { freePort, spawnServer } from './helpers/process.js';

const CREATE = `mutation($p: String!) { createVideo(input: { prompt: $p }) { id } }`;
const GET = `query($id: ID!) { prediction(id: $id) { status upstreamId outputs } }`;
const FOLLOW = `subscription($id: ID!) { predictionUpdated(id: $id) { status outputs } }`;

test('a server killed with SIGKILL mid-flight is restarted on the same database and every prediction completes', async () => {
  const env = { DATA_DIR: tempDir(), PORT: String(await freePort()), SANDBOX_TASK_SECONDS: '2' };
  const first = await spawnServer(env);
  const ids: string[] = [];
  for (let i = 0; i < 3; i++) ids.push((await postGraphql(first.url, CREATE, { p: `restart ${i}` })).body.data.createVideo.id);

  // Kill once the work is upstream but not finished: the new process must pick it up from SQLite.
  await waitFor(() => postGraphql(first.url, GET, { id: ids[0] }), (r) => r.body.data.prediction.upstreamId !== null);
  const before = await Promise.all(ids.map(async (id) => (await postGraphql(first.url, GET, { id })).body.data.prediction));
  expect(before.every((p) => p.status !== 'COMPLETED')).toBe(true);
  first.child.kill('SIGKILL');
  await first.exited;

  const second = await spawnServer(env);
  const client = wsClient(second.url);
  const streams = ids.map((id) => wsSubscribe(client, FOLLOW, { id }));
  const results = await Promise.all(streams.map((s) => s.done));
  for (const values of results) {
    const statuses = distinct(values.map((v) => v.predictionUpdated.status));
    expect(statuses.at(-1)).toBe('COMPLETED');
    expect(values.at(-1).predictionUpdated.outputs[0]).toMatch(/\/sandbox\/media\/sbx-.*\.mp4$/);
  }
  // Upstream ids from before the crash were kept: nothing was submitted twice for a recorded id.
  for (const [i, p] of before.entries()) {
    if (p.upstreamId) expect((await postGraphql(second.url, GET, { id: ids[i] })).body.data.prediction.upstreamId).toBe(p.upstreamId);
  }
});

test('SIGKILL in the middle of a faulty batch, then a restart on the same database: every prediction ends where its task did', async () => {
  // Faults that strike before a task exists still count as uncertain submissions: allow more of them than the default 3.
  const faults = { SANDBOX_ERROR_RATE: '0.3', SANDBOX_MALFORMED_RATE: '0.1', SANDBOX_FAILURE_RATE: '0.2', SANDBOX_TASK_SECONDS: '1.5', MAX_SUBMISSIONS_PER_PREDICTION: '12' };
  const env = { DATA_DIR: tempDir(), PORT: String(await freePort()), ...faults };
  const first = await spawnServer(env);
  const ids: string[] = [];
  for (let i = 0; i < 12; i++) ids.push((await postGraphql(first.url, CREATE, { p: `batch ${i}` })).body.data.createVideo.id);
  await new Promise((r) => setTimeout(r, 300 + Math.random() * 700));
  first.child.kill('SIGKILL');
  await first.exited;

  const second = await spawnServer(env);
  const final = await waitFor(
    () => Promise.all(ids.map(async (id) => (await postGraphql(second.url, `query($id: ID!) { prediction(id: $id) { status upstreamId error } }`, { id })).body.data.prediction)),
    (ps) => ps.every((p) => p.status === 'COMPLETED' || p.status === 'FAILED'),
    45_000,
  );
  for (const p of final) {
    const failedUpstream = /-f-[0-9a-f]{12}$/.test(p.upstreamId);
    expect(p.status).toBe(failedUpstream ? 'FAILED' : 'COMPLETED');
  }
});

test('SIGTERM lets in-flight work land, closes subscriptions cleanly and exits 0; a restart finishes the rest', async () => {
  const env = { DATA_DIR: tempDir(), PORT: String(await freePort()), SANDBOX_TASK_SECONDS: '2' };
  const first = await spawnServer(env);
  const { id } = (await postGraphql(first.url, CREATE, { p: 'graceful' })).body.data.createVideo;
  const closed = new Promise<number>((resolve) => {
    const client = wsClient(first.url);
    client.on('closed', (event) => resolve((event as { code: number }).code));
    wsSubscribe(client, FOLLOW, { id });
  });
  await waitFor(() => postGraphql(first.url, GET, { id }), (r) => r.body.data.prediction.upstreamId !== null);
  first.child.kill('SIGTERM');
  expect(await first.exited).toBe(0);
  expect(await closed).toBe(1001);

  const second = await spawnServer(env);
  const values = await wsSubscribe(wsClient(second.url), FOLLOW, { id }).done;
  expect(values.at(-1).predictionUpdated.status).toBe('COMPLETED');
});
