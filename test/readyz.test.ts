import { describe, expect, test } from 'vitest';
import { startApp, waitFor } from './helpers/app.js';
import { must } from './helpers/must.js';

async function readyz(url: string): Promise<{ status: number; body: { status: string; reasons?: string[] } }> {
  const res = await fetch(`${url}/readyz`);
  expect(res.headers.get('cache-control')).toBe('no-store');
  return { status: res.status, body: await res.json() };
}

const READ_ONLY = 'storage: database not writable: SQLITE_READONLY: attempt to write a readonly database';

describe('/readyz: database writable', () => {
  // The file's mode bits cannot make the open database read-only here: the tests run as root, whom
  // chmod 0444 does not stop, and an open file keeps the access it was opened with anyway. SQLite's
  // `query_only` makes this very connection refuse every write with SQLITE_READONLY, which is what a
  // database opened read-only (a read-only file or mount at start) answers; it is switched back off
  // to show the check recovers by itself.
  test('a database that refuses writes, though it still answers reads, is 503 with the reason; writable again, 200', async () => {
    const t = await startApp();
    const sqlite = t.app.db.$client;
    expect(await readyz(t.url)).toEqual({ status: 200, body: { status: 'ready' } });

    sqlite.pragma('query_only = ON');
    try {
      // Reads still work: a SELECT 1 would call this database ready.
      expect(sqlite.prepare('SELECT 1 AS one').get()).toEqual({ one: 1 });
      expect(await readyz(t.url)).toEqual({ status: 503, body: { status: 'unavailable', reasons: [READ_ONLY] } });
    } finally {
      sqlite.pragma('query_only = OFF');
    }
    expect(await readyz(t.url)).toEqual({ status: 200, body: { status: 'ready' } });
  });

  test('with predictions stored, the check leaves the newest row as it was and no transaction open, and still attempts the write', async () => {
    const t = await startApp();
    const { body } = await t.gql<{ createVideo: { id: string } }>('mutation { createVideo(input: { prompt: "a checked row" }) { id } }');
    const id = must(body.data?.createVideo.id);
    const done = await waitFor(() => t.app.store.findById(id), (r) => r?.status === 'COMPLETED');
    expect(await readyz(t.url)).toEqual({ status: 200, body: { status: 'ready' } });
    expect(t.app.db.$client.inTransaction).toBe(false);
    const after = must(t.app.store.findById(id));
    expect([after.version, after.updatedAt.toISOString()]).toEqual([must(done).version, must(done).updatedAt.toISOString()]);

    // A read-only database with rows fails the same way (the write is attempted, not just the lock).
    t.app.db.$client.pragma('query_only = ON');
    try {
      expect(await readyz(t.url)).toEqual({ status: 503, body: { status: 'unavailable', reasons: [READ_ONLY] } });
    } finally {
      t.app.db.$client.pragma('query_only = OFF');
    }
    expect(t.app.db.$client.inTransaction).toBe(false);
    expect((await readyz(t.url)).status).toBe(200);
  });
});

describe('/readyz: poller running', () => {
  test('a stopped poller is 503 "poller: not running" while /healthz stays 200', async () => {
    const t = await startApp();
    expect((await readyz(t.url)).status).toBe(200);
    await t.app.poller.stop();
    expect(await readyz(t.url)).toEqual({ status: 503, body: { status: 'unavailable', reasons: ['poller: not running'] } });
    // /healthz is liveness: the process still answers.
    expect((await fetch(`${t.url}/healthz`)).status).toBe(200);
  });
});
