import { describe, expect, test } from 'vitest';
import { hashKey } from '../src/auth/keys.js';
import { type GqlResult, postGraphql, startApp, tempDir, waitFor } from './helpers/app.js';
import { sseSubscribe, wsClient, wsSubscribe } from './helpers/clients.js';
import { bearer, cli, createKey } from './helpers/keys.js';
import { listen } from './helpers/listen.js';
import { freePort, runMain, spawnServer } from './helpers/process.js';
import { must } from './helpers/must.js';

const CREATE = `mutation($p: String!) { createVideo(input: { prompt: $p }) { id status } }`;
const WATCH = `subscription($id: ID!) { predictionUpdated(id: $id) { id status } }`;

/** What each transport answers a caller presenting `authorization` (undefined: none). */
async function tryEveryTransport(url: string, authorization: string | undefined) {
  const headers: Record<string, string> = authorization === undefined ? {} : { authorization };
  const post = await postGraphql(url, CREATE, { p: 'should not exist' }, headers);
  const get = await fetch(`${url}/graphql?query=${encodeURIComponent('{ predictions { nodes { id } } }')}`, { headers: { accept: 'application/json', ...headers } });
  const sse = await fetch(`${url}/graphql`, {
    method: 'POST',
    headers: { accept: 'text/event-stream', 'content-type': 'application/json', ...headers },
    body: JSON.stringify({ query: WATCH, variables: { id: 'x' } }),
  });
  const ws = wsSubscribe(wsClient(url, authorization === undefined ? undefined : { authorization }), CREATE, { p: 'should not exist either' });
  const wsClose = await ws.done.then(
    () => undefined,
    (e: { code?: number; reason?: string }) => ({ code: e.code, reason: e.reason }),
  );
  return {
    post: { status: post.status, code: post.body.errors?.[0]?.extensions?.code },
    get: { status: get.status, code: ((await get.json()) as GqlResult<unknown>).errors?.[0]?.extensions?.code },
    sse: { status: sse.status, code: ((await sse.json()) as GqlResult<unknown>).errors?.[0]?.extensions?.code },
    wsClose,
  };
}

const refusedEverywhere = {
  post: { status: 401, code: 'UNAUTHENTICATED' },
  get: { status: 401, code: 'UNAUTHENTICATED' },
  sse: { status: 401, code: 'UNAUTHENTICATED' },
  wsClose: { code: 4401, reason: 'UNAUTHENTICATED' },
};

