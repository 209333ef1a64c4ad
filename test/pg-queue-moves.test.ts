import { expect, test } from 'vitest';
import { openApp } from '../src/app.js';
import { loadConfig } from '../src/config.js';
import { fastEnv, postGraphql, tempDir, waitFor } from './helpers/app.js';
import { wsClient, wsSubscribe } from './helpers/clients.js';
import { onDispose } from './helpers/dispose.js';
import { sandboxServer } from './helpers/sandbox-server.js';
import { usePostgres } from './helpers/postgres.js';

const CREATE = 'mutation ($p: String!) { createVideo(input: { prompt: $p }) { id } }';
const CANCEL = 'mutation ($id: ID!) { cancelPrediction(id: $id) { id status } }';
const FOLLOW = 'subscription ($id: ID!) { predictionUpdated(id: $id) { id status queuePosition } }';

const db = usePostgres();

test('a queued prediction followed on one instance gets its new place when another instance moves the queue', async () => {
  const { url: upstream, sandbox } = await sandboxServer(30);
  const env = { ...fastEnv, WAVESPEED_API_KEY: 'test-key', WAVESPEED_BASE_URL: upstream, DATABASE_URL: db.url(), UPSTREAM_MAX_CONCURRENT: '1', SUBSCRIPTION_RESYNC_MS: '0' };
  const a = await openApp(loadConfig({ ...env, DATA_DIR: tempDir() }));
  const b = await openApp(loadConfig({ ...env, DATA_DIR: tempDir() }));
  const aUrl = await a.start();
  const bUrl = await b.start();
  onDispose(() => a.stop());
  onDispose(() => b.stop());
  // B only serves subscribers: every move of the queue is A's, so only the bus can tell B of it.
  await b.poller.stop();

  const ids: string[] = [];
  for (const p of ['first', 'second', 'third']) ids.push((await postGraphql(aUrl, CREATE, { p })).body.data.createVideo.id);
  const [first, second, third] = ids as [string, string, string];
  // One task at a time (UPSTREAM_MAX_CONCURRENT=1): the first runs (30 s), the others wait.
  await waitFor(() => sandbox.stats.submissions, (n) => n === 1);
  const followed = wsSubscribe(wsClient(bUrl), FOLLOW, { id: third });
  await waitFor(() => followed.values.length, (n) => n > 0);
  expect(followed.values.at(-1)?.predictionUpdated.queuePosition).toBe(2);

  // Cancelling the running one on A lets A submit the second: the third is next.
  expect((await postGraphql(aUrl, CANCEL, { id: first })).body.data.cancelPrediction.status).toBe('CANCELED');
  await waitFor(() => sandbox.stats.submissions, (n) => n === 2);
  await waitFor(() => followed.values.at(-1)?.predictionUpdated.queuePosition, (p) => p === 1, 10_000);
  // And cancelling the second on A makes the third the one submitted.
  expect((await postGraphql(aUrl, CANCEL, { id: second })).body.data.cancelPrediction.status).toBe('CANCELED');
  await waitFor(() => followed.values.at(-1)?.predictionUpdated, (u) => u?.status === 'PROCESSING' || (u?.status === 'CREATED' && u.queuePosition === null), 10_000);
}, 60_000);
