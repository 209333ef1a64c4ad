import { createClient } from 'graphql-ws';
import WebSocket from 'ws';
import { buildApp } from '../src/app.js';
import { scaledClock } from '../src/clock.js';
import { loadConfig } from '../src/config.js';
import { decodeTaskId } from '../src/upstream/sandbox-tasks.js';
import type { BenchRow } from './report.js';
import { freePort, tempDir } from './servers.js';

// 20×: 3 minutes in 9 s. Faster distorts the baseline: every real millisecond of request latency
// counts as SPEED ms of task time, and at 60× a 1 s loop made only 47–133 of its 180 GETs.
const SPEED = Number(process.env.BENCH_POLL_SPEED ?? 20);
const TASK_SECONDS = 180;
const TASK_MS = TASK_SECONDS * 1000;
const PREDICTIONS = 20;

const CREATE = 'mutation($p: String!) { createVideo(input: { prompt: $p }) { id } }';
const WATCH = 'subscription($id: ID!) { predictionUpdated(id: $id) { status upstreamId } }';

interface ModeResult {
  getsPerPrediction: number;
  /** Mean time, on the scaled clock, from upstream completing to the subscriber seeing COMPLETED. */
  completionDelayMs: number;
  processingDelayMs: number;
  wallSeconds: number;
}

const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;

async function measureMode(env: (port: number) => Record<string, string>): Promise<ModeResult> {
  const port = await freePort();
  const tmp = tempDir('cinegraph-bench-poll-');
  // The poller, the sandbox and the subscriber's stamps all read this one clock.
  const clock = scaledClock(SPEED);
  const app = buildApp(
    loadConfig({ HOST: '127.0.0.1', PORT: String(port), DATA_DIR: tmp.dir, LOG_LEVEL: 'silent', SANDBOX_TASK_SECONDS: String(TASK_SECONDS), ...env(port) }),
    { clock },
  );
  const wall = Date.now();
  const url = await app.start();
  const client = createClient({ url: `${url.replace(/^http/, 'ws')}/graphql`, webSocketImpl: WebSocket, retryAttempts: 0, lazy: false, onNonLazyError: () => {} });
  try {
    const watches = await Promise.all(
      Array.from({ length: PREDICTIONS }, async (_, i) => {
        const res = await fetch(`${url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ query: CREATE, variables: { p: `poll cost ${i}` } }) });
        const id = ((await res.json()) as { data: { createVideo: { id: string } } }).data.createVideo.id;
        const seen = new Map<string, number>();
        let upstreamId: string | undefined;
        const done = new Promise<void>((resolve, reject) => {
          client.subscribe<{ predictionUpdated: { status: string; upstreamId: string | null } }>(
            { query: WATCH, variables: { id } },
            {
              next: (msg) => {
                const at = clock.now().getTime();
                const p = msg.data?.predictionUpdated;
                if (!p) return reject(new Error(`subscription error: ${JSON.stringify(msg.errors)}`));
                upstreamId ??= p.upstreamId ?? undefined;
                if (!seen.has(p.status)) seen.set(p.status, at);
              },
              error: reject,
              complete: resolve,
            },
          );
        });
        return { done, seen, upstream: () => upstreamId };
      }),
    );
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error('predictions did not finish in 60 s')), 60_000)));
    await Promise.race([Promise.all(watches.map((w) => w.done)), timeout]).finally(() => clearTimeout(timer));

    const gets: number[] = [];
    const completion: number[] = [];
    const processing: number[] = [];
    for (const w of watches) {
      const upstreamId = w.upstream();
      const task = upstreamId ? decodeTaskId(upstreamId) : undefined;
      const completedSeen = w.seen.get('COMPLETED');
      if (!upstreamId || !task || completedSeen === undefined) throw new Error(`a prediction did not complete: ${JSON.stringify([...w.seen])}`);
      gets.push(app.sandbox?.stats.resultRequests.get(upstreamId) ?? 0);
      completion.push(completedSeen - (task.createdAt + task.durationMs));
      const processingSeen = w.seen.get('PROCESSING');
      if (processingSeen !== undefined) processing.push(processingSeen - (task.createdAt + task.durationMs * 0.2));
    }
    return { getsPerPrediction: mean(gets), completionDelayMs: mean(completion), processingDelayMs: processing.length ? mean(processing) : NaN, wallSeconds: (Date.now() - wall) / 1000 };
  } finally {
    await client.dispose();
    await app.stop();
    tmp.remove();
  }
}

export async function run(): Promise<BenchRow[]> {
  const fixed = await measureMode(() => ({ POLL_INITIAL_MS: '1000', POLL_GROWTH: '0', POLL_MAX_MS: '1000' }));
  // The config defaults, whatever src/config.ts currently says they are.
  const adaptive = await measureMode(() => ({}));
  const webhooks = await measureMode((port) => ({ PUBLIC_URL: `http://127.0.0.1:${port}` }));
  const d = loadConfig({}).poll;

  const rows: BenchRow[] = [];
  const modes: Array<[string, ModeResult, boolean]> = [
    ['fixed 1 s loop', fixed, false],
    [`adaptive ${d.initialMs}/${d.growth}/${d.maxMs}`, adaptive, true],
    [`webhooks (fallback ${d.webhookFallbackMs} ms)`, webhooks, true],
  ];
  for (const [label, m, judged] of modes) {
    const isBase = m === fixed;
    rows.push({
      name: `poll: ${label}: GETs/prediction`,
      value: m.getsPerPrediction,
      unit: 'GETs/prediction',
      ...(isBase ? {} : { baseline: { name: 'fixed 1 s', value: fixed.getsPerPrediction }, ratio: m.getsPerPrediction / fixed.getsPerPrediction }),
      ...(m === adaptive ? { target: '<= 0.1', pass: m.getsPerPrediction / fixed.getsPerPrediction <= 0.1 } : {}),
      note: isBase
        ? `an ideal 1 s loop makes ${TASK_SECONDS}; ${PREDICTIONS} × ${TASK_SECONDS} s tasks at ${SPEED}×, ${m.wallSeconds.toFixed(1)} s wall`
        : `ratio vs an ideal ${TASK_SECONDS}-GET loop ${(m.getsPerPrediction / TASK_SECONDS).toFixed(3)}; ${m.wallSeconds.toFixed(1)} s wall`,
    });
    const share = m.completionDelayMs / TASK_MS;
    rows.push({
      name: `poll: ${label}: completion detection delay`,
      value: m.completionDelayMs,
      unit: 'ms (task clock)',
      ...(isBase ? {} : { baseline: { name: 'fixed 1 s', value: fixed.completionDelayMs }, ratio: m.completionDelayMs / fixed.completionDelayMs }),
      ...(judged ? { target: `<= 10% of task (${TASK_MS / 10} ms)`, pass: share <= 0.1 } : {}),
      note: `${(share * 100).toFixed(2)}% of the ${TASK_SECONDS} s task; processing seen after ${Math.round(m.processingDelayMs)} ms`,
    });
  }
  return rows;
}
