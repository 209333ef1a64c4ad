import { createHmac } from 'node:crypto';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { describe, expect, test, vi } from 'vitest';
import { ConfigError, loadConfig } from '../src/config.js';
import { decodeTaskId } from '../src/upstream/sandbox-tasks.js';
import { SANDBOX_WEBHOOK_ATTEMPTS } from '../src/upstream/sandbox-webhooks.js';
import { SandboxUpstream } from '../src/upstream/sandbox.js';
import { signUpstreamDelivery, verifyUpstreamDelivery } from '../src/webhooks/incoming.js';
import { startApp, waitFor, type TestApp } from './helpers/app.js';
import { onDispose } from './helpers/dispose.js';
import { listen } from './helpers/listen.js';
import { must } from './helpers/must.js';
import { freePort } from './helpers/process.js';

const CREATE = `mutation($p: String!) { createVideo(input: { prompt: $p }) { id } }`;
const GET = `query($id: ID!) { prediction(id: $id) { status upstreamId updatedAt } }`;

/** An app whose upstream reaches it by webhook, with a safety-net poll too slow to matter in the test. */
async function webhookApp(env: Record<string, string> = {}) {
  const port = await freePort();
  return startApp({ PORT: String(port), PUBLIC_URL: `http://127.0.0.1:${port}`, POLL_WEBHOOK_FALLBACK_MS: '600000', ...env });
}

interface Delivery {
  id?: string;
  /** Unix seconds. @default now */
  timestamp?: number;
  /** @default the sandbox's own secret */
  secret?: string;
  body?: string;
  /** Replaces the computed signature header. */
  signature?: string;
  omit?: 'webhook-id' | 'webhook-timestamp' | 'webhook-signature';
}

/** POSTs a delivery as upstream does: signed `v3,<hex>` over "{id}.{timestamp}.{body}". */
async function deliver(t: TestApp, path: string, d: Delivery = {}): Promise<Response> {
  const id = d.id ?? crypto.randomUUID();
  const timestamp = d.timestamp ?? Math.floor(Date.now() / 1000);
  const body = d.body ?? '{"status":"completed"}';
  const headers: Record<string, string> = {
    'content-type': 'application/json',
    'webhook-id': id,
    'webhook-timestamp': String(timestamp),
    'webhook-signature': d.signature ?? signUpstreamDelivery(d.secret ?? must(t.app.sandbox).webhookSecret, id, timestamp, body),
  };
  if (d.omit) delete headers[d.omit];
  return fetch(`${t.url}${path}`, { method: 'POST', headers, body });
}

/** The webhook-ids the gateway remembers, in order. */
const receipts = (t: TestApp) => (t.app.db.$client.prepare('SELECT webhook_id AS id FROM webhook_receipts ORDER BY webhook_id').all() as { id: string }[]).map((r) => r.id);

/** A prediction submitted upstream (with a task that runs for minutes), as stored. */
async function submitted(t: TestApp, prompt: string) {
  const { id } = (await t.gql(CREATE, { p: prompt })).body.data.createVideo;
  return waitFor(() => must(t.app.store.findById(id)), (r) => r.upstreamId !== null);
}

