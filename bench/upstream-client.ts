import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { Readable } from 'node:stream';
import { type UpstreamTransport, WaveSpeedClient } from '../src/upstream/wavespeed.js';
import type { BenchRow } from './report.js';

/**
 * The upstream client's cost per request: undici's `request` (what WaveSpeedClient uses) against the
 * global `fetch` it used before, through an adapter that does what the old code did (fetch with
 * redirect: 'manual', a timeout signal, the body read as a WHATWG stream). Same client code around
 * both, same loopback upstream in another process (taskset on the other core when there are two),
 * interleaved rounds; the figure is the client process's CPU per request (user + system), which is
 * what a submission or a poll costs the gateway.
 */

const REQUESTS = 4000;
const CONCURRENCY = 16;
const ROUNDS = 3;

const UPSTREAM = `
const http = require('node:http');
const record = JSON.stringify({ code: 200, message: 'success', data: { id: 'task-1', model: 'minimax/video-01', status: 'processing', outputs: [], urls: { get: 'http://x/api/v3/predictions/task-1/result' }, has_nsfw_contents: [], created_at: '2026-11-29T00:00:00Z', error: '', timings: { inference: 0 } } });
http.createServer((req, res) => {
  req.resume();
  req.on('end', () => res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(record) }).end(record));
}).listen(0, '127.0.0.1', function () { process.stdout.write(String(this.address().port) + '\\n'); });
`;

/** The old transport: fetch, as the client called it until 2026-11-29. */
const viaFetch: UpstreamTransport = (async (url: string, opts: { method: string; headers: Record<string, string>; body?: string; signal: AbortSignal }) => {
  const response = await fetch(url, { method: opts.method, headers: opts.headers, body: opts.body, signal: AbortSignal.any([AbortSignal.timeout(30_000), opts.signal]), redirect: 'manual' });
  const headers: Record<string, string> = {};
  response.headers.forEach((v, k) => {
    headers[k] = v;
  });
  return { statusCode: response.status, headers, body: response.body ? Readable.fromWeb(response.body as never) : Readable.from([]) };
}) as never;

async function round(client: WaveSpeedClient, submit: boolean): Promise<{ cpuUs: number; perSecond: number }> {
  let next = 0;
  const cpu = process.cpuUsage();
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async () => {
      while (next++ < REQUESTS) {
        if (submit) await client.submit({ prompt: 'a cat surfing a wave at dusk', enablePromptExpansion: false });
        else await client.getResult('task-1');
      }
    }),
  );
  const ms = performance.now() - t0;
  const used = process.cpuUsage(cpu);
  return { cpuUs: (used.user + used.system) / REQUESTS, perSecond: (REQUESTS / ms) * 1000 };
}

export async function run(): Promise<BenchRow[]> {
  const pin = (await import('node:os')).cpus().length > 1 ? ['taskset', '-c', '1'] : [];
  const [command = process.execPath, ...args] = [...pin, process.execPath, '-e', UPSTREAM];
  const upstream = spawn(command, args, { stdio: ['ignore', 'pipe', 'inherit'] });
  try {
    const [line] = (await once(upstream.stdout, 'data')) as [Buffer];
    const baseUrl = `http://127.0.0.1:${line.toString().trim()}`;
    const clients = {
      undici: new WaveSpeedClient({ baseUrl, apiKey: 'bench-key', timeoutMs: 30_000 }),
      fetch: new WaveSpeedClient({ baseUrl, apiKey: 'bench-key', timeoutMs: 30_000, request: viaFetch }),
    };
    const rows: BenchRow[] = [];
    for (const submit of [false, true]) {
      const label = submit ? 'submit (POST)' : 'getResult (GET)';
      const cpu: Record<'undici' | 'fetch', number[]> = { undici: [], fetch: [] };
      // Warm both (JIT, keep-alive sockets), then interleave.
      await round(clients.undici, submit);
      await round(clients.fetch, submit);
      for (let r = 0; r < ROUNDS; r++) {
        for (const name of ['fetch', 'undici'] as const) cpu[name].push((await round(clients[name], submit)).cpuUs);
      }
      const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
      const range = (xs: number[]) => `${Math.min(...xs).toFixed(0)}–${Math.max(...xs).toFixed(0)}`;
      rows.push({
        name: `upstream client ${label}: CPU per request, undici request`,
        value: mean(cpu.undici),
        unit: 'µs',
        baseline: { name: 'fetch', value: mean(cpu.fetch) },
        ratio: mean(cpu.undici) / mean(cpu.fetch),
        note: `${ROUNDS} interleaved rounds of ${REQUESTS}, ${CONCURRENCY} at once; undici ${range(cpu.undici)} µs, fetch ${range(cpu.fetch)} µs`,
      });
    }
    return rows;
  } finally {
    upstream.kill();
  }
}
