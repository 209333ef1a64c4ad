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
    const statuses = distinct(values.map((v: any) => v.predictionUpdated.status));
    expect(statuses.at(-1)).toBe('COMPLETED');
    expect(values.at(-1).predictionUpdated.outputs[0]).toMatch(/\/sandbox\/media\/sbx-.*\.mp4$/);
  }
  // Upstream ids from before the crash were kept: nothing was submitted twice for a recorded id.
  for (const [i, p] of before.entries()) {
    if (p.upstreamId) expect((await postGraphql(second.url, GET, { id: ids[i] })).body.data.prediction.upstreamId).toBe(p.upstreamId);
  }
});
