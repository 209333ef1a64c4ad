import { existsSync } from 'node:fs';
import { join } from 'node:path';
import pg from 'pg';
import { describe, expect, test } from 'vitest';
import { type App, openApp } from '../src/app.js';
import { loadConfig } from '../src/config.js';
import { openDatabase } from '../src/db/client.js';
import { closePostgres, openPostgres } from '../src/db/pg/client.js';
import { predictionStatuses } from '../src/db/schema.js';
import { createMetrics } from '../src/server/metrics.js';
import { createLogger } from '../src/log.js';
import { ImageStore } from '../src/storage/images.js';
import { createPgRetention, RETENTION_LOCK_KEY } from '../src/storage/retention.js';
import { sandboxServer } from './helpers/sandbox-server.js';
import { fastEnv, postGraphql, tempDir, waitFor } from './helpers/app.js';
import { onDispose } from './helpers/dispose.js';
import { dataUri, pngOfSize } from './helpers/images.js';
import { must } from './helpers/must.js';
import { usePostgres } from './helpers/postgres.js';
import { parsePrometheus, sampleValue } from './helpers/prometheus.js';
import { tcpProxy } from './helpers/tcp-proxy.js';

const CREATE = 'mutation ($p: String!, $i: String) { createVideo(input: { prompt: $p, image: $i }) { id } }';
const DAY_MS = 86_400_000;
const db = usePostgres();

/** The embedded sandbox on a loopback port: one upstream for every app of a test, as in scale-out mode. */
const upstream = () => sandboxServer(0.3);

interface PgApp {
  app: App;
  url: string;
  dataDir: string;
}

/** An in-process gateway in Postgres mode (DATABASE_URL) on a loopback port. */
async function pgApp(env: { DATABASE_URL: string; WAVESPEED_BASE_URL: string; DATA_DIR?: string; RETENTION_DAYS?: string }): Promise<PgApp> {
  const dataDir = env.DATA_DIR ?? tempDir();
  const app = await openApp(loadConfig({ ...fastEnv, WAVESPEED_API_KEY: 'test-key', ...env, DATA_DIR: dataDir }));
  const url = await app.start();
  onDispose(() => app.stop());
  return { app, url, dataDir };
}

/** A plain connection to the test's database, for looking at rows and holding locks beside the apps. */
async function admin(url = db.url()): Promise<pg.Client> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  onDispose(() => c.end());
  return c;
}

interface Row {
  status: string;
  imageFile: string | null;
  keptOutputs: string[];
}

const rowOf = async (c: pg.Client, id: string): Promise<Row | undefined> =>
  (await c.query<Row>('SELECT status, image_file AS "imageFile", kept_outputs AS "keptOutputs" FROM predictions WHERE id = $1', [id])).rows[0];
const completed = (c: pg.Client, id: string) => waitFor(() => rowOf(c, id), (r) => r?.status === 'COMPLETED', 30_000).then(must);
/** Moves a final prediction's end into the past, as if it had completed `days` ago. */
const age = (c: pg.Client, id: string, days: number) => c.query('UPDATE predictions SET completed_at = $1 WHERE id = $2', [new Date(Date.now() - days * DAY_MS), id]);
const create = async (t: PgApp, prompt: string, image?: string) => {
  const res = await postGraphql(t.url, CREATE, { p: prompt, i: image });
  expect(res.body.errors).toBeUndefined();
  return res.body.data.createVideo.id as string;
};
const scrape = async (url: string) => {
  const res = await fetch(`${url}/metrics`);
  expect(res.status).toBe(200);
  return parsePrometheus(await res.text());
};

