// The realistic mixed run (issue 18): 1,000 clients each creating a video and following it live over
// graphql-ws, plus readers polling `prediction(id)`, against the real gateway and its sandbox. The
// server runs pinned to core 0 and the load generator (bench/mixed-client.mjs) to core 1, so the
// figures are the server's. Event delivery is timed from the write of a new status (`updatedAt`, the
// server's clock; one machine, one clock) to its arrival at the client; server CPU per event is its
// user + system time over every `predictionUpdated` message delivered (queue-place moves included).
import { spawn } from 'node:child_process';
import { cpus } from 'node:os';
import { fileURLToPath } from 'node:url';
import type { BenchRow } from './report.js';
import { cpuSeconds, mean, percentile, range, ROUNDS } from './rounds.js';
import { startCinegraph } from './servers.js';

const CLIENTS = Number(process.env.MIXED_CLIENTS ?? 1000);
const READERS = Number(process.env.MIXED_READERS ?? 8);
/** Creations spread over this long: 1,000 over 20 s is 50 a second. */
const RAMP_MS = Number(process.env.MIXED_RAMP_MS ?? 20_000);
const TASK_SECONDS = 5;
const TIMEOUT_MS = 120_000;

interface Round {
  p50: number;
  p99: number;
  /** Server CPU (user + system) per predictionUpdated message delivered, µs. */
  cpuUsPerEvent: number;
  readsPerSecond: number;
  events: number;
  finished: number;
  failed: number;
  readErrors: number;
  seconds: number;
}

/** One run on a fresh server: the clients' whole script, from the first creation to the last completion. */
async function round(two: boolean): Promise<Round> {
  const server = await startCinegraph(
    // Polls as the defaults would for 5 s tasks, a little quicker; no per-key limits in open mode.
    { SANDBOX_TASK_SECONDS: String(TASK_SECONDS), POLL_INITIAL_MS: '1000', POLL_MAX_MS: '1000' },
    two ? 0 : undefined,
  );
  try {
    const cpu0 = cpuSeconds(server.pid);
    const script = fileURLToPath(new URL('./mixed-client.mjs', import.meta.url));
    const node = [process.execPath, script, server.url, String(CLIENTS), String(READERS), String(RAMP_MS), String(TIMEOUT_MS)];
    const [command = process.execPath, ...args] = two ? ['taskset', '-c', '1', ...node] : node;
    const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    await new Promise((resolve) => child.once('exit', resolve));
    const cpuUsed = (cpuSeconds(server.pid) - cpu0) * 1e6;
    const m = JSON.parse(out.trim().split('\n').at(-1) ?? '{}') as { latencies: number[]; events: number; finished: number; failed: number; reads: number; readErrors: number; seconds: number };
    const sorted = m.latencies.sort((a, b) => a - b);
    return {
      p50: percentile(sorted, 50),
      p99: percentile(sorted, 99),
      cpuUsPerEvent: cpuUsed / Math.max(1, m.events),
      readsPerSecond: m.reads / m.seconds,
      events: m.events,
      finished: m.finished,
      failed: m.failed,
      readErrors: m.readErrors,
      seconds: m.seconds,
    };
  } finally {
    await server.stop();
  }
}

export async function run(): Promise<BenchRow[]> {
  const two = cpus().length > 1;
  const rounds: Round[] = [];
  for (let i = 0; i < ROUNDS; i++) rounds.push(await round(two));
  const of = (f: (r: Round) => number) => rounds.map(f);
  const spread = (f: (r: Round) => number, fmt: (x: number) => string) => `${rounds.length} rounds: ${fmt(mean(of(f)))} (${range(of(f), fmt)})`;
  const int = (x: number) => Math.round(x).toLocaleString('en-US');
  // Every client must have seen its video through, in every round, for the latency to count.
  const complete = rounds.every((r) => r.finished === CLIENTS && r.failed === 0);
  const note = `${CLIENTS} clients (completed ${of((r) => r.finished).join('/')}, failed ${of((r) => r.failed).join('/')}), ${READERS} readers, ${TASK_SECONDS} s tasks, creations over ${RAMP_MS / 1000} s; events ${of((r) => r.events).join('/')} in ${rounds.map((r) => r.seconds.toFixed(0)).join('/')} s; a fresh server each round${two ? '; server on core 0, clients on core 1' : ''}`;
  return [
    { name: 'mixed run: event delivery p50 (write → client)', value: mean(of((r) => r.p50)), unit: 'ms', note: `${spread((r) => r.p50, int)}; ${note}` },
    {
      name: 'mixed run: event delivery p99 (write → client)',
      value: mean(of((r) => r.p99)),
      unit: 'ms',
      target: '< 100',
      pass: complete && Math.max(...of((r) => r.p99)) < 100,
      note: `${spread((r) => r.p99, int)}; the target holds only if every round is under it`,
    },
    {
      name: 'mixed run: server CPU per event delivered',
      value: mean(of((r) => r.cpuUsPerEvent)),
      unit: 'µs',
      note: `${spread((r) => r.cpuUsPerEvent, int)}; whole server: creations, submissions, polls, reads and fan-out, over every predictionUpdated message`,
    },
    {
      name: 'mixed run: prediction(id) reads answered',
      value: mean(of((r) => r.readsPerSecond)),
      unit: 'req/s',
      note: `${spread((r) => r.readsPerSecond, int)}; errors ${of((r) => r.readErrors).join('/')}`,
    },
  ];
}