describe('API keys', () => {
  test('the CLI prints a new key alone on the last line, stores only its hash, lists and revokes by name', async () => {
    const dataDir = tempDir();
    const created = await cli(dataDir, ['keys', 'create', '--name', 'ci-bot', '--per-minute', '5', '--max-in-flight', '2']);
    expect(created.code).toBe(0);
    const key = must(created.stdout.trimEnd().split('\n').at(-1));
    expect(key).toMatch(/^cg_[\w-]{43}$/);
    const { app } = await startApp({ DATA_DIR: dataDir });
    const stored = app.db.$client.prepare('select * from api_keys').all() as Array<Record<string, unknown>>;
    expect(stored).toEqual([expect.objectContaining({ name: 'ci-bot', key_hash: hashKey(key), per_minute: 5, max_in_flight: 2, revoked_at: null })]);
    expect(JSON.stringify(stored)).not.toContain(key);

    const listed = await cli(dataDir, ['keys', 'list']);
    expect(listed.stdout).toMatch(/ci-bot\s+cg_\S{6}…\s+\S+\s+live\s+5\s+2/);
    expect(listed.stdout).not.toContain(key);

    // Wrong uses: a taken name, a bad name, a bad limit, an unknown key to revoke, no name at all.
    const again = await cli(dataDir, ['keys', 'create', '--name', 'ci-bot']);
    expect([again.code, again.stderr.trim()]).toEqual([1, 'cinegraph: a live key named "ci-bot" already exists']);
    expect((await cli(dataDir, ['keys', 'create', '--name', 'has space'])).stderr).toContain('invalid key name');
    expect((await cli(dataDir, ['keys', 'create', '--name', 'x', '--per-minute', '0'])).code).not.toBe(0);
    expect((await cli(dataDir, ['keys', 'create'])).stderr).toContain("required option '--name <name>'");
    expect((await cli(dataDir, ['keys', 'revoke', 'nobody'])).stderr.trim()).toBe('cinegraph: no live key named "nobody"');
    expect(app.db.$client.prepare('select count(*) as n from api_keys').get()).toEqual({ n: 1 });

    const revoked = await cli(dataDir, ['keys', 'revoke', 'ci-bot']);
    expect(revoked.code).toBe(0);
    expect((await cli(dataDir, ['keys', 'list'])).stdout).toMatch(/ci-bot\s+\S+\s+\S+\s+revoked /);
    // The name is free again for a new key.
    expect(await createKey(dataDir, 'ci-bot')).not.toBe(key);
  });

  test('no key, a made-up key and a revoked key are refused on HTTP POST and GET, SSE and graphql-ws, and store nothing', async () => {
    const dataDir = tempDir();
    const key = await createKey(dataDir, 'soon-revoked');
    const { url, app } = await startApp({ DATA_DIR: dataDir });

    expect(await tryEveryTransport(url, undefined)).toEqual(refusedEverywhere);
    expect(await tryEveryTransport(url, `Bearer cg_${'A'.repeat(43)}`)).toEqual(refusedEverywhere);
    expect(await tryEveryTransport(url, `Basic ${Buffer.from('a:b').toString('base64')}`)).toEqual(refusedEverywhere);
    expect(await tryEveryTransport(url, key)).toEqual(refusedEverywhere); // the key without "Bearer"
    expect(await tryEveryTransport(url, `Bearer ${key}x`)).toEqual(refusedEverywhere);
    expect(await tryEveryTransport(url, 'Bearer ')).toEqual(refusedEverywhere);
    expect(await tryEveryTransport(url, `Bearer ${'k'.repeat(8000)}`)).toEqual(refusedEverywhere);
    // A key of the wrong type in connectionParams closes the socket the same way.
    const wrongType = wsSubscribe(wsClient(url, { authorization: 42 }), CREATE, { p: 'typed wrong' });
    await expect(wrongType.done).rejects.toMatchObject({ code: 4401, reason: 'UNAUTHENTICATED' });
    expect(app.store.count()).toBe(0);

    const ok = await postGraphql(url, CREATE, { p: 'allowed' }, bearer(key));
    expect(ok.body.data.createVideo.status).toBe('CREATED');

    expect((await cli(dataDir, ['keys', 'revoke', 'soon-revoked'])).code).toBe(0);
    // Effective on the very next request, from the CLI's own process.
    expect(await tryEveryTransport(url, `Bearer ${key}`)).toEqual(refusedEverywhere);
    expect(app.store.count()).toBe(1);
    // Upstream saw the allowed prediction once, and nothing of the refused requests.
    await waitFor(() => app.store.findById(ok.body.data.createVideo.id)?.upstreamId ?? null, (u) => u !== null);
    await app.poller.runOnce();
    expect(app.sandbox?.stats.submissions).toBe(1);
  });

  test("revoking a key closes its open graphql-ws and SSE subscriptions at once (a 200 ms watcher); another key's go on", async () => {
    const dataDir = tempDir();
    const doomed = await createKey(dataDir, 'doomed');
    const other = await createKey(dataDir, 'other');
    const { url } = await startApp({ DATA_DIR: dataDir, SANDBOX_TASK_SECONDS: '600' });
    const mine = (await postGraphql(url, CREATE, { p: 'long' }, bearer(doomed))).body.data.createVideo.id;
    const theirs = (await postGraphql(url, CREATE, { p: 'long too' }, bearer(other))).body.data.createVideo.id;

    const ws = wsSubscribe(wsClient(url, { authorization: `Bearer ${doomed}` }), WATCH, { id: mine });
    const sse = sseSubscribe(url, WATCH, { id: mine }, bearer(doomed));
    const survivor = wsSubscribe(wsClient(url, { authorization: `Bearer ${other}` }), WATCH, { id: theirs });
    await waitFor(() => [ws.values.length, sse.values.length, survivor.values.length], (n) => n.every((x) => x >= 1));

    const sseEnded = sse.done.then(() => Date.now(), () => Date.now());
    const wsClosed = ws.done.then(
      () => ({ at: Date.now(), code: 0, reason: 'completed' }),
      (e: { code: number; reason: string }) => ({ at: Date.now(), code: e.code, reason: e.reason }),
    );
    expect((await cli(dataDir, ['keys', 'revoke', 'doomed'])).code).toBe(0);
    const revokedAt = Date.now();
    const closed = await wsClosed;
    expect({ code: closed.code, reason: closed.reason }).toEqual({ code: 4401, reason: 'UNAUTHENTICATED' });
    // The watcher looks every 200 ms; 3 s leaves a loaded machine room, far short of the 10-minute task.
    expect(closed.at - revokedAt).toBeLessThan(3000);
    expect((await sseEnded) - revokedAt).toBeLessThan(3000);
    expect(sse.values.at(-1).predictionUpdated.status).toBe('CREATED'); // cut, not completed

    // The other key's socket is still open and answering.
    expect(survivor.errors).toEqual([]);
    const stillThere = wsSubscribe(wsClient(url, { authorization: `Bearer ${other}` }), `query($id: ID!) { prediction(id: $id) { id } }`, { id: theirs });
    expect((await stillThere.done)[0].prediction.id).toBe(theirs);
  });

  test('open mode: with no keys a loopback server accepts every request; the first key ends open mode, also for open sockets', async () => {
    const { url, app, gql, dataDir } = await startApp({ SANDBOX_TASK_SECONDS: '600' });
    const id = (await gql(CREATE, { p: 'open' })).body.data.createVideo.id;
    const ws = wsSubscribe(wsClient(url), WATCH, { id });
    await waitFor(() => ws.values.length, (n) => n >= 1);
    expect(app.store.findById(id)?.owner).toBeNull();

    const key = await createKey(dataDir, 'first');
    expect((await gql(CREATE, { p: 'no longer open' })).status).toBe(401);
    await expect(ws.done).rejects.toMatchObject({ code: 4401, reason: 'UNAUTHENTICATED' });
    // Open-mode predictions belong to no key.
    const listed = await postGraphql(url, `{ predictions { nodes { id } } prediction(id: "${id}") { id } }`, undefined, bearer(key));
    expect(listed.body.data).toEqual({ predictions: { nodes: [] }, prediction: null });
  });
});