describe('retention on Postgres', () => {
  test('old final predictions go from Postgres with their image files and unshared kept outputs; recent and live ones stay', async () => {
    const up = await upstream();
    const t = await pgApp({ DATABASE_URL: db.url(), WAVESPEED_BASE_URL: up.url, RETENTION_DAYS: '30' });
    const c = await admin();
    const withImage = await create(t, 'old, with an image', dataUri(pngOfSize(640, 360, 40_000)));
    const oldShared = await create(t, 'old, output shared');
    const recent = await create(t, 'recent');
    for (const id of [withImage, oldShared, recent]) await completed(c, id);
    const imageFile = must((await rowOf(c, withImage))?.imageFile);
    expect(existsSync(join(t.dataDir, 'images', imageFile))).toBe(true);
    // The sandbox's outputs are all the same MP4: one kept file, shared by all three.
    const keptPath = must((await rowOf(c, recent))?.keptOutputs[0]);
    const kept = keptPath.replace('/media/', '');
    expect((await rowOf(c, withImage))?.keptOutputs).toEqual([keptPath]);
    expect(existsSync(join(t.dataDir, 'media', kept))).toBe(true);
    // A live one with an old completed_at (its created_at would have the poller end it at POLL_MAX_AGE): only its status keeps it.
    up.sandbox.setFaults({ hangRate: 1 });
    const live = await create(t, 'still running');
    await waitFor(() => rowOf(c, live), (r) => r?.status === 'PROCESSING');
    await c.query('UPDATE predictions SET completed_at = $1 WHERE id = $2', [new Date(Date.now() - 90 * DAY_MS), live]);
    await age(c, withImage, 31);
    await age(c, oldShared, 45);
    await age(c, recent, 29);

    expect(await t.app.retention.sweep()).toEqual({ predictions: 2, images: 1, outputs: 0 });
    expect(await rowOf(c, withImage)).toBeUndefined();
    expect(await rowOf(c, oldShared)).toBeUndefined();
    expect((await rowOf(c, recent))?.status).toBe('COMPLETED');
    expect((await rowOf(c, live))?.status).toBe('PROCESSING');
    expect(existsSync(join(t.dataDir, 'images', imageFile))).toBe(false);
    expect(existsSync(join(t.dataDir, 'media', kept))).toBe(true); // still the recent one's
    expect((await postGraphql(t.url, 'query ($id: ID!) { prediction(id: $id) { id } }', { id: withImage })).body.data.prediction).toBeNull();

    await age(c, recent, 31);
    expect(await t.app.retention.sweep()).toEqual({ predictions: 1, images: 0, outputs: 1 });
    expect(existsSync(join(t.dataDir, 'media', kept))).toBe(false);
    expect((await rowOf(c, live))?.status).toBe('PROCESSING');
    expect(await t.app.retention.sweep()).toEqual({ predictions: 0, images: 0, outputs: 0 });
  });

  test('an image file shared by an old and a recent prediction stays until the recent one goes too', async () => {
    const up = await upstream();
    const t = await pgApp({ DATABASE_URL: db.url(), WAVESPEED_BASE_URL: up.url, RETENTION_DAYS: '30' });
    const c = await admin();
    const image = dataUri(pngOfSize(640, 360, 30_000));
    const old = await create(t, 'old', image);
    const recent = await create(t, 'recent', image);
    const file = must((await completed(c, old)).imageFile);
    expect((await completed(c, recent)).imageFile).toBe(file);
    await age(c, old, 40);
    expect(await t.app.retention.sweep()).toMatchObject({ predictions: 1, images: 0 });
    expect(existsSync(join(t.dataDir, 'images', file))).toBe(true);
    await age(c, recent, 40);
    expect(await t.app.retention.sweep()).toMatchObject({ predictions: 1, images: 1 });
    expect(existsSync(join(t.dataDir, 'images', file))).toBe(false);
  });

  test('RETENTION_DAYS=0 keeps everything', async () => {
    const up = await upstream();
    const t = await pgApp({ DATABASE_URL: db.url(), WAVESPEED_BASE_URL: up.url, RETENTION_DAYS: '0' });
    const c = await admin();
    const id = await create(t, 'kept for good', dataUri(pngOfSize(640, 360, 30_000)));
    const { imageFile } = await completed(c, id);
    await age(c, id, 3650);
    expect(await t.app.retention.sweep()).toEqual({ predictions: 0, images: 0, outputs: 0 });
    expect((await rowOf(c, id))?.status).toBe('COMPLETED');
    expect(existsSync(join(t.dataDir, 'images', must(imageFile)))).toBe(true);
  });

  test('a sweep goes in batches until none is full, and one stopped (aborted) ends after its current batch', async () => {
    const pool = await openPostgres(db.url());
    onDispose(() => closePostgres(pool));
    const longAgo = new Date(Date.now() - 40 * DAY_MS);
    for (const id of ['a', 'b', 'c', 'd', 'e']) {
      await pool.$client.query(
        `INSERT INTO predictions (id, model, status, prompt, has_image, enable_prompt_expansion, created_at, updated_at, completed_at)
         VALUES ($1, 'minimax/video-01', 'COMPLETED', $1, false, true, $2, $2, $2)`,
        [id, longAgo],
      );
    }
    const retention = createPgRetention({ pg: pool, images: new ImageStore(join(tempDir(), 'images')), log: createLogger('silent'), now: () => new Date(), retentionMs: 30 * DAY_MS, batchSize: 2 });
    const count = async () => (await pool.$client.query('SELECT count(*)::int AS n FROM predictions')).rows[0].n;
    const stopped = new AbortController();
    stopped.abort();
    expect(await retention.sweep(stopped.signal)).toEqual({ predictions: 2, images: 0, outputs: 0 });
    expect(await count()).toBe(3);
    expect(await retention.sweep()).toEqual({ predictions: 3, images: 0, outputs: 0 });
    expect(await count()).toBe(0);
  });

  test('two instances sweeping at once do the work once: the one without the advisory lock skips', async () => {
    const up = await upstream();
    // One DATA_DIR for both, as a shared volume: the instance that sweeps removes files the other wrote.
    const dataDir = tempDir();
    const env = { DATABASE_URL: db.url(), WAVESPEED_BASE_URL: up.url, RETENTION_DAYS: '30', DATA_DIR: dataDir };
    const [a, b] = [await pgApp(env), await pgApp(env)];
    const c = await admin();
    const ids = [await create(a, 'first', dataUri(pngOfSize(640, 360, 30_000))), await create(a, 'second', dataUri(pngOfSize(640, 360, 31_000)))];
    const files: string[] = [];
    for (const id of ids) files.push(must((await completed(c, id)).imageFile));
    const kept = must((await rowOf(c, must(ids[0])))?.keptOutputs[0]).replace('/media/', '');
    // Each instance's gauges count every instance's rows: B created nothing.
    for (const t of [a, b]) expect(sampleValue(await scrape(t.url), 'cinegraph_predictions', { status: 'COMPLETED' })).toBe(2);
    for (const id of ids) await age(c, id, 31);

    // While anyone holds the sweep's lock, a sweep deletes nothing.
    await c.query('SELECT pg_advisory_lock($1)', [RETENTION_LOCK_KEY]);
    expect(await a.app.retention.sweep()).toEqual({ predictions: 0, images: 0, outputs: 0, skipped: true });
    expect(await b.app.retention.sweep()).toEqual({ predictions: 0, images: 0, outputs: 0, skipped: true });
    expect((await c.query('SELECT count(*)::int AS n FROM predictions')).rows[0].n).toBe(2);
    await c.query('SELECT pg_advisory_unlock($1)', [RETENTION_LOCK_KEY]);

    // B's sweep takes the lock and is held at its first DELETE (a table lock the test holds);
    // A's sweep meanwhile finds the lock taken and returns at once.
    const blocker = await admin();
    await blocker.query('BEGIN');
    await blocker.query('LOCK TABLE predictions IN SHARE MODE');
    const sweepB = b.app.retention.sweep();
    await waitFor(
      async () => (await c.query(`SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE 'DELETE FROM predictions%'`)).rows[0].n,
      (n) => n === 1,
    );
    expect(await a.app.retention.sweep()).toEqual({ predictions: 0, images: 0, outputs: 0, skipped: true });
    await blocker.query('COMMIT');
    expect(await sweepB).toEqual({ predictions: 2, images: 2, outputs: 1 });
    for (const f of files) expect(existsSync(join(dataDir, 'images', f))).toBe(false);
    expect(existsSync(join(dataDir, 'media', kept))).toBe(false);
    // The lock was released: A sweeps next, and finds nothing left.
    expect(await a.app.retention.sweep()).toEqual({ predictions: 0, images: 0, outputs: 0 });
    for (const t of [a, b]) expect(sampleValue(await scrape(t.url), 'cinegraph_predictions', { status: 'COMPLETED' })).toBe(0);
  });
});

