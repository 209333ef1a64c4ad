import { expect, test } from 'vitest';
import { postGraphql, startApp, tempDir } from './helpers/app.js';
import { sseSubscribe, wsClient, wsSubscribe } from './helpers/clients.js';
import { bearer, createKey } from './helpers/keys.js';

const CREATE = `mutation($p: String!) { createVideo(input: { prompt: $p }) { id } }`;
const GET = `query($id: ID!) { prediction(id: $id) { id input { prompt } } }`;
const LIST = `query($status: PredictionStatus) { predictions(first: 100, status: $status) { nodes { id input { prompt } } } }`;
const WATCH = `subscription($id: ID!) { predictionUpdated(id: $id) { id status input { prompt } } }`;

/** Two keys, each with predictions of its own, on one server. */
async function twoOwners() {
  const dataDir = tempDir();
  const alice = await createKey(dataDir, 'alice');
  const bob = await createKey(dataDir, 'bob');
  const t = await startApp({ DATA_DIR: dataDir, SANDBOX_TASK_SECONDS: '0.6' });
  const create = async (key: string, p: string) => (await postGraphql(t.url, CREATE, { p }, bearer(key))).body.data.createVideo.id as string;
  const a1 = await create(alice, 'alice one');
  const b1 = await create(bob, 'bob one');
  const a2 = await create(alice, 'alice two');
  return { ...t, alice, bob, a1, a2, b1 };
}

test("prediction and predictions show only the caller's own; another owner's id answers as an unknown one", async () => {
  const { url, alice, bob, a1, a2, b1 } = await twoOwners();
  const as = (key: string, q: string, v?: Record<string, unknown>) => postGraphql(url, q, v, bearer(key)).then((r) => r.body);

  expect((await as(alice, GET, { id: a1 })).data.prediction).toEqual({ id: a1, input: { prompt: 'alice one' } });
  expect(await as(bob, GET, { id: a1 })).toEqual(await as(bob, GET, { id: 'no-such-id' }));
  expect((await as(bob, GET, { id: a1 })).data.prediction).toBeNull();
  expect((await as(alice, GET, { id: b1 })).data.prediction).toBeNull();

  expect((await as(alice, LIST)).data.predictions.nodes.map((n: { id: string }) => n.id)).toEqual([a2, a1]);
  expect((await as(bob, LIST)).data.predictions.nodes).toEqual([{ id: b1, input: { prompt: 'bob one' } }]);
  expect((await as(bob, LIST, { status: 'CREATED' })).data.predictions.nodes.map((n: { id: string }) => n.id)).not.toContain(a1);
  // Paging stays within the owner's rows: alice's second page after a2 holds only a1.
  const page = await as(alice, `{ predictions(first: 1) { nodes { id } pageInfo { endCursor hasNextPage } } }`);
  expect(page.data.predictions.nodes).toEqual([{ id: a2 }]);
  const next = await as(alice, `query($after: String) { predictions(first: 5, after: $after) { nodes { id } pageInfo { hasNextPage } } }`, { after: page.data.predictions.pageInfo.endCursor });
  expect(next.data.predictions).toEqual({ nodes: [{ id: a1 }], pageInfo: { hasNextPage: false } });
});

test("predictionUpdated over graphql-ws and SSE follows the caller's own prediction and answers another owner's with NOT_FOUND", async () => {
  const { url, alice, bob, a1, b1 } = await twoOwners();
  const aliceWs = wsClient(url, { authorization: `Bearer ${alice}` });
  const own = wsSubscribe(aliceWs, WATCH, { id: a1 });
  const ownSse = sseSubscribe(url, WATCH, { id: a1 }, bearer(alice));
  const foreignWs = wsSubscribe(aliceWs, WATCH, { id: b1 });
  const foreignSse = sseSubscribe(url, WATCH, { id: b1 }, bearer(alice));
  const unknownWs = wsSubscribe(aliceWs, WATCH, { id: 'no-such-id' });
  // Bob on alice's id, same document and variables, is refused when he subscribes (watch.ts), so he never
  // shares an event with her: this checks isolation, not the shared execution's operation key
  // (test/shared-execution.test.ts checks that directly).
  const bobOnA = wsSubscribe(wsClient(url, { authorization: `Bearer ${bob}` }), WATCH, { id: a1 });

  expect((await own.done).at(-1).predictionUpdated).toEqual({ id: a1, status: 'COMPLETED', input: { prompt: 'alice one' } });
  expect((await ownSse.done).at(-1).predictionUpdated.status).toBe('COMPLETED');
  await foreignWs.done.catch(() => {});
  await unknownWs.done.catch(() => {});
  await foreignSse.done;
  await bobOnA.done.catch(() => {});
  const codeAndMessage = (errors: unknown[]) =>
    (errors as Array<{ message: string; extensions?: { code?: string } }>).map((e) => [e.extensions?.code, e.message.replace(/"[^"]*"/, '"…"')]);
  expect(foreignWs.values).toEqual([]);
  expect(codeAndMessage(foreignWs.errors)).toEqual([['NOT_FOUND', 'no prediction with id "…"']]);
  expect(codeAndMessage(foreignWs.errors)).toEqual(codeAndMessage(unknownWs.errors));
  expect(foreignSse.values).toEqual([]);
  expect(codeAndMessage(foreignSse.errors)).toEqual([['NOT_FOUND', 'no prediction with id "…"']]);
  expect(bobOnA.values).toEqual([]);
  expect(codeAndMessage(bobOnA.errors)).toEqual([['NOT_FOUND', 'no prediction with id "…"']]);
});

test('kept media stays a capability URL: a <video> loads it without a header, and no route lists media', async () => {
  const dataDir = tempDir();
  const key = await createKey(dataDir, 'viewer');
  const { url } = await startApp({ DATA_DIR: dataDir, SANDBOX_TASK_SECONDS: '0.5' });
  const id = (await postGraphql(url, CREATE, { p: 'kept' }, bearer(key))).body.data.createVideo.id;
  const watched = wsSubscribe(wsClient(url, { authorization: `Bearer ${key}` }), `subscription($id: ID!) { predictionUpdated(id: $id) { status keptOutputs } }`, { id });
  const last = (await watched.done).at(-1).predictionUpdated;
  expect(last.status).toBe('COMPLETED');
  const video = await fetch(last.keptOutputs[0], { headers: { range: 'bytes=0-99' } });
  expect([video.status, video.headers.get('content-type')]).toEqual([206, 'video/mp4']);
  await video.body?.cancel();
  for (const path of ['/media/', '/media', '/media/index.html']) {
    const r = await fetch(`${url}${path}`);
    expect([path, r.status]).toEqual([path, 404]);
    await r.body?.cancel();
  }
  // The API itself still wants the key.
  expect((await fetch(`${url}/graphql?query=${encodeURIComponent('{ predictions { nodes { id } } }')}`)).status).toBe(401);
});
