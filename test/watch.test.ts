import { expect, test } from 'vitest';
import { createPredictionPubSub, refreshes } from '../src/pubsub.js';
import { startApp, waitFor } from './helpers/app.js';
import { wsClient, wsSubscribe } from './helpers/clients.js';
import { must } from './helpers/must.js';

const CREATE = `mutation($p: String!) { createVideo(input: { prompt: $p }) { id } }`;
const FOLLOW = `subscription($id: ID!) { predictionUpdated(id: $id) { status error } }`;

test("a stale unsubscribe, called again after the id's listeners were dropped, leaves a newer subscriber of that id alone", () => {
  const pubsub = createPredictionPubSub();
  const got: string[] = [];
  const offFirst = pubsub.subscribe('prediction:updated', 'x', () => got.push('first'));
  offFirst(); // the id's last listener: its Set is dropped
  pubsub.subscribe('prediction:updated', 'x', (row) => got.push(`second:${row.status}`));
  offFirst(); // again, as a socket closing twice would
  pubsub.publish('prediction:updated', 'x', { status: 'PROCESSING' } as never);
  expect(got).toEqual(['second:PROCESSING']);
  expect([...pubsub.subscribedIds('prediction:updated')]).toEqual(['x']);
  expect(pubsub.count()).toBe(1);
});

test('a subscriber gets each version once: a repeated or older version is dropped, a refresh of the same version and a newer one get through', async () => {
  const t = await startApp();
  await t.app.poller.stop(); // nothing but this test publishes for the prediction
  const { id } = (await t.gql(CREATE, { p: 'versions' })).body.data.createVideo;
  const row = must(t.app.store.findById(id));
  const sub = wsSubscribe(wsClient(t.url), FOLLOW, { id });
  await waitFor(() => sub.values.length, (n) => n === 1); // listening, with the current row delivered

  const publish = (patch: Record<string, unknown>, refresh = false) => {
    const copy = { ...row, ...patch };
    if (refresh) refreshes.add(copy);
    t.app.pubsub.publish('prediction:updated', id, copy);
  };
  publish({ error: 'the same version again' });
  publish({ version: row.version - 1, error: 'an older version' });
  publish({ error: 'a refresh of the same version' }, true);
  publish({ version: row.version + 1, status: 'FAILED', error: 'the next version' });

  const values = await sub.done;
  expect(values.map((v) => v.predictionUpdated)).toEqual([
    { status: 'CREATED', error: null },
    { status: 'CREATED', error: 'a refresh of the same version' },
    { status: 'FAILED', error: 'the next version' },
  ]);
});