describe('metrics and readiness on Postgres', () => {
  test('the gauges count Postgres rows; due is claimable now, as leased claims judge it', async () => {
    const pool = await openPostgres(db.url());
    onDispose(() => closePostgres(pool));
    const sqlite = openDatabase(join(tempDir(), 'unused.sqlite'));
    onDispose(() => sqlite.$client.close());
    const now = new Date('2026-01-01T12:00:00Z');
    const at = (offsetMs: number | null) => (offsetMs === null ? null : new Date(now.getTime() + offsetMs));
    // [id, status, next poll, lease end]
    const rows: [string, string, number | null, number | null][] = [
      ['late-5s', 'PROCESSING', -5000, null],
      ['late-2s', 'CREATED', -2000, null],
      ['due-now', 'PROCESSING', 0, null],
      ['later', 'PROCESSING', 10_000, null],
      ['finished', 'COMPLETED', null, null],
      // Another instance is working on it: not waiting, however late its poll time.
      ['leased', 'PROCESSING', -8000, 30_000],
      // Its holder died: waiting since the lease ran out, 7 s ago.
      ['lease-ended', 'PROCESSING', -20_000, -7000],
    ];
    for (const [id, status, next, lease] of rows) {
      await pool.$client.query(
        `INSERT INTO predictions (id, model, status, prompt, has_image, enable_prompt_expansion, created_at, updated_at, next_poll_at, locked_by, locked_until)
         VALUES ($1, 'minimax/video-01', $2, $1, false, true, $3, $3, $4, $5, $6)`,
        [id, status, now, at(next), lease === null ? null : 'another-instance', at(lease)],
      );
    }
    const metrics = createMetrics({ db: sqlite, pg: pool, now: () => now, connections: () => 0, subscriptions: () => 0, authenticated: () => true });
    const m = parsePrometheus(await metrics.registry.metrics());
    expect(sampleValue(m, 'cinegraph_poller_due_predictions')).toBe(4);
    expect(sampleValue(m, 'cinegraph_poller_lag_seconds')).toBe(7);
    const byStatus = Object.fromEntries(predictionStatuses.map((status) => [status, sampleValue(m, 'cinegraph_predictions', { status })]));
    expect(byStatus).toEqual({ CREATED: 1, PROCESSING: 5, COMPLETED: 1, FAILED: 0, CANCELED: 0 });
    // Nothing claimable a minute earlier: no lag.
    const quiet = createMetrics({ db: sqlite, pg: pool, now: () => new Date(now.getTime() - 60_000), connections: () => 0, subscriptions: () => 0, authenticated: () => true });
    const q = parsePrometheus(await quiet.registry.metrics());
    expect(sampleValue(q, 'cinegraph_poller_due_predictions')).toBe(0);
    expect(sampleValue(q, 'cinegraph_poller_lag_seconds')).toBe(0);
  });

  test('/readyz is 503 while Postgres refuses connections or does not answer, and 200 again once it is back', async () => {
    const up = await upstream();
    const target = new URL(db.url());
    const proxy = await tcpProxy(Number(target.port));
    const viaProxy = new URL(target);
    viaProxy.port = String(proxy.port);
    const t = await pgApp({ DATABASE_URL: viaProxy.toString(), WAVESPEED_BASE_URL: up.url });
    // Runs before the app stops (disposers run newest first), whatever the test left the proxy doing.
    onDispose(() => proxy.forward());
    const ready = async () => {
      const res = await fetch(`${t.url}/readyz`);
      return { status: res.status, body: (await res.json()) as { status: string; reasons?: string[] } };
    };
    expect(await ready()).toEqual({ status: 200, body: { status: 'ready' } });

    await proxy.refuse();
    const refused = await ready();
    expect(refused.status).toBe(503);
    expect(refused.body.reasons).toContainEqual(expect.stringMatching(/^storage: .*ECONNREFUSED/));
    await proxy.forward();
    await waitFor(ready, (r) => r.status === 200);

    // A host that takes the connection and never answers: the probe gives up after 2 s.
    proxy.blackhole();
    const silent = await ready();
    expect(silent.status, JSON.stringify(silent.body)).toBe(503);
    expect(silent.body.reasons, JSON.stringify(silent.body)).toContain('storage: Postgres did not answer within 2 s');
    await proxy.forward();
    await waitFor(ready, (r) => r.status === 200 && r.body.status === 'ready');
  });
});
