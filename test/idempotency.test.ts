import { join } from 'node:path';
import { expect, test } from 'vitest';
import { openDatabase } from '../src/db/client.js';
import { IDEMPOTENCY_TTL_MS, IdempotencyStore } from '../src/db/idempotency.js';
import { postGraphql, startApp, tempDir, waitFor } from './helpers/app.js';
import { bearer } from './helpers/keys.js';
import { must } from './helpers/must.js';

const CREATE = `mutation($input: CreateVideoInput!) { createVideo(input: $input) { id status input { prompt } } }`;

async function keyedApp(env: Record<string, string> = {}) {
  const t = await startApp({ SANDBOX_TASK_SECONDS: '600', ...env });
  const create = (key: string, input: Record<string, unknown>) => postGraphql(t.url, CREATE, { input }, bearer(key));
  return { ...t, create };
}

test('a retried createVideo with the same idempotency key and input returns the same prediction and submits upstream once', async () => {
  const t = await keyedApp();
  const key = t.app.keys.create('retrier', { perMinute: 2 }).key;
  const input = { prompt: 'a lighthouse at dusk', idempotencyKey: 'order-17' };
  const first = await t.create(key, input);
  const id = first.body.data.createVideo.id;
  await waitFor(() => t.app.store.findById(id)?.upstreamId, (u) => u !== null);
  // Retries, sequential and concurrent, after the submission; more of them than the key's rate allows.
  const again = await t.create(key, input);
  const burst = await Promise.all(Array.from({ length: 5 }, () => t.create(key, input)));
  for (const r of [again, ...burst]) expect(r.body).toEqual({ data: { createVideo: { id, status: expect.any(String), input: { prompt: input.prompt } } } });
  expect(t.app.store.count()).toBe(1);
  await t.app.poller.runOnce();
  expect(t.app.sandbox?.stats.submissions).toBe(1);
  // Defaults count as the input: an explicit default is the same request.
  expect((await t.create(key, { ...input, enablePromptExpansion: true })).body.data.createVideo.id).toBe(id);
});

test('concurrent first calls with one idempotency key create exactly one prediction and one submission', async () => {
  const t = await keyedApp();
  const key = t.app.keys.create('racer').key;
  const input = { prompt: 'twins', idempotencyKey: 'same-time' };
  const results = await Promise.all(Array.from({ length: 8 }, () => t.create(key, input)));
  const ids = new Set(results.map((r) => r.body.data.createVideo.id));
  expect(ids.size).toBe(1);
  expect(t.app.store.count()).toBe(1);
  await waitFor(() => t.app.store.findById(must([...ids][0]))?.upstreamId, (u) => u !== null);
  await t.app.poller.runOnce();
  expect(t.app.sandbox?.stats.submissions).toBe(1);
});

test('the same idempotency key with a different input fails with IDEMPOTENCY_CONFLICT and stores nothing; keys of other callers are separate', async () => {
  const t = await keyedApp();
  const alice = t.app.keys.create('alice').key;
  const bob = t.app.keys.create('bob').key;
  const original = (await t.create(alice, { prompt: 'original', idempotencyKey: 'k1' })).body.data.createVideo.id;
  for (const changed of [{ prompt: 'changed' }, { prompt: 'original', enablePromptExpansion: false }, { prompt: 'original ' }]) {
    const r = await t.create(alice, { ...changed, idempotencyKey: 'k1' });
    expect(r.status).toBe(409);
    expect(r.body.data).toBeNull();
    expect(r.body.errors?.[0]?.extensions).toEqual({ code: 'IDEMPOTENCY_CONFLICT', field: 'input.idempotencyKey' });
    expect(r.body.errors?.[0]?.message).toBe('this idempotencyKey was used with a different input in the last 24 hours');
  }
  expect(t.app.store.count()).toBe(1);
  // Bob's k1 is not alice's: same key, same input, a prediction of his own.
  const bobs = (await t.create(bob, { prompt: 'original', idempotencyKey: 'k1' })).body.data.createVideo.id;
  expect(bobs).not.toBe(original);
  // Without an idempotency key every call is a new prediction.
  await t.create(alice, { prompt: 'original' });
  expect(t.app.store.count()).toBe(3);
});

test('idempotency keys tried wrong: empty, blank, too long, wrong type', async () => {
  const t = await keyedApp();
  const key = t.app.keys.create('careless').key;
  for (const idempotencyKey of ['', '   ', 'x'.repeat(201)]) {
    const r = await t.create(key, { prompt: 'p', idempotencyKey });
    expect(r.body.errors?.[0]?.extensions).toEqual({ code: 'BAD_USER_INPUT', field: 'input.idempotencyKey' });
    expect(r.body.errors?.[0]?.message).toBe('idempotencyKey must be 1 to 200 characters, not blank');
  }
  const wrongType = await t.create(key, { prompt: 'p', idempotencyKey: 42 });
  expect(wrongType.status).toBe(400);
  expect(wrongType.body.errors?.[0]?.extensions?.code).toBe('BAD_USER_INPUT');
  expect((await t.create(key, { prompt: 'p', idempotencyKey: 'x'.repeat(200) })).body.data.createVideo.id).toBeTypeOf('string');
  expect(t.app.store.count()).toBe(1);
});

test('an idempotency key is kept 24 hours, then forgotten', () => {
  const db = openDatabase(join(tempDir(), 'cinegraph.sqlite'));
  try {
    const store = new IdempotencyStore(db);
    const t0 = new Date('2026-01-01T00:00:00Z');
    store.remember('owner-a', 'k', { predictionId: 'p1', inputHash: 'h1' }, t0);
    store.remember(null, 'k', { predictionId: 'p-open', inputHash: 'h0' }, t0);
    expect(store.find('owner-a', 'k', new Date(t0.getTime() + IDEMPOTENCY_TTL_MS - 1))).toEqual(expect.objectContaining({ predictionId: 'p1', inputHash: 'h1' }));
    expect(store.find(null, 'k', t0)).toEqual(expect.objectContaining({ predictionId: 'p-open' }));
    expect(store.find('owner-b', 'k', t0)).toBeUndefined();
    const later = new Date(t0.getTime() + IDEMPOTENCY_TTL_MS);
    expect(store.find('owner-a', 'k', later)).toBeUndefined();
    // Reused after expiry: the new use replaces the old, and expired rows are purged.
    store.remember('owner-a', 'k', { predictionId: 'p2', inputHash: 'h2' }, later);
    expect(store.find('owner-a', 'k', later)).toEqual(expect.objectContaining({ predictionId: 'p2' }));
    expect(db.$client.prepare('select count(*) as n from idempotency_keys').get()).toEqual({ n: 1 });
  } finally {
    db.$client.close();
  }
});
