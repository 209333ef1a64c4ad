import { execFile, spawn } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { startApp, tempDir, waitFor } from './helpers/app.js';
import { onDispose } from './helpers/dispose.js';
import { png } from './helpers/images.js';
import { cli, createKey } from './helpers/keys.js';
import { freePort } from './helpers/net.js';

const root = fileURLToPath(new URL('..', import.meta.url));
const sandboxMp4 = readFileSync(join(root, 'assets/sandbox.mp4'));

/** The real `cinegraph` bin against the server at `url`, as a user runs it (no key unless given). */
const run = (url: string, args: string[], env: Record<string, string> = {}) =>
  cli(tempDir(), args, { CINEGRAPH_URL: url, CINEGRAPH_API_KEY: '', ...env });

/** Each line of stdout as JSON (throws on a line that is not). */
const jsonLines = (stdout: string) =>
  stdout
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as Record<string, unknown> & { id: string; status: string; keptOutputs: string[] });

describe('cinegraph create', () => {
  it('--wait --out follows the prediction and writes the kept MP4, byte for byte', async () => {
    const t = await startApp();
    const out = join(tempDir(), 'fox.mp4');
    const r = await run(t.url, ['create', 'a red fox running through snow', '--wait', '--out', out]);
    expect(r.code, r.stderr).toBe(0);
    const video = readFileSync(out);
    // An ISO-BMFF file: the ftyp box comes first.
    expect(video.subarray(4, 8).toString('latin1')).toBe('ftyp');
    expect(video.equals(sandboxMp4)).toBe(true);
    expect(r.stdout).toMatch(/^status: +COMPLETED$/m);
    expect(r.stdout).toContain(`saved:     ${out} (${sandboxMp4.length} bytes`);
    // Not a TTY: one progress line per status on stderr, no spinner frames.
    expect(r.stderr).toMatch(/ CREATED after [\d.]+ s\n/);
    expect(r.stderr).toMatch(/ COMPLETED after [\d.]+ s\n$/);
    expect(r.stderr).not.toMatch(/[⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏✔]/);
    // The download was the gateway's kept copy, named in the output.
    expect(t.app.store.list({ first: 10 }).map((p) => p.status)).toEqual(['COMPLETED']);
    expect(r.stdout).toContain(`video:     ${t.url}/media/`);
  });

  it('--json prints one parseable object and no progress at all', async () => {
    const t = await startApp();
    const out = join(tempDir(), 'clip.mp4');
    const r = await run(t.url, ['create', 'a lighthouse at dusk', '--no-prompt-expansion', '--wait', '--out', out, '--json']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toBe('');
    const lines = jsonLines(r.stdout);
    expect(lines).toHaveLength(1);
    const p = lines[0] ?? expect.fail('no JSON line');
    expect(p).toMatchObject({ status: 'COMPLETED', savedTo: out, input: { prompt: 'a lighthouse at dusk', enablePromptExpansion: false, hasImage: false } });
    expect(p.keptOutputs[0]).toMatch(new RegExp(`^${t.url}/media/[0-9a-f]{64}\\.mp4$`));
    expect(readFileSync(out).equals(sandboxMp4)).toBe(true);
    // Stored as asked: expansion off.
    expect(t.app.store.findById(p.id)?.enablePromptExpansion).toBe(false);
  });

  it('without --wait prints the id alone on stdout and returns at once', async () => {
    const t = await startApp();
    const r = await run(t.url, ['create', 'a quiet harbour']);
    expect(r.code, r.stderr).toBe(0);
    const id = r.stdout.trim();
    expect(t.app.store.findById(id)?.prompt).toBe('a quiet harbour');
    expect(r.stderr).toContain(`cinegraph watch ${id}`);
  });

  it('a blank prompt is refused by the server: exit 4 with its code and message, nothing stored', async () => {
    const t = await startApp();
    const r = await run(t.url, ['create', '   ']);
    expect(r.code).toBe(4);
    expect(r.stderr.trim()).toBe('cinegraph: refused (BAD_USER_INPUT): prompt must not be blank');
    expect(r.stdout).toBe('');
    const j = await run(t.url, ['create', '', '--json']);
    expect(j.code).toBe(4);
    expect(JSON.parse(j.stdout)).toEqual({ error: { kind: 'refused', code: 'BAD_USER_INPUT', message: 'refused (BAD_USER_INPUT): prompt must not be blank' } });
    expect(t.app.store.count()).toBe(0);
  });

  it('an unreachable server (a closed loopback port): exit 3 and says where it looked', async () => {
    const url = `http://127.0.0.1:${await freePort()}`;
    const [create, list, watch] = await Promise.all([
      run(url, ['create', 'anything', '--wait']),
      run(url, ['list', '--json']),
      run(url, ['watch', 'some-id']),
    ]);
    expect(create.code).toBe(3);
    expect(create.stderr.trim()).toBe(`cinegraph: cannot reach the cinegraph server at ${url}: ECONNREFUSED (is it running? set CINEGRAPH_URL)`);
    expect(list.code).toBe(3);
    expect(JSON.parse(list.stdout).error).toMatchObject({ kind: 'unreachable' });
    // graphql-ws too, and without retrying a server that never answered.
    expect(watch.code).toBe(3);
    expect(watch.stderr).toContain(`cannot reach the cinegraph server at ${url}: ECONNREFUSED`);
  });

  it('a failed prediction: exit 5 with upstream\'s reason, and no file at --out', async () => {
    const t = await startApp();
    const control = await fetch(`${t.url}/sandbox/_control/faults`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"failureRate":1}' });
    expect(control.status).toBe(200);
    const out = join(tempDir(), 'never.mp4');
    const [human, json] = await Promise.all([
      run(t.url, ['create', 'a doomed video', '--wait', '--out', out]),
      run(t.url, ['create', 'another doomed video', '--wait', '--json']),
    ]);
    expect(human.code).toBe(5);
    expect(human.stderr).toMatch(/^cinegraph: prediction \S+ ended FAILED: sandbox: injected task failure$/m);
    expect(human.stdout).toMatch(/^status: +FAILED$/m);
    expect(existsSync(out)).toBe(false);
    expect(json.code).toBe(5);
    expect(JSON.parse(json.stdout)).toMatchObject({ status: 'FAILED', error: 'sandbox: injected task failure', keptOutputs: [] });
  });

  it('bad arguments and unreadable files are usage errors (exit 2); a local image is sent as a data: URI the server judges', async () => {
    const t = await startApp();
    const dir = tempDir();
    const image = join(dir, 'frame.png');
    writeFileSync(image, png(640, 360));
    const notImage = join(dir, 'notes.txt');
    writeFileSync(notImage, 'not an image');
    const tiny = join(dir, 'tiny.png');
    writeFileSync(tiny, png(200, 200));
    const [withImage, wrongType, tooSmall, missing, unknownOption, badUrl] = await Promise.all([
      run(t.url, ['create', 'from a first frame', '--image', image, '--json']),
      run(t.url, ['create', 'from a text file', '--image', notImage]),
      run(t.url, ['create', 'from a thumbnail', '--image', tiny]),
      run(t.url, ['create', 'from nothing', '--image', join(dir, 'missing.png')]),
      run(t.url, ['create', 'x', '--frobnicate']),
      run('ftp://127.0.0.1', ['list']),
    ]);
    expect(withImage.code, withImage.stderr).toBe(0);
    const created = JSON.parse(withImage.stdout);
    expect(created.input.hasImage).toBe(true);
    // The server read the file's real bytes: their format and their size.
    expect(wrongType.code).toBe(4);
    expect(wrongType.stderr).toMatch(/^cinegraph: refused \(IMAGE_FORMAT\): /);
    expect(tooSmall.code).toBe(4);
    expect(tooSmall.stderr.trim()).toBe('cinegraph: refused (IMAGE_TOO_SMALL): image is 200×200; its short side must be over 300 px');
    expect(missing.code).toBe(2);
    expect(missing.stderr.trim()).toBe(`cinegraph: cannot read the image ${join(dir, 'missing.png')}: ENOENT`);
    expect(unknownOption.code).toBe(2);
    expect(unknownOption.stderr).toContain("unknown option '--frobnicate'");
    expect(badUrl.code).toBe(2);
    expect(t.app.store.count()).toBe(1);
  });
});

/** Runs the bin on a pseudo-terminal (util-linux `script`), sized by stty unless `cols` is 0. */
function onTerminal(url: string, args: string[], cols = 120): Promise<{ code: number; out: string }> {
  const command = `${cols ? `stty cols ${cols} rows 40; ` : ''}${process.execPath} bin/cinegraph.mjs ${args.map((a) => `'${a}'`).join(' ')}`;
  return new Promise((resolve) => {
    execFile('script', ['-qec', command, '/dev/null'], { cwd: root, env: { ...process.env, CINEGRAPH_URL: url, CINEGRAPH_API_KEY: '' }, timeout: 60_000 }, (err, stdout) =>
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, out: stdout }),
    );
  });
}