describe('incoming webhooks: verified', () => {
  test('PUBLIC_URL must be https:// unless it is a loopback address', () => {
    for (const ok of ['https://cine.example.com', 'http://127.0.0.1:4000', 'http://localhost:4000', 'http://[::1]:4000']) {
      expect(loadConfig({ PUBLIC_URL: ok }).publicUrl).toBe(ok);
    }
    for (const bad of ['http://cine.example.com', 'http://10.0.0.5:4000', 'ftp://127.0.0.1']) {
      expect(() => loadConfig({ PUBLIC_URL: bad })).toThrow(ConfigError);
      expect(() => loadConfig({ PUBLIC_URL: bad })).toThrow(/PUBLIC_URL: must be an https:\/\/ URL/);
    }
  });

  test("the sandbox's signed terminal delivery completes the prediction right after the task's end (not the 10-minute safety net), with one upstream read", async () => {
    const t = await webhookApp({ SANDBOX_TASK_SECONDS: '1' });
    const { id } = (await t.gql(CREATE, { p: 'by webhook' })).body.data.createVideo;
    const row = await waitFor(() => must(t.app.store.findById(id)), (r) => r.status === 'COMPLETED', 15_000);
    const task = must(decodeTaskId(must(row.upstreamId)));
    const endedAt = task.createdAt + task.durationMs;
    // Nothing was polled on a schedule (the safety net is 10 minutes away): the one delivery, at the end, did it.
    // 5 s, not 1: the delivery and its read take what a loaded machine gives them; 10 minutes is still far off.
    expect(must(row.completedAt).getTime() - endedAt).toBeLessThan(5000);
    expect(t.app.sandbox?.stats.webhooksDelivered).toBe(1);
    expect(t.app.sandbox?.stats.webhookAttempts).toBe(1);
    expect(t.app.sandbox?.stats.resultRequests.get(must(row.upstreamId))).toBe(1);
    expect(row.webhookToken).toMatch(/^[\w-]{43}$/);
  });

  test('a bad signature, a wrong secret, a tampered body, missing headers or a timestamp over 5 minutes away are refused with 401 and change nothing', async () => {
    const t = await webhookApp({ SANDBOX_TASK_SECONDS: '600' });
    const row = await submitted(t, 'target');
    const path = `/webhooks/wavespeed/${row.id}?token=${row.webhookToken}`;
    const reads = () => t.app.sandbox?.stats.resultRequests.get(must(row.upstreamId)) ?? 0;
    const now = Math.floor(Date.now() / 1000);
    const secret = must(t.app.sandbox).webhookSecret;
    const goodSig = signUpstreamDelivery(secret, 'fixed-id', now, '{}');
    const refused = [
      await deliver(t, path, { secret: 'whsec_not-the-account-secret' }),
      await deliver(t, path, { secret: secret.slice('whsec_'.length, -1) }), // the key, one character short
      await deliver(t, path, { id: 'fixed-id', timestamp: now, body: '{"status":"failed"}', signature: goodSig }), // signed for another body
      await deliver(t, path, { id: 'other-id', timestamp: now, body: '{}', signature: goodSig }), // signed for another id
      await deliver(t, path, { signature: goodSig.replace('v3,', 'v1,') }),
      await deliver(t, path, { signature: 'v3,' }),
      await deliver(t, path, { signature: `v3,${'0'.repeat(64)}` }),
      await deliver(t, path, { omit: 'webhook-signature' }),
      await deliver(t, path, { omit: 'webhook-id' }),
      await deliver(t, path, { omit: 'webhook-timestamp' }),
      await deliver(t, path, { id: 'too-old', timestamp: now - 301 }), // correctly signed, too old
      // Correctly signed, too far ahead. Taken when sent, rounded up: `now` is seconds old by this delivery on a loaded
      // machine, and now + 301 had come within 5 minutes (CI failed so once).
      await deliver(t, path, { timestamp: Math.ceil(Date.now() / 1000) + 301 }),
      await deliver(t, path, { timestamp: Number.NaN }),
      await deliver(t, path, { id: 'x'.repeat(300) }), // correctly signed, an absurd id
    ];
    expect(refused.map((r) => r.status)).toEqual(refused.map(() => 401));
    expect(await refused[10]?.json()).toEqual({ message: 'delivery not verified: webhook-timestamp is more than 5 minutes away' });
    // A body over 256 KiB is not read into memory, let alone verified.
    expect((await deliver(t, path, { body: JSON.stringify({ pad: 'x'.repeat(300 * 1024) }) })).status).toBe(413);
    await t.app.poller.runOnce();
    expect(t.app.store.findById(row.id)).toEqual(row);
    expect(reads()).toBe(0);
    // No refused delivery left its webhook-id behind: the genuine ones with those ids are not taken for replays.
    expect(receipts(t)).toEqual([]);
    // A delivery 4 minutes old is within the tolerance. Taken when sent: `now` is as old as the deliveries above.
    expect((await deliver(t, path, { id: 'too-old', timestamp: Math.floor(Date.now() / 1000) - 240 })).status).toBe(202);
    await waitFor(reads, (n) => n === 1);
    expect((await deliver(t, path, { id: 'fixed-id' })).status).toBe(202);
    expect(receipts(t)).toEqual(['fixed-id', 'too-old']);
  });

  test('a replayed webhook-id is acknowledged and dropped: no upstream read is scheduled', async () => {
    const t = await webhookApp({ SANDBOX_TASK_SECONDS: '600' });
    const row = await submitted(t, 'replayed');
    const path = `/webhooks/wavespeed/${row.id}?token=${row.webhookToken}`;
    const polled = new Promise((resolve) => t.app.poller.once('polled', resolve));
    const first = { id: 'wh-once', timestamp: Math.floor(Date.now() / 1000), body: '{"status":"completed"}' };
    expect((await deliver(t, path, first)).status).toBe(202);
    await polled;
    await t.app.poller.runOnce();
    const afterFirst = must(t.app.store.findById(row.id));
    // Back on the 10-minute safety net after the forced read.
    expect(must(afterFirst.nextPollAt).getTime()).toBeGreaterThan(Date.now() + 60_000);
    // The very same delivery again, and the same id with a fresh timestamp and signature.
    const replays = [await deliver(t, path, first), await deliver(t, path, { id: 'wh-once' })];
    expect(replays.map((r) => r.status)).toEqual([200, 200]);
    expect(await replays[0]?.json()).toEqual({ message: 'duplicate delivery: already acted on' });
    // A delivery that got through would have pulled the next read to the end of the 5 s gap.
    expect(t.app.store.findById(row.id)).toEqual(afterFirst);
    expect(t.app.sandbox?.stats.resultRequests.get(must(row.upstreamId))).toBe(1);
    // Remembered in SQLite, not in memory.
    expect(t.app.db.$client.prepare('SELECT count(*) AS n FROM webhook_receipts WHERE webhook_id = ?').get('wh-once')).toEqual({ n: 1 });
  });

  test('a signed delivery still needs the prediction\'s own token: a wrong or missing one is 404 and changes nothing; GET is 405', async () => {
    const t = await webhookApp({ SANDBOX_TASK_SECONDS: '600' });
    const row = await submitted(t, 'target');
    const other = await submitted(t, 'other');
    const reads = () => t.app.sandbox?.stats.resultRequests.get(must(row.upstreamId)) ?? 0;
    // All with one webhook-id: a refused delivery must not make the next one a "duplicate".
    const id = 'wh-refused-by-token';
    const refused = [
      await deliver(t, `/webhooks/wavespeed/${row.id}`, { id }),
      await deliver(t, `/webhooks/wavespeed/${row.id}?token=`, { id }),
      await deliver(t, `/webhooks/wavespeed/${row.id}?token=${'A'.repeat(43)}`, { id }),
      await deliver(t, `/webhooks/wavespeed/${row.id}?token=${other.webhookToken}`, { id }),
      await deliver(t, `/webhooks/wavespeed/${row.id}?token=${row.webhookToken?.slice(0, -1)}`, { id }),
      await deliver(t, `/webhooks/wavespeed/no-such-id?token=${row.webhookToken}`, { id }),
    ];
    expect(refused.map((r) => r.status)).toEqual([404, 404, 404, 404, 404, 404]);
    expect((await fetch(`${t.url}/webhooks/wavespeed/${row.id}?token=${row.webhookToken}`)).status).toBe(405);
    await t.app.poller.runOnce();
    expect(t.app.store.findById(row.id)).toEqual(row);
    expect(reads()).toBe(0);
    expect(receipts(t)).toEqual([]);

    // The genuine delivery (the same webhook-id) triggers a re-read upstream; the body's claim of completion is ignored.
    const forged = JSON.stringify({ id: row.upstreamId, status: 'completed', outputs: ['http://evil.example/x.mp4'] });
    expect((await deliver(t, `/webhooks/wavespeed/${row.id}?token=${row.webhookToken}`, { id, body: forged })).status).toBe(202);
    expect(receipts(t)).toEqual([id]);
    await waitFor(reads, (n) => n === 1);
    await t.app.poller.runOnce();
    expect((await t.gql(GET, { id: row.id })).body.data.prediction.status).not.toBe('COMPLETED');
    expect(t.app.store.findById(row.id)?.outputs).toEqual([]);
  });

  test('a flood of genuine deliveries forces at most one upstream read per prediction per 5 s', async () => {
    const t = await webhookApp({ SANDBOX_TASK_SECONDS: '600' });
    const row = await submitted(t, 'flooded');
    const reads = () => t.app.sandbox?.stats.resultRequests.get(must(row.upstreamId)) ?? 0;
    const polled = new Promise((resolve) => t.app.poller.once('polled', resolve));
    const floodStart = Date.now();
    for (let i = 0; i < 20; i++) {
      expect((await deliver(t, `/webhooks/wavespeed/${row.id}?token=${row.webhookToken}`)).status).toBe(202);
    }
    await polled;
    await t.app.poller.runOnce();
    expect(reads()).toBe(1);
    // The rest of the flood is one read at the end of the gap, not 19: 5 s after the first delivery,
    // which came after floodStart (however long the 20 POSTs took).
    expect(t.app.store.findById(row.id)?.nextPollAt?.getTime()).toBeGreaterThanOrEqual(floodStart + 5000);
  });

  test('when deliveries are lost, the safety-net poll still completes the prediction', async () => {
    const port = await freePort();
    // PUBLIC_URL points at a port nobody listens on: every delivery fails.
    const t = await startApp({ PUBLIC_URL: `http://127.0.0.1:${port}`, POLL_WEBHOOK_FALLBACK_MS: '300', SANDBOX_TASK_SECONDS: '0.5' });
    const { id } = (await t.gql(CREATE, { p: 'lost webhooks' })).body.data.createVideo;
    await waitFor(() => t.app.store.findById(id)?.status, (s) => s === 'COMPLETED', 10_000);
    expect(t.app.sandbox?.stats.webhooksDelivered).toBe(0);
  });

  test('a genuine delivery replayed (new ids) after the prediction finished changes nothing and asks upstream nothing', async () => {
    const t = await webhookApp({ SANDBOX_TASK_SECONDS: '0.5' });
    const { id } = (await t.gql(CREATE, { p: 'finished' })).body.data.createVideo;
    const done = await waitFor(() => must(t.app.store.findById(id)), (r) => r.status === 'COMPLETED', 10_000);
    const gets = t.app.sandbox?.stats.resultRequests.get(must(done.upstreamId));
    for (let i = 0; i < 3; i++) expect((await deliver(t, `/webhooks/wavespeed/${id}?token=${done.webhookToken}`)).status).toBe(202);
    await t.app.poller.runOnce();
    expect(t.app.store.findById(id)).toEqual(done);
    expect(t.app.sandbox?.stats.resultRequests.get(must(done.upstreamId))).toBe(gets);
  });

  test('a gateway whose upstream cannot give the secret refuses deliveries with 503 and changes nothing', async () => {
    // A stub upstream with no /api/v3/webhook/secret route (404), like an account without webhooks.
    const upstream = await listen((req, res) => {
      req.resume();
      res.writeHead(404, { 'content-type': 'application/json' }).end('{"code":404,"message":"no route","data":null}');
    });
    const port = await freePort();
    const t = await startApp({ PORT: String(port), PUBLIC_URL: `http://127.0.0.1:${port}`, WAVESPEED_API_KEY: 'k', WAVESPEED_BASE_URL: upstream });
    const res = await fetch(`${t.url}/webhooks/wavespeed/x?token=y`, { method: 'POST', headers: { 'webhook-id': 'a', 'webhook-timestamp': '1', 'webhook-signature': 'v3,00' }, body: '{}' });
    expect(res.status).toBe(503);
    expect(t.app.db.$client.prepare('SELECT count(*) AS n FROM webhook_receipts').get()).toEqual({ n: 0 });
  });
});

