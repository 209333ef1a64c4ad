import { existsSync } from 'node:fs';
import { createServer, type IncomingHttpHeaders, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import pg from 'pg';
import { Webhook } from 'standardwebhooks';
import { describe, expect, test } from 'vitest';
import { openApp } from '../src/app.js';
import { loadConfig } from '../src/config.js';
import { closePostgres, openPostgres, type PgDb } from '../src/db/pg/client.js';
import { PgOutbox } from '../src/db/pg/outbox.js';
import * as pgSchema from '../src/db/pg/schema.js';
import type { PredictionStatus } from '../src/db/schema.js';
import { sandboxServer } from './helpers/sandbox-server.js';
import { generateSigningSecret } from '../src/webhooks/secrets.js';
import { fastEnv, postGraphql, tempDir, waitFor } from './helpers/app.js';
import { onDispose } from './helpers/dispose.js';
import { must } from './helpers/must.js';
import { usePostgres } from './helpers/postgres.js';
import { freePort, type ServerProcess, spawnServer } from './helpers/process.js';

/**
 * Outgoing webhooks with N gateway instances on one Postgres (issue 16): the outbox's claims
 * (FOR UPDATE SKIP LOCKED and a lease) against a real Postgres, then two real gateway processes
 * sharing one loopback upstream and one loopback receiver.
 */

const postgres = usePostgres();
const T0 = new Date('2026-11-29T03:00:00.000Z');
const at = (ms: number) => new Date(T0.getTime() + ms);

async function open(): Promise<PgDb> {
  const db = await openPostgres(postgres.url(), { max: 4 });
  onDispose(() => closePostgres(db));
  return db;
}

async function admin(): Promise<pg.Client> {
  const c = new pg.Client({ connectionString: postgres.url() });
  await c.connect();
  onDispose(() => c.end());
  return c;
}

async function seedPredictions(db: PgDb, ids: string[]): Promise<void> {
  await db.insert(pgSchema.predictions).values(
    ids.map((id) => ({ id, model: 'minimax/video-01', status: 'CREATED' as const, prompt: id, hasImage: false, enablePromptExpansion: true, createdAt: T0, updatedAt: T0, nextPollAt: null })),
  );
}

async function seedMessages(db: PgDb, outbox: PgOutbox, n: number, event: PredictionStatus = 'COMPLETED'): Promise<string[]> {
  const ids = Array.from({ length: n }, (_, i) => `p${i}`);
  await seedPredictions(db, ids);
  await db.transaction(async (tx) => {
    for (const [i, id] of ids.entries()) {
      await outbox.enqueue(tx, { id: `msg_${i}`, predictionId: id, event, url: 'http://127.0.0.1:9/hook', payload: '{}', now: at(i) });
    }
  });
  return ids.map((_, i) => `msg_${i}`);
}

describe('the Postgres outbox', () => {
  test('three instances claiming at once get disjoint messages, each claimed once; a claimed message is claimable again only when its lease ends', async () => {
    const LEASE = 10_000;
    const dbs = [await open(), await open(), await open()];
    const outboxes = dbs.map((db, i) => new PgOutbox(db, { instanceId: `instance-${i}`, leaseMs: LEASE }));
    const [a, b] = outboxes as [PgOutbox, PgOutbox, PgOutbox];
    const all = await seedMessages(must(dbs[0]), a, 150);
    // Each pool connected before the race, so no instance starts late.
    await Promise.all(dbs.map((db) => db.$client.query('SELECT 1')));
    const now = at(1_000_000);
    // Each instance claims small batches as fast as it can until nothing is left: the three overlap.
    const claimed = await Promise.all(
      outboxes.map(async (outbox) => {
        const mine: string[] = [];
        for (;;) {
          const batch = await outbox.claimDue(now, 3);
          if (!batch.length) return mine;
          mine.push(...batch.map((m) => m.id));
        }
      }),
    );
    const flat = claimed.flat();
    expect(flat.length - new Set(flat).size, 'messages claimed twice').toBe(0);
    expect([...flat].sort()).toEqual([...all].sort());
    expect(claimed.filter((mine) => mine.length > 0).length, 'every instance took a share').toBe(3);
    // Leased: nobody claims them before the lease ends, and that is when the next one is due.
    expect(await b.claimDue(at(1_000_000 + LEASE - 1), 200)).toEqual([]);
    expect(await b.nextDueAt()).toEqual(at(1_000_000 + LEASE));
    // A claimer that died: its messages go to whoever claims after the lease.
    const takenOver = await b.claimDue(at(1_000_000 + LEASE), 200);
    expect(takenOver.map((m) => m.id).sort()).toEqual([...all].sort());
    expect(takenOver.find((m) => m.id === 'msg_0')).toEqual({
      id: 'msg_0',
      predictionId: 'p0',
      event: 'COMPLETED',
      url: 'http://127.0.0.1:9/hook',
      payload: '{}',
      createdAt: at(0),
      attempts: 0,
      nextAttemptAt: at(0),
      deliveredAt: null,
    });
  });

  test('an attempt is always logged; its retry is fenced by the claim; a success marks the message delivered whoever holds it; release frees it at once', async () => {
    const LEASE = 1000;
    const [dbA, dbB] = [await open(), await open()];
    const a = new PgOutbox(dbA, { instanceId: 'a', leaseMs: LEASE });
    const b = new PgOutbox(dbB, { instanceId: 'b', leaseMs: LEASE });
    await seedMessages(dbA, a, 1);
    const attempt = (id: string, who: string, more: { statusCode: number; manual?: boolean }) => ({
      id,
      messageId: 'msg_0',
      predictionId: 'p0',
      attemptedAt: at(5000),
      statusCode: more.statusCode,
      latencyMs: 3,
      error: more.statusCode < 300 ? null : `from ${who}`,
      manual: more.manual ?? false,
    });
    expect((await a.claimDue(at(100), 1)).map((m) => m.id)).toEqual(['msg_0']);
    // A stalls past its lease; B takes the message over.
    expect((await b.claimDue(at(100 + LEASE), 1)).map((m) => m.id)).toEqual(['msg_0']);
    // A's late failure is logged, but does not reschedule what B now holds.
    await a.recordAttempt(attempt('att-a', 'a', { statusCode: 503 }), { attempts: 1, nextAttemptAt: at(9000) });
    let m = must(await a.message('msg_0'));
    expect(m).toMatchObject({ attempts: 0, nextAttemptAt: at(0), deliveredAt: null });
    // B's failure is its own to schedule: the retry is written and B's claim ends.
    await b.recordAttempt(attempt('att-b', 'b', { statusCode: 500 }), { attempts: 1, nextAttemptAt: at(7000) });
    expect(must(await a.message('msg_0'))).toMatchObject({ attempts: 1, nextAttemptAt: at(7000), deliveredAt: null });
    expect(await a.nextDueAt()).toEqual(at(7000));
    // A manual redelivery that succeeds marks it delivered, whoever claimed it since; a later failure changes nothing.
    expect((await a.claimDue(at(7000), 1)).map((x) => x.id)).toEqual(['msg_0']);
    await b.recordAttempt(attempt('att-manual', 'b', { statusCode: 204, manual: true }), { deliveredAt: at(7100), nextAttemptAt: null, attempts: 1 });
    await a.recordAttempt(attempt('att-a2', 'a', { statusCode: 502 }), { attempts: 2, nextAttemptAt: at(9000) });
    m = must(await a.message('msg_0'));
    expect(m).toMatchObject({ attempts: 1, nextAttemptAt: null, deliveredAt: at(7100) });
    expect((await a.attemptsOf('p0', 10)).map((d) => [d.id, d.statusCode, d.webhookId, d.event])).toEqual(
      expect.arrayContaining([
        ['att-a', 503, 'msg_0', 'COMPLETED'],
        ['att-b', 500, 'msg_0', 'COMPLETED'],
        ['att-manual', 204, 'msg_0', 'COMPLETED'],
        ['att-a2', 502, 'msg_0', 'COMPLETED'],
      ]),
    );
    expect(await a.attemptsOf('p0', 10)).toHaveLength(4);
    // Release (stop() cutting a POST off): another instance may claim at once, not at the lease's end.
    await dbA.transaction((tx) => a.enqueue(tx, { id: 'msg_1', predictionId: 'p0', event: 'CREATED', url: 'http://127.0.0.1:9/hook', payload: '{}', now: at(8000) }));
    expect((await a.claimDue(at(8000), 1)).map((x) => x.id)).toEqual(['msg_1']);
    expect(await b.claimDue(at(8000), 1)).toEqual([]);
    await b.release(['msg_1']); // not B's to release
    expect(await b.claimDue(at(8000), 1)).toEqual([]);
    await a.release(['msg_1']);
    expect((await b.claimDue(at(8000), 1)).map((x) => x.id)).toEqual(['msg_1']);
  });
});

test('open mode on Postgres signs with WEBHOOK_SIGNING_SECRET only: without it a webhookUrl is refused and nothing is stored', async () => {
  const dataDir = tempDir();
  const env = { ...fastEnv, DATA_DIR: dataDir, DATABASE_URL: postgres.url(), WAVESPEED_BASE_URL: 'http://127.0.0.1:9/sandbox', WEBHOOK_ALLOW_PRIVATE: 'true' };
  const app = await openApp(loadConfig(env));
  const url = await app.start();
  onDispose(() => app.stop());
  const res = await postGraphql(url, 'mutation ($input: CreateVideoInput!) { createVideo(input: $input) { id } }', {
    input: { prompt: 'unsigned', webhookUrl: 'http://127.0.0.1:9/hook' },
  });
  expect(res.body.errors?.[0]).toMatchObject({ extensions: { code: 'WEBHOOK_SECRET_MISSING' }, message: expect.stringContaining('WEBHOOK_SIGNING_SECRET') });
  const db = await admin();
  expect((await db.query('SELECT id FROM predictions')).rows).toEqual([]);
  // No secret was generated into DATA_DIR either: it would sign for this instance alone.
  expect(existsSync(join(dataDir, 'webhook-secret'))).toBe(false);
});

// ---- Two gateway processes on one Postgres.

const CREATE = 'mutation ($input: CreateVideoInput!) { createVideo(input: $input) { id } }';
const DELIVERIES = 'query ($id: ID!) { prediction(id: $id) { status webhookDeliveries { id webhookId event statusCode succeeded redelivery } } }';
const REDELIVER = 'mutation ($id: ID!) { redeliverWebhook(deliveryId: $id) { id webhookId event statusCode succeeded redelivery } }';
const LEASE_MS = 1500;
const WEBHOOK_TIMEOUT_MS = 1000;
/**
 * For the tests whose POSTs must never time out: a POST cut off by WEBHOOK_TIMEOUT_MS is a failed
 * attempt, retried, and may well have arrived (at-least-once), which "exactly once" and "no attempt
 * logged" would count against the claims they test. At 1 s, a loaded machine (load average 14,
 * in a loop of whole-suite runs) cut off a 150 ms POST and a hung POST before the SIGTERM reached
 * its sender; both tests failed on timing alone.
 */
const PATIENT = { WEBHOOK_TIMEOUT_MS: '15000' };

/** One upstream for both instances: the sandbox on a loopback port. */
const sharedUpstream = async (taskSeconds: number): Promise<string> => (await sandboxServer(taskSeconds)).url;

interface Received {
  at: number;
  headers: IncomingHttpHeaders;
  body: string;
}

/**
 * A loopback receiver recording every POST as it arrives; `answer(n)` (n: 1-based, over all POSTs)
 * is the status, after `delayMs`, or 'hang' to never answer.
 */
async function receiver(answer: (n: number) => number | 'hang' = () => 204, delayMs = 0) {
  const got: Received[] = [];
  const arrivals: ((r: Received) => void)[] = [];
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    let body = '';
    req.on('data', (d) => (body += d));
    req.on('end', () => {
      const r = { at: Date.now(), headers: req.headers, body };
      got.push(r);
      for (const f of arrivals.splice(0)) f(r);
      const status = answer(got.length);
      if (status === 'hang') return;
      setTimeout(() => res.writeHead(status).end(), delayMs);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  onDispose(async () => {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  });
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/hooks?tenant=7`,
    got,
    next: () => new Promise<Received>((resolve) => arrivals.push(resolve)),
  };
}

function verify(secret: string, r: Received): { type: string; data: { id: string; status: string } } {
  return new Webhook(secret).verify(r.body, {
    'webhook-id': String(r.headers['webhook-id']),
    'webhook-timestamp': String(r.headers['webhook-timestamp']),
    'webhook-signature': String(r.headers['webhook-signature']),
  }) as { type: string; data: { id: string; status: string } };
}

async function gateways(secret: string, taskSeconds: number, more: Record<string, string> = {}): Promise<[ServerProcess, ServerProcess]> {
  const upstream = await sharedUpstream(taskSeconds);
  const start = async (name: string) =>
    spawnServer({
      DATABASE_URL: postgres.url(),
      WAVESPEED_BASE_URL: upstream,
      WAVESPEED_API_KEY: `upstream-key-${name}`,
      PORT: String(await freePort()),
      DATA_DIR: tempDir(),
      LOG_LEVEL: 'info',
      LEASE_MS: String(LEASE_MS),
      UPSTREAM_TIMEOUT_MS: '1000',
      WEBHOOK_TIMEOUT_MS: String(WEBHOOK_TIMEOUT_MS),
      WEBHOOK_ALLOW_PRIVATE: 'true',
      WEBHOOK_SIGNING_SECRET: secret,
      SUBSCRIPTION_RESYNC_MS: '1000',
      ...more,
    });
  // One after the other: both would migrate at once otherwise (safe, but slower on 2 cores).
  const a = await start('A');
  const b = await start('B');
  return [a, b];
}

/**
 * What the database holds when a delivery did not come: each prediction's status and lease, each
 * message's schedule and claim, each attempt's outcome (failed attempts are not logged, only give-ups).
 */
async function outboxState(db: pg.Client): Promise<string> {
  const rows = async (q: string) => JSON.stringify((await db.query(q)).rows);
  return [
    `predictions: ${await rows('SELECT id, status, version, locked_by, locked_until, next_poll_at FROM predictions ORDER BY created_at')}`,
    `messages: ${await rows('SELECT prediction_id, event, attempts, next_attempt_at, delivered_at, locked_by, locked_until FROM webhook_messages ORDER BY created_at')}`,
    `attempts: ${await rows('SELECT message_id, status_code, error, attempted_at FROM webhook_attempts WHERE status_code IS NULL OR status_code >= 300')}`,
  ].join('\n');
}

const explain = (gs: ServerProcess[]) => gs.map((g, i) => `--- ${'AB'[i]}\n${g.output().slice(-3000)}`).join('\n');

describe('two gateways on one Postgres', () => {
  test('every status asked for reaches the receiver exactly once per event (by webhook-id), signed, in the order of the events, whichever instance sent it', async () => {
    const secret = generateSigningSecret();
    // 4-second tasks: a poll almost always sees PROCESSING, but under load one may not (a loop at
    // load 7 once saw a task go from CREATED to COMPLETED between two polls). What the test holds to is
    // the outbox: every message written for a status change is delivered exactly once.
    const gs = await gateways(secret, 4, PATIENT);
    const [A, B] = gs;
    const db = await admin();
    // A slow receiver keeps each POST in flight long enough for the other instance's passes to meet it.
    const r = await receiver(() => 204, 150);
    const events = ['CREATED', 'PROCESSING', 'COMPLETED'];
    const ids: string[] = [];
    for (let i = 0; i < 8; i++) {
      const via = i % 2 ? B : A;
      const res = await postGraphql(via.url, CREATE, { input: { prompt: `hooked ${i}`, webhookUrl: r.url, webhookEvents: events } });
      expect(res.body.errors, explain(gs)).toBeUndefined();
      ids.push(res.body.data.createVideo.id);
    }
    // Every prediction final (so every message it will have is written), and every message delivered.
    const counts = async () =>
      (
        await db.query<{ unfinished: number; messages: number; delivered: number }>(
          `SELECT (SELECT count(*)::int FROM predictions WHERE status <> 'COMPLETED') AS unfinished,
                  (SELECT count(*)::int FROM webhook_messages) AS messages,
                  (SELECT count(*)::int FROM webhook_messages WHERE delivered_at IS NOT NULL) AS delivered`,
        )
      ).rows[0];
    const done = await waitFor(counts, (c) => c?.unfinished === 0 && c.delivered === c.messages, 60_000).catch(async (err) => {
      throw new Error(`${err}\n${await outboxState(db)}\n${explain(gs)}`);
    });
    const expected = must(done).messages;
    const written = (await db.query<{ prediction_id: string; event: string }>('SELECT prediction_id, event FROM webhook_messages')).rows;
    // Anything sent twice would be in flight or recorded by now: wait for the last POST's attempt to be logged.
    await waitFor(
      async () => (await db.query<{ n: number }>('SELECT count(*)::int AS n FROM webhook_attempts')).rows[0]?.n,
      (n) => n !== undefined && n >= expected,
    );

    const webhookIds = r.got.map((m) => String(m.headers['webhook-id']));
    const twice = webhookIds.filter((id, i) => webhookIds.indexOf(id) !== i);
    expect(twice, 'webhook-ids POSTed more than once').toEqual([]);
    expect(r.got).toHaveLength(expected);
    const payloads = r.got.map((m) => verify(secret, m));
    let withProcessing = 0;
    for (const id of ids) {
      const mine = new Set(written.filter((m) => m.prediction_id === id).map((m) => m.event));
      // The first and the final status always happen; PROCESSING when a poll saw it.
      expect([mine.has('CREATED'), mine.has('COMPLETED')], id).toEqual([true, true]);
      if (mine.has('PROCESSING')) withProcessing++;
      const seen = payloads.filter((p) => p.data.id === id).map((p) => [p.type, p.data.status]);
      expect(seen, id).toEqual(events.filter((e) => mine.has(e)).map((e) => [`prediction.${e.toLowerCase()}`, e]));
    }
    expect(withProcessing, 'no prediction was seen PROCESSING: the test did not test that event').toBeGreaterThan(0);
    const attempts = (await db.query<{ status_code: number; manual: boolean }>('SELECT status_code, manual FROM webhook_attempts')).rows;
    expect(attempts).toHaveLength(expected);
    expect(attempts.every((a) => a.status_code === 204 && !a.manual)).toBe(true);
    // Nothing is left claimed.
    expect((await db.query('SELECT id FROM webhook_messages WHERE locked_by IS NOT NULL')).rows).toEqual([]);
    // Either instance lists any prediction's deliveries, from the shared outbox.
    const listed = (await postGraphql(A.url, DELIVERIES, { id: ids[1] })).body.data.prediction.webhookDeliveries;
    const itsEvents = new Set(written.filter((m) => m.prediction_id === ids[1]).map((m) => m.event));
    expect(listed.map((d: { event: string; succeeded: boolean }) => [d.event, d.succeeded])).toEqual(
      events
        .filter((e) => itsEvents.has(e))
        .reverse()
        .map((e) => [e, true]),
    );
  }, 120_000);

  test('a receiver that fails twice gets retries (same webhook-id) until it answers 2xx, from either instance; the attempts are listed and redeliverable on the other one', async () => {
    const secret = generateSigningSecret();
    // PATIENT: a POST cut off by the timeout would be one more failed attempt than the two 503s.
    const gs = await gateways(secret, 30, { ...PATIENT, WEBHOOK_RETRY_BASE_MS: '50' });
    const [A, B] = gs;
    const r = await receiver((n) => (n <= 2 ? 503 : 200));
    const res = await postGraphql(A.url, CREATE, { input: { prompt: 'retried', webhookUrl: r.url, webhookEvents: ['CREATED'] } });
    expect(res.body.errors, explain(gs)).toBeUndefined();
    const id = res.body.data.createVideo.id;
    const deliveries = await waitFor(
      async () => (await postGraphql(B.url, DELIVERIES, { id })).body.data.prediction.webhookDeliveries as { id: string; webhookId: string; statusCode: number; succeeded: boolean; redelivery: boolean }[],
      (list) => list.some((d) => d.succeeded),
      30_000,
    );
    expect(r.got).toHaveLength(3);
    expect(new Set(r.got.map((m) => m.headers['webhook-id'])).size).toBe(1);
    for (const m of r.got) expect(verify(secret, m).data).toMatchObject({ id, status: 'CREATED' });
    expect(deliveries.map((d) => [d.statusCode, d.succeeded, d.redelivery])).toEqual([
      [200, true, false],
      [503, false, false],
      [503, false, false],
    ]);
    // Sent again on B, now: the same message, a new attempt.
    const again = (await postGraphql(B.url, REDELIVER, { id: must(deliveries[2]).id })).body;
    expect(again.errors, explain(gs)).toBeUndefined();
    expect(again.data.redeliverWebhook).toMatchObject({ webhookId: must(deliveries[0]).webhookId, event: 'CREATED', statusCode: 200, succeeded: true, redelivery: true });
    expect(r.got).toHaveLength(4);
    expect(r.got[3]?.headers['webhook-id']).toBe(must(deliveries[0]).webhookId);
  }, 120_000);

  test('the instance sending a message is SIGKILLed mid-POST: the other one sends it once the claim ends, and the attempt it logs is the only one', async () => {
    const secret = generateSigningSecret();
    // 3 s each: the hung POST must not time out before the SIGKILL, and the claim is checked against the
    // POST's arrival, which may come well after the claim on a loaded machine.
    const timeoutMs = 3000;
    const leaseMs = 3000;
    const gs = await gateways(secret, 30, { WEBHOOK_TIMEOUT_MS: String(timeoutMs), LEASE_MS: String(leaseMs) });
    const [A] = gs;
    const db = await admin();
    const r = await receiver((n) => (n === 1 ? 'hang' : 200));
    const first = r.next();
    const res = await postGraphql(A.url, CREATE, { input: { prompt: 'killed mid-POST', webhookUrl: r.url, webhookEvents: ['CREATED'] } });
    expect(res.body.errors, explain(gs)).toBeUndefined();
    const id = res.body.data.createVideo.id;
    const hung = await first;
    const claim = must((await db.query<{ locked_by: string; locked_until: Date }>('SELECT locked_by, locked_until FROM webhook_messages')).rows[0]);
    const holder = must(gs.find((g) => claim.locked_by.includes(`:${g.child.pid}:`)));
    const survivor = must(gs.find((g) => g !== holder));
    const second = r.next();
    holder.child.kill('SIGKILL');
    await holder.exited;
    const resent = await Promise.race([
      second,
      new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`not resent in 20 s\n${explain(gs)}`)), 20_000)),
    ]);
    expect(resent.headers['webhook-id']).toBe(hung.headers['webhook-id']);
    expect(verify(secret, resent).data).toMatchObject({ id, status: 'CREATED' });
    // Not before the dead instance's claim ended (WEBHOOK_TIMEOUT_MS + LEASE_MS after it was made, before
    // the POST arrived): longer than either alone, so long as the POST came within 3 s of the claim.
    expect(resent.at).toBeGreaterThanOrEqual(claim.locked_until.getTime());
    expect(claim.locked_until.getTime() - hung.at).toBeGreaterThan(Math.max(timeoutMs, leaseMs));
    const list = await waitFor(
      async () => (await postGraphql(survivor.url, DELIVERIES, { id })).body.data.prediction.webhookDeliveries as { statusCode: number; succeeded: boolean }[],
      (l) => l.length > 0,
    );
    expect(list.map((d) => [d.statusCode, d.succeeded])).toEqual([[200, true]]);
    expect(r.got).toHaveLength(2);
  }, 120_000);

  test('the instance sending a message is stopped (SIGTERM) mid-POST: it releases the claim, so the other one sends it long before the claim would have ended', async () => {
    const secret = generateSigningSecret();
    // A claim of 35 s (the POST's 15 s and the lease's 20 s): the survivor, whose idle sleep is at
    // most 5 s, can only send it sooner if it was released.
    const gs = await gateways(secret, 30, { ...PATIENT, LEASE_MS: '20000' });
    const [A] = gs;
    const db = await admin();
    const r = await receiver((n) => (n === 1 ? 'hang' : 200));
    const first = r.next();
    const res = await postGraphql(A.url, CREATE, { input: { prompt: 'stopped mid-POST', webhookUrl: r.url, webhookEvents: ['CREATED'] } });
    expect(res.body.errors, explain(gs)).toBeUndefined();
    const hung = await first;
    const claim = must((await db.query<{ locked_by: string; locked_until: Date }>('SELECT locked_by, locked_until FROM webhook_messages')).rows[0]);
    expect(claim.locked_until.getTime() - hung.at).toBeGreaterThan(15_000);
    const holder = must(gs.find((g) => claim.locked_by.includes(`:${g.child.pid}:`)));
    const second = r.next();
    holder.child.kill('SIGTERM');
    expect(await holder.exited, explain(gs)).toBe(0);
    const resent = await Promise.race([
      second,
      new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`not resent in 12 s\n${explain(gs)}`)), 12_000)),
    ]);
    expect(resent.headers['webhook-id']).toBe(hung.headers['webhook-id']);
    expect(resent.at).toBeLessThan(claim.locked_until.getTime() - 5_000);
    // The cut-off POST was no attempt: the survivor's is the only one logged.
    await waitFor(
      async () => (await db.query<{ status_code: number }>('SELECT status_code FROM webhook_attempts')).rows.map((row) => row.status_code),
      (codes) => codes.length === 1 && codes[0] === 200,
    );
  }, 120_000);
});