describe('cinegraph create on a terminal', () => {
  it('draws a spinner with status and elapsed time; --json and an unsized terminal get none', async () => {
    // 3 s tasks: the spinner must be drawn while PROCESSING, with three CLIs starting at once on a loaded machine.
    const t = await startApp({ SANDBOX_TASK_SECONDS: '3' });
    const [spinner, json, unsized] = await Promise.all([
      onTerminal(t.url, ['create', 'on a terminal', '--wait']),
      onTerminal(t.url, ['create', 'on a terminal, as JSON', '--wait', '--json']),
      onTerminal(t.url, ['create', 'on a pty of no width', '--wait'], 0),
    ]);
    expect(spinner.code, spinner.out).toBe(0);
    expect(spinner.out).toContain('\x1b[?25l'); // the cursor hidden while it spins
    expect(spinner.out).toMatch(/[⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏]\S* PROCESSING · [\d.]+ s · /);
    expect(spinner.out).toMatch(/✔\S* COMPLETED in [\d.]+ s · /);
    expect(json.code, json.out).toBe(0);
    expect(json.out).not.toContain('\x1b');
    expect(JSON.parse(json.out)).toMatchObject({ status: 'COMPLETED', input: { prompt: 'on a terminal, as JSON' } });
    expect(unsized.code, unsized.out).toBe(0);
    expect(unsized.out).not.toContain('\x1b');
    expect(unsized.out).toMatch(/ COMPLETED after [\d.]+ s\r\n/);
  });
});