describe('incoming webhooks: the signature, computed independently', () => {
  /** WaveSpeed's format, from its docs (docs-api/verifying_webhook): HMAC-SHA256, keyed with the secret minus `whsec_` as text, over "{id}.{timestamp}.{raw body}", sent as `v3,<hex>`. */
  const expected = (secret: string, id: string, timestamp: number | string, body: string) =>
    `v3,${createHmac('sha256', secret.replace(/^whsec_/, '')).update(`${id}.${timestamp}.${body}`).digest('hex')}`;

  // A vector computed outside Node (openssl dgst -sha256 -hmac 'Y2luZWdyYXBoLWtub3duLWFuc3dlcg=='), with the
  // id and timestamp of the docs' example headers.
  const vector = {
    secret: 'whsec_Y2luZWdyYXBoLWtub3duLWFuc3dlcg==',
    id: '45b392b22c3b449fa935bd4dc',
    timestamp: 1758798328,
    body: '{"id":"0195e8a1c2d34f5a","status":"completed"}',
    signature: 'v3,64fb89f60e2157b25ec71d285073b43e7b24c35ff08a8e799914a174dba1ccbc',
    // The same HMAC keyed with the base64-decoded remainder (Standard Webhooks' rule, not WaveSpeed's).
    decodedKeySignature: 'v3,38a80eb0d72b57366fc03c1a3ec0abf8e1d8260fc660320aba0be1d92b8e57a6',
  };
  const at = (seconds: number) => new Date(seconds * 1000);

  test('known answer: the signing and the check agree with an HMAC computed here and with openssl', () => {
    const { secret, id, timestamp, body, signature } = vector;
    expect(expected(secret, id, timestamp, body)).toBe(signature);
    expect(signUpstreamDelivery(secret, id, timestamp, body)).toBe(signature);
    const headers = { id, timestamp: String(timestamp), signature };
    expect(verifyUpstreamDelivery(secret, headers, Buffer.from(body), at(timestamp))).toEqual({ ok: true });
    // Within 5 minutes either side, not beyond.
    expect(verifyUpstreamDelivery(secret, headers, Buffer.from(body), at(timestamp + 300))).toEqual({ ok: true });
    expect(verifyUpstreamDelivery(secret, headers, Buffer.from(body), at(timestamp - 300))).toEqual({ ok: true });
    expect(verifyUpstreamDelivery(secret, headers, Buffer.from(body), at(timestamp + 301))).toEqual({ ok: false, reason: 'webhook-timestamp is more than 5 minutes away' });
    expect(verifyUpstreamDelivery(secret, headers, Buffer.from(body), at(timestamp - 301))).toEqual({ ok: false, reason: 'webhook-timestamp is more than 5 minutes away' });
  });

  test("the docs' format: the key is the text after whsec_ (not base64-decoded, not with the prefix), lowercase or uppercase hex, one of several signatures", () => {
    const { secret, id, timestamp, body, signature, decodedKeySignature } = vector;
    const check = (sig: string, key = secret) => verifyUpstreamDelivery(key, { id, timestamp: String(timestamp), signature: sig }, Buffer.from(body), at(timestamp)).ok;
    expect(check(signature)).toBe(true);
    expect(check(decodedKeySignature)).toBe(false);
    // Keyed with the whole secret, prefix included.
    expect(check(`v3,${createHmac('sha256', secret).update(`${id}.${timestamp}.${body}`).digest('hex')}`)).toBe(false);
    // The secret is accepted without its prefix as well.
    expect(check(signature, secret.slice('whsec_'.length))).toBe(true);
    expect(check(signature.toUpperCase().replace('V3,', 'v3,'))).toBe(true);
    // During a rotation the header may carry several space-separated signatures.
    expect(check(`v3,${'0'.repeat(64)} ${signature}`)).toBe(true);
    // Other separators or versions are not WaveSpeed's.
    expect(check(signature.replace('v3,', 'v3='))).toBe(false);
    expect(check(signature.replace('v3,', 'v1,'))).toBe(false);
    expect(check(`v3,${Buffer.from(signature.slice(3), 'hex').toString('base64')}`)).toBe(false);
    // Each part of "{id}.{timestamp}.{body}" counts.
    expect(check(expected(secret, `${id}x`, timestamp, body))).toBe(false);
    expect(check(expected(secret, id, timestamp + 1, body))).toBe(false);
    expect(check(expected(secret, id, timestamp, `${body} `))).toBe(false);
    expect(check(`v3,${createHmac('sha256', secret.slice(6)).update(`${id}${timestamp}${body}`).digest('hex')}`)).toBe(false);
  });

  test('the gateway accepts a delivery signed here with the secret upstream serves, and refuses the same signed with the decoded key', async () => {
    const t = await webhookApp({ SANDBOX_TASK_SECONDS: '600' });
    const row = await submitted(t, 'signed here');
    const path = `/webhooks/wavespeed/${row.id}?token=${row.webhookToken}`;
    const served = (await (await fetch(`${t.url}/sandbox/api/v3/webhook/secret`, { headers: { authorization: 'Bearer k' } })).json()).data.secret as string;
    expect(served).toMatch(/^whsec_/);
    const timestamp = Math.floor(Date.now() / 1000);
    const body = JSON.stringify({ id: row.upstreamId, status: 'completed' });
    const decodedKey = `v3,${createHmac('sha256', Buffer.from(served.slice(6), 'base64')).update(`d-1.${timestamp}.${body}`).digest('hex')}`;
    expect((await deliver(t, path, { id: 'd-1', timestamp, body, signature: decodedKey })).status).toBe(401);
    expect((await deliver(t, path, { id: 'd-1', timestamp, body, signature: expected(served, 'd-1', timestamp, body) })).status).toBe(202);
    await waitFor(() => t.app.sandbox?.stats.resultRequests.get(must(row.upstreamId)) ?? 0, (n) => n === 1);
  });
});

