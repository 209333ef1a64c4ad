import { describe, expect, test } from 'vitest';
import { distinct, sseSubscribe, wsClient, wsSubscribe } from './helpers/clients.js';
import { startApp, waitFor } from './helpers/app.js';
import { heldClock } from './helpers/clock.js';

const CREATE = `mutation($input: CreateVideoInput!) { createVideo(input: $input) { id status upstreamId input { prompt hasImage enablePromptExpansion } } }`;
const FOLLOW = `subscription($id: ID!) { predictionUpdated(id: $id) { id status upstreamId outputs error completedAt hasNsfwContents timings { inference } urls { get } } }`;
const GET = `query($id: ID!) { prediction(id: $id) { id status outputs error completedAt upstreamId } }`;

describe('a prediction from createVideo to COMPLETED on the sandbox', () => {
  test('graphql-ws and SSE subscribers both see CREATED → PROCESSING → COMPLETED, ending with a playable MP4', async () => {
    // Held until both subscribers have the CREATED snapshot (a first poll can beat the handshake);
    // 3 s tasks, so a poll under load still lands in PROCESSING.
    const clock = heldClock();
    const { url, gql } = await startApp({ SANDBOX_TASK_SECONDS: '3' }, { clock });
    const created = await gql(CREATE, { input: { prompt: '  a paper boat on a rainy street  ' } });
    expect(created.status).toBe(200);
    const p = created.body.data.createVideo;
    expect(p).toMatchObject({
      status: 'CREATED',
      upstreamId: null,
      input: { prompt: 'a paper boat on a rainy street', hasImage: false, enablePromptExpansion: true },
    });

    const ws = wsSubscribe(wsClient(url), FOLLOW, { id: p.id });
    const sse = sseSubscribe(url, FOLLOW, { id: p.id });
    await waitFor(() => [ws.values.length, sse.values.length], (ns) => ns.every((n) => n >= 1));
    clock.release();
    const [wsValues, sseValues] = await Promise.all([ws.done, sse.done]);

    for (const values of [wsValues, sseValues]) {
      expect(distinct(values.map((v) => v.predictionUpdated.status))).toEqual(['CREATED', 'PROCESSING', 'COMPLETED']);
    }
    expect(ws.errors).toEqual([]);
    expect(sse.errors).toEqual([]);
    const last = wsValues.at(-1).predictionUpdated;
    expect(last.upstreamId).toMatch(/^sbx-/);
    expect(last.outputs).toHaveLength(1);
    expect(last.hasNsfwContents).toEqual([false]);
    expect(last.timings.inference).toBeGreaterThan(0);
    expect(last.completedAt).not.toBeNull();
    expect(last.urls.get).toContain(`/api/v3/predictions/${last.upstreamId}/result`);

    // The query agrees with what the subscription ended on.
    const fetched = await gql(GET, { id: p.id });
    expect(fetched.body.data.prediction).toMatchObject({ status: 'COMPLETED', outputs: last.outputs });

    const video = await fetch(last.outputs[0]);
    expect(video.status).toBe(200);
    expect(video.headers.get('content-type')).toBe('video/mp4');
    const bytes = Buffer.from(await video.arrayBuffer());
    expect(bytes.subarray(4, 8).toString('latin1')).toBe('ftyp');
    expect(bytes.length).toBeGreaterThan(10_000);
  });

  test('a subscriber arriving after completion gets the final state at once and the stream completes', async () => {
    const { url, gql } = await startApp({ SANDBOX_TASK_SECONDS: '0.3' });
    const { id } = (await gql(CREATE, { input: { prompt: 'quick one' } })).body.data.createVideo;
    await waitFor(() => gql(GET, { id }), (r) => r.body.data.prediction.status === 'COMPLETED');
    const late = wsSubscribe(wsClient(url), FOLLOW, { id });
    const values = await late.done;
    expect(values.map((v) => v.predictionUpdated.status)).toEqual(['COMPLETED']);
  });

  test('an upstream task failure ends FAILED with the upstream error, seen live', async () => {
    // As above: held until the subscriber has CREATED, and long enough to be polled while PROCESSING.
    const clock = heldClock();
    const { url, gql, app } = await startApp({ SANDBOX_TASK_SECONDS: '3' }, { clock });
    app.sandbox?.setFaults({ failureRate: 1 });
    const { id } = (await gql(CREATE, { input: { prompt: 'doomed', enablePromptExpansion: false } })).body.data.createVideo;
    const ws = wsSubscribe(wsClient(url), FOLLOW, { id });
    await waitFor(() => ws.values.length, (n) => n >= 1);
    clock.release();
    const values = await ws.done;
    expect(distinct(values.map((v) => v.predictionUpdated.status))).toEqual(['CREATED', 'PROCESSING', 'FAILED']);
    const last = values.at(-1).predictionUpdated;
    expect(last.error).toBe('sandbox: injected task failure');
    expect(last.outputs).toEqual([]);
    expect(last.completedAt).not.toBeNull();
  });

  test('predictionUpdated for an unknown id ends with NOT_FOUND on both transports instead of hanging', async () => {
    const { url } = await startApp();
    const ws = wsSubscribe(wsClient(url), FOLLOW, { id: 'no-such-id' });
    expect(await ws.done).toEqual([]);
    expect(ws.errors).toEqual([expect.objectContaining({ message: 'no prediction with id "no-such-id"', extensions: { code: 'NOT_FOUND', field: 'id' } })]);
    const sse = sseSubscribe(url, FOLLOW, { id: 'no-such-id' });
    await sse.done;
    expect(sse.values).toEqual([]);
    expect(sse.errors).toEqual([expect.objectContaining({ extensions: { code: 'NOT_FOUND', field: 'id' } })]);
  });
});