describe('cinegraph create, queued', () => {
  it('shows the place in the admission queue while the prediction waits for the tier', async () => {
    const t = await startApp({ UPSTREAM_MAX_CONCURRENT: '1' });
    // The one slot is held by a task that never finishes, until it is canceled.
    await fetch(`${t.url}/sandbox/_control/faults`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"hangRate":1}' });
    const { body } = await t.gql<{ createVideo: { id: string } }>('mutation { createVideo(input: { prompt: "holds the slot" }) { id } }');
    const holder = body.data?.createVideo.id ?? expect.fail(JSON.stringify(body));
    await waitFor(() => t.app.store.findById(holder)?.upstreamId, (u) => Boolean(u));
    const cli = run(t.url, ['create', 'waits its turn', '--wait']);
    // The CLI's subscription is open, so it has been sent the queued state; then the slot frees.
    await waitFor(() => t.app.pubsub.count(), (n) => n >= 1);
    await fetch(`${t.url}/sandbox/_control/faults`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"hangRate":0}' });
    expect((await t.gql('mutation ($id: ID!) { cancelPrediction(id: $id) { status } }', { id: holder })).body.errors).toBeUndefined();
    const r = await cli;
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/ CREATED \(queue 1\) after [\d.]+ s\n/);
    expect(r.stderr).toMatch(/ COMPLETED after [\d.]+ s\n$/);
  });
});

