import { expect, test } from 'vitest';
import { createPredictionPubSub } from '../src/pubsub.js';
import { distinct, wsClient, wsSubscribe } from './helpers/clients.js';
import { startApp, waitFor } from './helpers/app.js';
import { heldClock } from './helpers/clock.js';
import { must } from './helpers/must.js';

const CREATE = `mutation($p: String!) { createVideo(input: { prompt: $p }) { id } }`;

test('pubsub delivers by topic and id, and unsubscribing removes the listener', () => {
  const pubsub = createPredictionPubSub();
  const got: string[] = [];
  const off = pubsub.subscribe('prediction:updated', 'a', (row) => got.push(`a:${row.status}`));
  pubsub.subscribe('prediction:updated', 'b', (row) => got.push(`b:${row.status}`));
  pubsub.publish('prediction:updated', 'a', { status: 'PROCESSING' } as never);
  pubsub.publish('prediction:updated', 'c', { status: 'FAILED' } as never);
  expect(pubsub.count()).toBe(2);
  off();
  pubsub.publish('prediction:updated', 'a', { status: 'COMPLETED' } as never);
  expect(got).toEqual(['a:PROCESSING']);
  expect(pubsub.count()).toBe(1);
});

test('a receiver object is held as itself and called as its method; a function subscribed twice is two subscriptions, each ended by its own unsubscribe', () => {
  const pubsub = createPredictionPubSub();
  const got: string[] = [];
  class Named {
    constructor(readonly name: string) {}
    receive(row: { status: string }) {
      got.push(`${this.name}:${row.status}`);
    }
  }
  const r = new Named('r');
  const offR = pubsub.subscribe('prediction:updated', 'a', r);
  pubsub.subscribe('prediction:updated', 'a', r); // the same object again: one receiver, as a Set holds it
  const f = (row: { status: string }) => got.push(`f:${row.status}`);
  const offF1 = pubsub.subscribe('prediction:updated', 'a', f);
  const offF2 = pubsub.subscribe('prediction:updated', 'a', f);
  expect(pubsub.count()).toBe(3);
  pubsub.publish('prediction:updated', 'a', { status: 'PROCESSING' } as never);
  expect(got).toEqual(['r:PROCESSING', 'f:PROCESSING', 'f:PROCESSING']);
  offF1();
  offF1(); // twice: still only its own
  pubsub.publish('prediction:updated', 'a', { status: 'COMPLETED' } as never);
  expect(got.slice(3)).toEqual(['r:COMPLETED', 'f:COMPLETED']);
  offR();
  offF2();
  expect(pubsub.count()).toBe(0);
  expect(pubsub.has('prediction:updated', 'a')).toBe(false);
});

test('subscribers with different selections, variables and hosts each get their own correct result from a shared event', async () => {
  // Every subscriber's first message must be the CREATED snapshot, so the tasks stay created until all have it.
  // 3 s tasks: PROCESSING is 80% of a task, and a loaded machine can poll right past a 0.64 s one.
  const clock = heldClock();
  const { url, gql, app } = await startApp({ SANDBOX_TASK_SECONDS: '3' }, { clock });
  const a = (await gql(CREATE, { p: 'a' })).body.data.createVideo.id;
  const b = (await gql(CREATE, { p: 'b' })).body.data.createVideo.id;
  const client = wsClient(url);
  const viaLocalhost = wsClient(url.replace('127.0.0.1', 'localhost'));
  const S1 = `subscription($id: ID!) { predictionUpdated(id: $id) { id status } }`;
  const S2 = `subscription($id: ID!) { predictionUpdated(id: $id) { status keptOutputs input { prompt } } }`;
  const streams = {
    a1: wsSubscribe(client, S1, { id: a }),
    a1again: wsSubscribe(client, S1, { id: a }),
    a2: wsSubscribe(client, S2, { id: a }),
    a2local: wsSubscribe(viaLocalhost, S2, { id: a }),
    b1: wsSubscribe(client, S1, { id: b }),
  };
  await waitFor(() => Object.values(streams).map((s) => s.values.length), (ns) => ns.every((n) => n >= 1));
  for (const s of Object.values(streams)) expect(s.values[0].predictionUpdated.status).toBe('CREATED');
  clock.release();
  const done = Object.fromEntries(await Promise.all(Object.entries(streams).map(async ([k, s]) => [k, await s.done] as const)));
  const last = (k: string) => done[k]?.at(-1).predictionUpdated;
  expect(last('a1')).toEqual({ id: a, status: 'COMPLETED' });
  expect(done.a1again).toEqual(done.a1);
  expect(last('b1')).toEqual({ id: b, status: 'COMPLETED' });
  expect(last('a2').input).toEqual({ prompt: 'a' });
  expect(last('a2').keptOutputs[0]).toMatch(new RegExp(`^${url}/media/[0-9a-f]{64}\\.mp4$`));
  expect(last('a2local').keptOutputs[0]).toMatch(/^http:\/\/localhost:\d+\/media\/[0-9a-f]{64}\.mp4$/);
  expect(distinct(must(done.a2).map((v) => v.predictionUpdated.status))).toEqual(['CREATED', 'PROCESSING', 'COMPLETED']);
  // Completed subscriptions leave no listener behind.
  expect(app.pubsub.count()).toBe(0);
});

test('a client that goes away mid-subscription leaves no listener behind', async () => {
  const { url, gql, app } = await startApp({ SANDBOX_TASK_SECONDS: '600' });
  const id = (await gql(CREATE, { p: 'long' })).body.data.createVideo.id;
  const client = wsClient(url);
  const s = wsSubscribe(client, `subscription($id: ID!) { predictionUpdated(id: $id) { status } }`, { id });
  await waitFor(() => s.values.length, (n) => n >= 1);
  expect(app.pubsub.count()).toBe(1);
  await client.dispose();
  await waitFor(() => app.pubsub.count(), (n) => n === 0);
});

test('a malformed operation on a shared socket fails alone; the other subscriptions on it go on', async () => {
  const { url, gql } = await startApp({ SANDBOX_TASK_SECONDS: '0.5' });
  const id = (await gql(CREATE, { p: 'survivor' })).body.data.createVideo.id;
  const client = wsClient(url);
  const good = wsSubscribe(client, `subscription($id: ID!) { predictionUpdated(id: $id) { status } }`, { id });
  await waitFor(() => good.values.length, (n) => n >= 1);
  const broken = wsSubscribe(client, `subscription { predictionUpdated(id: "x") { status }`);
  const tooLong = wsSubscribe(client, `subscription { ${'__typename '.repeat(2100)} }`);
  // graphql-ws reports an operation refused before it ran as an `error` message for that id alone.
  await expect(broken.done).rejects.toEqual([expect.objectContaining({ message: expect.stringContaining('Syntax Error') })]);
  await expect(tooLong.done).rejects.toEqual([expect.objectContaining({ extensions: expect.objectContaining({ code: 'QUERY_TOO_COMPLEX' }) })]);
  const values = await good.done;
  expect(values.at(-1).predictionUpdated.status).toBe('COMPLETED');
});
