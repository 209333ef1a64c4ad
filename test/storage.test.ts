import { execFileSync, spawn } from 'node:child_process';
import { closeSync, openSync, rmSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, test } from 'vitest';
import { startApp, tempDir, waitFor, type TestApp } from './helpers/app.js';
import { onDispose } from './helpers/dispose.js';
import { freePort, spawnServer } from './helpers/process.js';
import { must } from './helpers/must.js';

const CREATE = `mutation($p: String!) { createVideo(input: { prompt: $p }) { id } }`;
const root = fileURLToPath(new URL('..', import.meta.url));

/**
 * A real full disk: a 4 MiB tmpfs. Mounting needs root, which CI and the development machines
 * have; without it this fails loudly rather than skipping (the portable max_page_count test
 * below covers less: a full page budget fails at the statement, a full disk at the commit).
 */
function smallDisk(): string {
  const dir = tempDir('cinegraph-full-');
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=4m', 'tmpfs', dir], { stdio: 'pipe' });
  } catch (err) {
    throw new Error(`this test mounts a 4 MiB tmpfs to fill it and needs root: ${(err as Error).message}`);
  }
  onDispose(() => execFileSync('umount', ['-l', dir]));
  return dir;
}

/** Fills the file system holding `dir` until it refuses another byte; returns the filler's path. */
function fill(dir: string): string {
  const filler = join(dir, 'filler');
  const fd = openSync(filler, 'w');
  const chunk = Buffer.alloc(4096, 1);
  try {
    for (;;) writeSync(fd, chunk);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOSPC') throw err;
  } finally {
    closeSync(fd);
  }
  return filler;
}

async function createVideo(t: TestApp, prompt: string) {
  return t.gql(CREATE, { p: prompt });
}

describe('a full disk', () => {
  test('createVideo answers STORAGE_UNAVAILABLE with no id, nothing is submitted while full, and the poller resumes by itself once space is freed', async () => {
    const upstream = await startApp({ SANDBOX_TASK_SECONDS: '0.5' });
    const sandbox = must(upstream.app.sandbox);
    const dataDir = smallDisk();
    const t = await startApp({ DATA_DIR: dataDir, WAVESPEED_API_KEY: 'k', WAVESPEED_BASE_URL: `${upstream.url}/sandbox`, POLL_MAX_MS: '200' });
    const poller = t.app.poller;

    // A prediction that waits to be submitted while the disk fills: the upstream key is refused for 2 s.
    sandbox.setFaults({ unauthorizedSeconds: 2 });
    const accountPaused = new Promise((resolve) => poller.once('paused', resolve));
    const first = await createVideo(t, 'waits through the full disk');
    expect(first.body.errors).toBeUndefined();
    const waitingId = first.body.data.createVideo.id as string;
    expect(await accountPaused).toMatchObject({ kind: 'account' });

    const filler = fill(dataDir);
    for (let i = 0; i < 3; i++) {
      const refused = await createVideo(t, `refused ${i}`);
      expect(refused.status).toBe(503);
      expect(refused.body.data?.createVideo ?? null).toBeNull();
      expect(refused.body.errors?.[0]).toMatchObject({
        message: 'the gateway cannot store new predictions right now; nothing was created, try again later',
        extensions: { code: 'STORAGE_UNAVAILABLE' },
      });
    }
    expect(t.app.store.count()).toBe(1);

    // Once the key works again, the waiting submission's intent cannot be written: nothing is sent,
    // however often the poller tries.
    await waitFor(() => poller.health().pauses.find((p) => p.kind === 'storage')?.streak ?? 0, (n) => n >= 2, 20_000);
    expect(sandbox.stats.submissions).toBe(0);
    const ready = await fetch(`${t.url}/readyz`);
    expect(ready.status).toBe(503);
    expect((await ready.json()).reasons.join()).toMatch(/storage: storage unavailable: SQLITE_FULL/);

    rmSync(filler);
    const later = await createVideo(t, 'after the disk was freed');
    expect(later.body.errors).toBeUndefined();
    const ids = [waitingId, later.body.data.createVideo.id as string];
    const rows = await waitFor(() => ids.map((id) => must(t.app.store.findById(id))), (rs) => rs.every((r) => r.status === 'COMPLETED'), 30_000);
    expect(rows.every((r) => r.submitAttempts === 1)).toBe(true);
    expect(sandbox.stats.submissions).toBe(2);
    expect((await fetch(`${t.url}/readyz`)).status).toBe(200);
    // Every id ever returned is there for clients too, not only in the store.
    for (const id of ids) {
      const read = await t.gql(`query($id: ID!) { prediction(id: $id) { id status } }`, { id });
      expect(read.body).toEqual({ data: { prediction: { id, status: 'COMPLETED' } } });
    }
  });

  test('a store out of pages (max_page_count) refuses createVideo with 503 STORAGE_UNAVAILABLE and stores nothing', async () => {
    const t = await startApp();
    const sqlite = t.app.db.$client;
    sqlite.pragma(`max_page_count = ${sqlite.pragma('page_count', { simple: true })}`);
    // Fill what room the last pages have left with rows not due for a year, so nothing is submitted.
    const filler = (i: number) => ({ id: `filler-${i}`, model: 'm', status: 'CREATED' as const, prompt: 'f', image: null, hasImage: false, enablePromptExpansion: true, createdAt: new Date(), updatedAt: new Date(), nextPollAt: new Date(Date.now() + 365 * 86_400_000) });
    let i = 0;
    expect(() => {
      for (; i < 10_000; i++) t.app.store.insert(filler(i));
    }).toThrow(/database or disk is full/);
    const before = t.app.store.count();
    for (const prompt of ['short', 'y'.repeat(1900)]) {
      const r = await createVideo(t, prompt);
      expect(r.status).toBe(503);
      expect(r.body.data?.createVideo ?? null).toBeNull();
      expect(r.body.errors?.[0]?.extensions?.code).toBe('STORAGE_UNAVAILABLE');
    }
    expect(t.app.store.count()).toBe(before);
    expect(t.app.sandbox?.stats.submissions).toBe(0);

    // An idle gateway (nothing due: the poller's own writes would never find out) says so at once.
    const notReady = await fetch(`${t.url}/readyz`);
    expect(notReady.status).toBe(503);
    expect((await notReady.json()).reasons.join()).toMatch(/^storage: storage unavailable: SQLITE_FULL: database or disk is full/);
    // Room again: the poller's probe write commits and ends the pause by itself.
    const resumed = new Promise((resolve) => t.app.poller.once('resumed', resolve));
    sqlite.pragma('max_page_count = 1073741823');
    expect(await resumed).toEqual({ kind: 'storage' });
    expect((await fetch(`${t.url}/readyz`)).status).toBe(200);
    const after = await createVideo(t, 'room again');
    expect(after.body.errors).toBeUndefined();
  });
});