describe('incoming webhooks: the secret is cached', () => {
  test('a flood of deliveries, one after another and at once, fetches the secret once; bad signatures within the minute fetch nothing more', async () => {
    const t = await webhookApp({ SANDBOX_TASK_SECONDS: '600' });
    const sandbox = must(t.app.sandbox);
    const row = await submitted(t, 'cached');
    const path = `/webhooks/wavespeed/${row.id}?token=${row.webhookToken}`;
    expect(sandbox.stats.secretRequests).toBe(0); // fetched when first needed
    const parallel = await Promise.all(Array.from({ length: 10 }, () => deliver(t, path)));
    expect(parallel.map((r) => r.status)).toEqual(parallel.map(() => 202));
    expect(sandbox.stats.secretRequests).toBe(1);
    for (let i = 0; i < 10; i++) expect((await deliver(t, path)).status).toBe(202);
    expect(sandbox.stats.secretRequests).toBe(1);
    for (let i = 0; i < 10; i++) expect((await deliver(t, path, { secret: 'whsec_wrong' })).status).toBe(401);
    expect(sandbox.stats.secretRequests).toBe(1);
  });

  test('after the secret changes upstream, a mismatch past the minute fetches it once more, and deliveries signed with the new one are accepted', async () => {
    const t = await webhookApp({ SANDBOX_TASK_SECONDS: '600' });
    const sandbox = must(t.app.sandbox);
    const row = await submitted(t, 'rotated');
    const path = `/webhooks/wavespeed/${row.id}?token=${row.webhookToken}`;
    expect((await deliver(t, path)).status).toBe(202);
    expect(sandbox.stats.secretRequests).toBe(1);
    const old = sandbox.webhookSecret;
    const fresh = sandbox.rotateWebhookSecret();
    expect(fresh).not.toBe(old);
    // Within a minute of the last fetch a mismatch does not fetch again: the new secret is not known yet.
    expect((await deliver(t, path, { secret: fresh })).status).toBe(401);
    expect(sandbox.stats.secretRequests).toBe(1);

    // A minute later (the gateway's cache reads Date.now(); signatures are made and checked in the same shifted time).
    const realNow = Date.now.bind(Date);
    const shifted = vi.spyOn(Date, 'now').mockImplementation(() => realNow() + 61_000);
    try {
      const first = await Promise.all(Array.from({ length: 5 }, () => deliver(t, path, { secret: fresh })));
      expect(first.map((r) => r.status)).toEqual([202, 202, 202, 202, 202]);
      expect(sandbox.stats.secretRequests).toBe(2);
      for (let i = 0; i < 5; i++) expect((await deliver(t, path, { secret: fresh })).status).toBe(202);
      // The old secret and made-up ones are refused, and do not make the gateway fetch again.
      for (const secret of [old, 'whsec_wrong', old]) expect((await deliver(t, path, { secret })).status).toBe(401);
      expect(sandbox.stats.secretRequests).toBe(2);
    } finally {
      shifted.mockRestore();
    }
  });
});

