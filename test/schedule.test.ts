import { expect, test } from 'vitest';
import { scaledClock } from '../src/clock.js';
import { startApp, waitFor, type TestApp } from './helpers/app.js';
import { must } from './helpers/must.js';

const CREATE = `mutation($p: String!) { createVideo(input: { prompt: $p }) { id } }`;
const TASK_SECONDS = 180;
// Three sandbox minutes in six seconds; schedule and sandbox share the clock. Each request's real
// latency is multiplied by SPEED in sandbox time: at 60x a loaded machine (a parallel suite and a
// mutation run on two cores) cut the 1-second loop to 106 GETs of the 108 asserted below.
const SPEED = 30;

async function getsPerPrediction(env: Record<string, string>): Promise<number[]> {
  const t: TestApp = await startApp({ SANDBOX_TASK_SECONDS: String(TASK_SECONDS), ...env }, { clock: scaledClock(SPEED) });
  const ids: string[] = [];
  for (let i = 0; i < 4; i++) ids.push((await t.gql(CREATE, { p: `long ${i}` })).body.data.createVideo.id);
  const rows = await waitFor(() => ids.map((id) => must(t.app.store.findById(id))), (rs) => rs.every((r) => r.status === 'COMPLETED'), 30_000);
  return rows.map((r) => must(t.app.sandbox?.stats.resultRequests.get(must(r.upstreamId))));
}

test('the adaptive schedule spends far fewer upstream GETs on a 3-minute task than a 1-second loop', async () => {
  const adaptive = await getsPerPrediction({ POLL_INITIAL_MS: '5000', POLL_GROWTH: '0.2', POLL_MAX_MS: '30000' });
  const fixedLoop = await getsPerPrediction({ POLL_INITIAL_MS: '1000', POLL_GROWTH: '0', POLL_MAX_MS: '1000' });
  // A 1-second loop makes about one GET per second of the task (a little less here: at 30× speed
  // each request's few real milliseconds of latency count as a tenth of a second or more).
  for (const n of fixedLoop) expect(n).toBeGreaterThanOrEqual(TASK_SECONDS * 0.6);
  for (const n of adaptive) expect(n).toBeLessThanOrEqual(TASK_SECONDS / 6);
  const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
  console.log(`GETs per 3-minute prediction: adaptive ${adaptive.join(', ')}; 1-second loop ${fixedLoop.join(', ')}`);
  expect(mean(adaptive) / mean(fixedLoop)).toBeLessThan(0.2);
});