describe('safe default', () => {
  test('HOST=0.0.0.0 with no keys refuses to start: a clear message and a non-zero exit', async () => {
    const main = runMain({ HOST: '0.0.0.0', PORT: String(await freePort()), DATA_DIR: tempDir(), WAVESPEED_API_KEY: '', LOG_LEVEL: 'info' });
    expect(await main.exited).toBe(2);
    const output = main.output();
    expect(output).toContain('refusing to listen on 0.0.0.0 with no API keys');
    expect(output).toContain('cinegraph keys create --name NAME');
    expect(output).not.toMatch(/\n\s+at /); // a message, not a stack trace
  });

  test('a loopback server with no keys says it runs open; the upstream key appears in no response and no log line', async () => {
    const secret = 'sk-live-0123456789abcdef';
    // An upstream that echoes the key it was sent in its refusal, as some do.
    const upstream = await listen((req, res) => {
      req.resume();
      res.writeHead(400, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ code: 400, message: `invalid request for key ${req.headers.authorization?.slice(7)}`, data: null }));
    });
    const port = await freePort();
    const server = await spawnServer({ PORT: String(port), DATA_DIR: tempDir(), LOG_LEVEL: 'debug', WAVESPEED_API_KEY: secret, WAVESPEED_BASE_URL: upstream });
    expect(server.output()).toContain('open mode');
    const created = await postGraphql(server.url, CREATE, { p: 'echo' });
    const id = created.body.data.createVideo.id;
    const failed = await waitFor(
      () => postGraphql(server.url, `query($id: ID!) { prediction(id: $id) { status error } }`, { id }),
      (r) => r.body.data.prediction.status === 'FAILED',
    );
    expect(failed.body.data.prediction.error).toContain('invalid request for key [redacted]');
    expect(JSON.stringify(failed.body)).not.toContain(secret);
    expect(server.output()).toContain('cinegraph listening');
    expect(server.output()).not.toContain(secret);
  });
});