describe('the sandbox as a webhook sender', () => {
  test('serves its secret on the API, signs, posts only at the end, and retries a failed delivery with the same id', async () => {
    const seen: { headers: Record<string, string | string[] | undefined>; body: string }[] = [];
    const receiver = createServer((req, res) => {
      let body = '';
      req.on('data', (d) => (body += d));
      req.on('end', () => {
        seen.push({ headers: req.headers, body });
        res.writeHead(seen.length < 3 ? 500 : 204).end();
      });
    });
    await new Promise<void>((r) => receiver.listen(0, '127.0.0.1', r));
    onDispose(() => new Promise((r) => receiver.close(r)));
    const receiverUrl = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}`;
    const sandbox = new SandboxUpstream({ taskSeconds: 0.3, webhookPrefix: `${receiverUrl}/webhooks/wavespeed/`, webhookRetryMs: 50 });
    onDispose(() => sandbox.close());
    const mount = await listen((req, res) => void sandbox.handle(req, res, req.url ?? '/', 'http://sandbox'));
    const auth = { authorization: 'Bearer k' };

    const secret = await (await fetch(`${mount}/api/v3/webhook/secret`, { headers: auth })).json();
    expect(secret).toEqual({ code: 200, message: 'success', data: { secret: sandbox.webhookSecret } });
    expect(sandbox.webhookSecret).toMatch(/^whsec_[A-Za-z0-9+/]{43}=$/);
    expect((await fetch(`${mount}/api/v3/webhook/secret`)).status).toBe(401);

    const submit = await fetch(`${mount}/api/v3/minimax/video-01?webhook=${encodeURIComponent(`${receiverUrl}/webhooks/wavespeed/p1?token=t`)}`, {
      method: 'POST',
      headers: { ...auth, 'content-type': 'application/json' },
      body: JSON.stringify({ prompt: 'p' }),
    });
    const task = (await submit.json()).data;
    await waitFor(() => seen.length, (n) => n === 3, 10_000);
    await waitFor(() => sandbox.stats.webhooksDelivered, (n) => n === 1);
    expect(sandbox.stats.webhookAttempts).toBe(3);
    // Every attempt: the terminal record only (no "processing" delivery), one id, each validly signed.
    const ids = new Set(seen.map((s) => s.headers['webhook-id']));
    expect(ids.size).toBe(1);
    for (const s of seen) {
      expect(JSON.parse(s.body)).toMatchObject({ id: task.id, status: 'completed' });
      const id = String(s.headers['webhook-id']);
      const ts = Number(s.headers['webhook-timestamp']);
      expect(Math.abs(ts - Date.now() / 1000)).toBeLessThan(60);
      expect(s.headers['webhook-signature']).toBe(signUpstreamDelivery(sandbox.webhookSecret, id, ts, s.body));
    }
    expect(SANDBOX_WEBHOOK_ATTEMPTS).toBeGreaterThanOrEqual(3);
  });
});
