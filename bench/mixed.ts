// The realistic mixed run (issue 18): 1,000 clients each creating a video and following it live over
// graphql-ws, plus readers polling `prediction(id)`, against the real gateway and its sandbox. The
// server runs pinned to core 0 and the load generator (bench/mixed-client.mjs) to core 1, so the
// figures are the server's. Event delivery is timed from the write of a new status (`updatedAt`, the
// server's clock; one machine, one clock) to its arrival at the client; server CPU per event is its
// user + system time over every `predictionUpdated` message delivered (queue-place moves included).
import { spawn } from 'node:child_process';
import { cpus } from 'node:os';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { BenchRow } from './report.js';
import { startCinegraph } from './servers.js';

const CLIENTS = Number(process.env.MIXED_CLIENTS ?? 1000);
const READERS = Number(process.env.MIXED_READERS ?? 8);
/** Creations spread over this long: 1,000 over 20 s is 50 a second. */
const RAMP_MS = Number(process.env.MIXED_RAMP_MS ?? 20_000);
const TASK_SECONDS = 5;
const TIMEOUT_MS = 120_000;

const percentile = (sorted: number[], p: number) => sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? Number.NaN;
/** The process's user + system CPU in µs, from /proc (clock ticks of 10 ms). */
const cpuUs = (pid: number) => {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.split(' ') ?? [];
  return (Number(fields[11]) + Number(fields[12])) * 10_000;
};

export async function run(): Promise<BenchRow[]> {
  const two = cpus().length > 1;
  const server = await startCinegraph(
    // Polls as the defaults would for 5 s tasks, a little quicker; no per-key limits in open mode.
    { SANDBOX_TASK_SECONDS: String(TASK_SECONDS), POLL_INITIAL_MS: '1000', POLL_MAX_MS: '1000' },
    two ? 0 : undefined,
  );
  try {
    const cpu0 = cpuUs(server.pid);
    const script = fileURLToPath(new URL('./mixed-client.mjs', import.meta.url));
    const node = [process.execPath, script, server.url, String(CLIENTS), String(READERS), String(RAMP_MS), String(TIMEOUT_MS)];
    const [command = process.execPath, ...args] = two ? ['taskset', '-c', '1', ...node] : node;
    const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    await new Promise((resolve) => child.once('exit', resolve));
    const cpuUsed = cpuUs(server.pid) - cpu0;
    const m = JSON.parse(out.trim().split('\n').at(-1) ?? '{}') as { latencies: number[]; events: number; finished: number; failed: number; reads: number; readErrors: number; seconds: number };
    const sorted = m.latencies.sort((a, b) => a - b);
    const note = `${CLIENTS} clients (${m.finished} completed, ${m.failed} failed), ${READERS} readers, ${TASK_SECONDS} s tasks, creations over ${RAMP_MS / 1000} s; ${m.events} events in ${m.seconds.toFixed(0)} s${two ? '; server on core 0, clients on core 1' : ''}`;
    return [
      { name: 'mixed run: event delivery p50 (write → client)', value: percentile(sorted, 50), unit: 'ms', note },
      { name: 'mixed run: event delivery p99 (write → client)', value: percentile(sorted, 99), unit: 'ms', target: '< 100', pass: percentile(sorted, 99) < 100 },
      { name: 'mixed run: server CPU per event delivered', value: cpuUsed / Math.max(1, m.events), unit: 'µs', note: 'whole server: creations, submissions, polls, reads and fan-out, over every predictionUpdated message' },
      { name: 'mixed run: prediction(id) reads answered', value: m.reads / m.seconds, unit: 'req/s', note: `${m.readErrors} errors` },
    ];
  } finally {
    await server.stop();
  }
}