describe('one server per DATA_DIR', () => {
  test('a second server on the same DATA_DIR exits non-zero with a clear message; the first keeps serving and a CLI command still works', async () => {
    const dataDir = tempDir();
    const first = await spawnServer({ DATA_DIR: dataDir, PORT: String(await freePort()) });
    const secondPort = String(await freePort());
    const second = spawn(process.execPath, ['--import', 'tsx', 'src/main.ts'], {
      cwd: root,
      env: { ...process.env, HOST: '127.0.0.1', PORT: secondPort, DATA_DIR: dataDir, WAVESPEED_API_KEY: '', LOG_LEVEL: 'silent' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stderr = '';
    second.stderr.on('data', (d) => (stderr += d));
    const code = await new Promise<number | null>((resolve) => second.on('exit', resolve));
    expect(code).toBe(3);
    expect(stderr).toMatch(/^another cinegraph server \(pid \d+\) already uses DATA_DIR .+; run one server per DATA_DIR \(CLI commands may share it\)/);
    await expect(fetch(`http://127.0.0.1:${secondPort}/healthz`)).rejects.toThrow();

    expect((await fetch(`${first.url}/healthz`)).status).toBe(200);
    const created = await fetch(`${first.url}/graphql`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ query: CREATE, variables: { p: 'first still serves' } }),
    });
    expect(((await created.json()) as { data: { createVideo: { id: string } } }).data.createVideo.id).toBeTruthy();
    // A CLI command writes to the same database while the server holds the instance lock.
    const cli = (...args: string[]) => execFileSync(process.execPath, [join(root, 'bin/cinegraph.mjs'), ...args], { env: { ...process.env, DATA_DIR: dataDir }, encoding: 'utf8' });
    const key = must(cli('keys', 'create', '--name', 'beside-the-server').trim().split('\n').at(-1));
    expect(key).toMatch(/^cg_/);
    expect(cli('keys', 'list')).toContain('beside-the-server');
    // The running server sees the key the CLI wrote: it is no longer open.
    expect((await fetch(`${first.url}/graphql?query=%7B__typename%7D`)).status).toBe(401);
    expect((await fetch(`${first.url}/graphql?query=%7B__typename%7D`, { headers: { authorization: `Bearer ${key}` } })).status).toBe(200);
  });

  test('the lock holds across network namespaces (a second container on the same volume), not only on one host network', async () => {
    const dataDir = tempDir();
    const first = await spawnServer({ DATA_DIR: dataDir, PORT: String(await freePort()) });
    // `unshare -n`: a fresh network namespace, as a container or a systemd PrivateNetwork unit has.
    const second = spawn('unshare', ['-n', process.execPath, '--import', 'tsx', 'src/main.ts'], {
      cwd: root,
      env: { ...process.env, HOST: '127.0.0.1', PORT: '4000', DATA_DIR: dataDir, WAVESPEED_API_KEY: '', LOG_LEVEL: 'silent' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stderr = '';
    second.stderr.on('data', (d) => (stderr += d));
    const code = await new Promise<number | null>((resolve) => second.on('exit', resolve));
    expect(stderr).toContain('already uses DATA_DIR');
    expect(code).toBe(3);
    expect((await fetch(`${first.url}/healthz`)).status).toBe(200);
  });

  test('the lock goes with the process: a SIGKILLed server leaves nothing that blocks the next', async () => {
    const dataDir = tempDir();
    const env = { DATA_DIR: dataDir, PORT: String(await freePort()) };
    const first = await spawnServer(env);
    first.child.kill('SIGKILL');
    await first.exited;
    const second = await spawnServer(env);
    expect((await fetch(`${second.url}/healthz`)).status).toBe(200);
  });
});