describe('queries', () => {
  test('prediction(id) is null for an unknown id', async () => {
    const { gql } = await startApp();
    const r = await gql(GET, { id: 'missing' });
    expect(r.body).toEqual({ data: { prediction: null } });
  });

  test('predictions pages newest first with cursors and filters by status', async () => {
    const { gql, app } = await startApp({ SANDBOX_TASK_SECONDS: '600' });
    await app.poller.stop(); // keep everything CREATED so the filter has something to tell apart
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) ids.push((await gql(CREATE, { input: { prompt: `video ${i}` } })).body.data.createVideo.id);
    const LIST = `query($first: Int, $after: String, $status: PredictionStatus) { predictions(first: $first, after: $after, status: $status) { nodes { id } edges { cursor node { id } } pageInfo { hasNextPage endCursor } } }`;
    const page1 = (await gql(LIST, { first: 2 })).body.data.predictions;
    expect(page1.nodes.map((n: { id: string }) => n.id)).toEqual([ids[4], ids[3]]);
    expect(page1.pageInfo.hasNextPage).toBe(true);
    expect(page1.edges[1].cursor).toBe(page1.pageInfo.endCursor);
    const page2 = (await gql(LIST, { first: 2, after: page1.pageInfo.endCursor })).body.data.predictions;
    expect(page2.nodes.map((n: { id: string }) => n.id)).toEqual([ids[2], ids[1]]);
    const page3 = (await gql(LIST, { first: 2, after: page2.pageInfo.endCursor })).body.data.predictions;
    expect(page3.nodes.map((n: { id: string }) => n.id)).toEqual([ids[0]]);
    expect(page3.pageInfo).toEqual({ hasNextPage: false, endCursor: page3.edges[0].cursor });
    expect((await gql(LIST, { status: 'CREATED' })).body.data.predictions.nodes).toHaveLength(5);
    expect((await gql(LIST, { status: 'COMPLETED' })).body.data.predictions).toEqual({ nodes: [], edges: [], pageInfo: { hasNextPage: false, endCursor: null } });
  });
});