describe('cinegraph get, list, watch', () => {
  it('show and follow the caller\'s predictions', async () => {
    const t = await startApp();
    const { body } = await t.gql<{ createVideo: { id: string } }>('mutation { createVideo(input: { prompt: "a slow pan over dunes" }) { id } }');
    const id = body.data?.createVideo.id ?? expect.fail(JSON.stringify(body));
    const [watchHuman, watchJson] = await Promise.all([run(t.url, ['watch', id]), run(t.url, ['watch', id, '--json'])]);
    expect(watchHuman.code, watchHuman.stderr).toBe(0);
    expect(watchHuman.stdout).toMatch(new RegExp(`  COMPLETED  ${t.url}/media/[0-9a-f]{64}\\.mp4\\n$`));
    expect(watchJson.code, watchJson.stderr).toBe(0);
    const states = jsonLines(watchJson.stdout);
    expect(states.every((s) => s.id === id)).toBe(true);
    expect(states.at(-1)?.status).toBe('COMPLETED');
    expect(watchJson.stderr).toBe('');

    const [get, getJson, list, listFailed, unknown, unknownJson] = await Promise.all([
      run(t.url, ['get', id]),
      run(t.url, ['get', id, '--json']),
      run(t.url, ['list', '--json']),
      run(t.url, ['list', '--status', 'failed']),
      run(t.url, ['get', 'no-such-id']),
      run(t.url, ['watch', 'no-such-id', '--json']),
    ]);
    expect(get.stdout).toMatch(new RegExp(`^id: +${id}$`, 'm'));
    expect(get.stdout).toMatch(/^prompt: +a slow pan over dunes$/m);
    expect(JSON.parse(getJson.stdout)).toMatchObject({ id, status: 'COMPLETED', completedAt: expect.any(String) });
    const listed = JSON.parse(list.stdout);
    expect(listed.predictions.map((p: { id: string }) => p.id)).toEqual([id]);
    expect(listed.pageInfo.hasNextPage).toBe(false);
    expect(listFailed.code).toBe(0);
    expect(listFailed.stdout.trim()).toBe('no predictions');
    expect(unknown.code).toBe(4);
    expect(unknown.stderr.trim()).toBe('cinegraph: refused (NOT_FOUND): no prediction with id "no-such-id"');
    // The subscription's own NOT_FOUND, over graphql-ws.
    expect(unknownJson.code).toBe(4);
    expect(JSON.parse(unknownJson.stdout).error).toMatchObject({ kind: 'refused', code: 'NOT_FOUND' });
  });

  it('send CINEGRAPH_API_KEY as Bearer on HTTP and in connection_init; without it, exit 4 UNAUTHENTICATED', async () => {
    const t = await startApp();
    const key = await createKey(t.dataDir, 'cli-user');
    const out = join(tempDir(), 'keyed.mp4');
    const [noKey, wrongKey, withKey] = await Promise.all([
      run(t.url, ['list']),
      run(t.url, ['watch', 'whatever'], { CINEGRAPH_API_KEY: 'cg_not-a-real-key' }),
      run(t.url, ['create', 'with a key', '--wait', '--out', out], { CINEGRAPH_API_KEY: key }),
    ]);
    expect(noKey.code).toBe(4);
    expect(noKey.stderr).toMatch(/^cinegraph: refused \(UNAUTHENTICATED\): /);
    expect(wrongKey.code).toBe(4);
    expect(wrongKey.stderr).toMatch(/^cinegraph: refused \(UNAUTHENTICATED\): /);
    expect(withKey.code, withKey.stderr).toBe(0);
    expect(readFileSync(out).equals(sandboxMp4)).toBe(true);
    expect(t.app.store.list({ first: 10 }).map((p) => p.owner)).toEqual([expect.any(String)]);
  });
});

describe('cinegraph serve', () => {
  it('runs the server as npm start does, and stops on SIGTERM with exit 0', async () => {
    const port = await freePort();
    const child = spawn(process.execPath, ['bin/cinegraph.mjs', 'serve'], {
      cwd: root,
      env: { ...process.env, HOST: '127.0.0.1', PORT: String(port), DATA_DIR: tempDir(), LOG_LEVEL: 'info', WAVESPEED_API_KEY: '' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    onDispose(() => void child.kill('SIGKILL'));
    const listening = await new Promise<string>((resolve, reject) => {
      let log = '';
      child.stdout?.on('data', (d) => {
        log += d;
        if (log.includes('cinegraph listening')) resolve(log);
      });
      void exited.then((code) => reject(new Error(`serve exited ${code}: ${log}`)));
    });
    expect(listening).toContain(`"url":"http://127.0.0.1:${port}"`);
    expect((await fetch(`http://127.0.0.1:${port}/healthz`)).status).toBe(200);
    child.kill('SIGTERM');
    expect(await exited).toBe(0);
  });
});
