// Subscription fan-out: N graphql-ws subscribers on one prediction, then one status change that all
// must receive. The server runs as a child process (as `npm start`); clients are raw
// graphql-transport-ws sockets in worker threads, so the server is what is measured.
import { readFileSync } from 'node:fs';
import { Worker } from 'node:worker_threads';
import type { BenchRow } from './report.js';
import { startCinegraph } from './servers.js';

const TARGET_N = Number(process.env.FANOUT_N ?? 10_000);
const WORKERS = 2;
/** Long enough to connect every subscriber before the task completes. */
const TASK_SECONDS = 40;

const rssKb = (pid: number) => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? NaN);
const percentile = (sorted: number[], p: number) => sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? NaN;

export async function run(): Promise<BenchRow[]> {
  const server = await startCinegraph({ SANDBOX_TASK_SECONDS: String(TASK_SECONDS), POLL_INITIAL_MS: '100', POLL_GROWTH: '0', POLL_MAX_MS: '100' });
  try {
    const created = (await fetch(`${server.url}/graphql`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ query: 'mutation { createVideo(input: { prompt: "fan-out" }) { id } }' }),
    }).then((r) => r.json())) as { data: { createVideo: { id: string } } };
    const id = created.data.createVideo.id;
    await new Promise((r) => setTimeout(r, 500));
    const rssBefore = rssKb(server.pid);
    const startedAt = Date.now();

    const workers = Array.from(
      { length: WORKERS },
      () =>
        new Worker(new URL('./fanout-client.mjs', import.meta.url), {
          workerData: { url: `${server.url.replace('http', 'ws')}/graphql`, id, count: Math.ceil(TARGET_N / WORKERS), finalStatus: 'COMPLETED', timeoutMs: TASK_SECONDS * 1000 + 15_000 },
        }),
    );
    let rssConnected = 0;
    let connectedCount = 0;
    let pending = WORKERS;
    const done = await Promise.all(
      workers.map(
        (w) =>
          new Promise<{ latencies: number[]; connected: number; failed: number }>((resolve, reject) => {
            w.on('message', (m) => {
              if (m.type === 'connected') {
                connectedCount += m.connected;
                if (--pending === 0) rssConnected = rssKb(server.pid);
              } else if (m.type === 'done') resolve(m);
            });
            w.on('error', reject);
          }),
      ),
    );
    const connectSeconds = (Date.now() - startedAt) / 1000;
    const latencies = done.flatMap((d) => d.latencies).sort((a, b) => a - b);
    const reached = done.reduce((n, d) => n + d.connected, 0);
    const received = latencies.length;
    const kbPerSub = (rssConnected - rssBefore) / Math.max(1, connectedCount);
    const p99 = percentile(latencies, 99);
    return [
      { name: 'fan-out: subscribers held', value: reached, unit: 'subs', target: `>= ${TARGET_N}`, pass: reached >= TARGET_N, note: `${received} got the change; ${done.reduce((n, d) => n + d.failed, 0)} failed; ${connectSeconds.toFixed(0)} s total` },
      { name: 'fan-out: server RSS per subscriber', value: round(kbPerSub), unit: 'KB', target: '< 20', pass: kbPerSub < 20 },
      { name: 'fan-out: delivery latency p50', value: percentile(latencies, 50), unit: 'ms' },
      { name: 'fan-out: delivery latency p99', value: p99, unit: 'ms', target: '< 200', pass: p99 < 200 && received === reached, note: `max ${latencies.at(-1)} ms` },
    ];
  } finally {
    await server.stop();
  }
}

const round = (x: number) => Math.round(x * 10) / 10;
