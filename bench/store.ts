import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { openDatabase } from '../src/db/client.js';
import { PredictionStore, type PredictionPatch } from '../src/db/predictions.js';
import { createRecorder } from '../src/poller/record.js';
import { createPredictionPubSub } from '../src/pubsub.js';
import { encodeTaskId } from '../src/upstream/sandbox-tasks.js';
import { MODEL } from '../src/upstream/wavespeed.js';
import type { BenchRow } from './report.js';
import { tempDir } from './servers.js';

const ROWS = 10_000;
const UPDATES = 20_000;
const READS = 1_000;

/**
 * Operations per second of each contender, run in turns of `n / turns` operations so that drift
 * (WAL growth, checkpoints, a noisy neighbour) lands on every contender alike, not on whoever runs last.
 */
function interleaved<K extends string>(n: number, turns: number, fns: Record<K, (i: number) => void>): Record<K, number> {
  const spent = {} as Record<K, number>;
  const size = Math.ceil(n / turns);
  for (let turn = 0; turn < turns; turn++) {
    for (const [name, fn] of Object.entries(fns) as [K, (i: number) => void][]) {
      const t0 = performance.now();
      for (let i = turn * size; i < (turn + 1) * size; i++) fn(i);
      spent[name] = (spent[name] ?? 0) + performance.now() - t0;
    }
  }
  const rates = {} as Record<K, number>;
  for (const name of Object.keys(fns) as K[]) rates[name] = (size * turns) / (spent[name] / 1000);
  return rates;
}

export async function run(): Promise<BenchRow[]> {
  const tmp = tempDir('cinegraph-bench-store-');
  const db = openDatabase(join(tmp.dir, 'cinegraph.sqlite'));
  try {
    const store = new PredictionStore(db);
    const now = () => new Date();
    const recorder = createRecorder(store, createPredictionPubSub(), now);
    const sqlite = db.$client;

    const t = Date.now();
    const ids: string[] = [];
    sqlite.transaction(() => {
      for (let i = 0; i < ROWS; i++) {
        const upstreamId = encodeTaskId(t - 60_000 + i, 180_000, 'c');
        const row = store.insert({
          id: randomUUID(),
          model: MODEL,
          status: 'CREATED',
          prompt: `A paper boat drifting down a rainy street, take ${i}, cinematic lighting, slow dolly shot`,
          image: null,
          hasImage: false,
          enablePromptExpansion: true,
          createdAt: new Date(t - 60_000),
          updatedAt: new Date(t - 60_000),
          nextPollAt: new Date(t - 60_000),
        });
        // As the poller leaves a row after submitting it.
        store.update(
          row.id,
          {
            upstreamId,
            status: 'PROCESSING',
            urlsGet: `http://127.0.0.1:4000/sandbox/api/v3/predictions/${upstreamId}/result`,
            submittedAt: new Date(t - 59_000),
            nextPollAt: new Date(t + (i % 30_000)),
            pollCount: i % 12,
          },
          new Date(t - 10_000),
        );
        ids.push(row.id);
      }
    })();
    const id = (i: number) => ids[i % ROWS] ?? '';
    const rows: BenchRow[] = [];

    // Read-side first, while all 10,000 rows are still in flight. A far-future `now` makes every row
    // due, the poller's worst case when it has fallen behind.
    const late = new Date(t + 3_600_000);
    const rawDue = sqlite.prepare('SELECT id FROM predictions WHERE next_poll_at IS NOT NULL AND next_poll_at <= ? ORDER BY next_poll_at LIMIT ?');
    const plan = (sqlite.prepare(`EXPLAIN QUERY PLAN ${rawDue.source}`).all(late.getTime(), 64) as Array<{ detail: string }>).map((r) => r.detail).join('; ');
    if (store.due(late, 64).length !== 64) throw new Error('due() did not return 64 rows');
    const rawNext = sqlite.prepare('SELECT min(next_poll_at) FROM predictions');
    const reads = interleaved(READS, 5, {
      due: () => store.due(late, 64),
      rawDue: () => rawDue.all(late.getTime(), 64),
      next: () => store.nextDueAt(new Set()),
      rawNext: () => rawNext.get(),
    });
    const [dueUs, rawDueUs, nextUs, rawNextUs] = [reads.due, reads.rawDue, reads.next, reads.rawNext].map((r) => 1e6 / r) as [number, number, number, number];
    // Both sides return 64 full rows; better-sqlite3's per-row object building dominates either way.
    rows.push({ name: 'store.due(now, 64) @10k rows (cost ×raw)', value: dueUs, unit: 'µs/call', baseline: { name: 'raw SELECT', value: rawDueUs }, ratio: dueUs / rawDueUs, note: `plan: ${plan}` });
    rows.push({ name: 'store.nextDueAt(new Set()) @10k rows (cost ×raw)', value: nextUs, unit: 'µs/call', baseline: { name: 'raw SELECT min', value: rawNextUs }, ratio: nextUs / rawNextUs, note: 'called once per poller loop turn' });

    // The poller's write path: a visible change (status, outputs) with its scheduling bookkeeping.
    const visible = (i: number): PredictionPatch => {
      const done = Math.floor(i / ROWS) % 2 === 0;
      const at = new Date(t + i);
      return {
        status: done ? 'COMPLETED' : 'PROCESSING',
        outputs: done ? [`http://127.0.0.1:4000/sandbox/media/sbx-${i}.mp4`] : [],
        hasNsfwContents: done ? [false] : [],
        urlsGet: `http://127.0.0.1:4000/sandbox/api/v3/predictions/${i}/result`,
        error: null,
        inferenceMs: done ? 144_000 : null,
        attempts: 0,
        pollCount: i,
        nextPollAt: done ? null : new Date(at.getTime() + 2000),
        completedAt: done ? at : null,
      };
    };
    const raw = sqlite.prepare('UPDATE predictions SET status=?, outputs=?, next_poll_at=?, poll_count=?, version=version+1, updated_at=? WHERE id=?');
    const rawUpdate = (i: number) => {
      const p = visible(i);
      raw.run(p.status, JSON.stringify(p.outputs), p.nextPollAt?.getTime() ?? null, p.pollCount, Date.now(), id(i));
    };
    // Warm-up (JIT, page cache) before any timed round.
    // The SQLite recorder writes synchronously; its promise only reports the outcome.
    for (let i = 0; i < 1000; i++) void recorder.record(id(i), visible(i));
    for (let i = 0; i < 1000; i++) rawUpdate(i);

    const writes = interleaved(UPDATES, 4, {
      raw: rawUpdate,
      record: (i) => recorder.record(id(i), visible(i)),
      reschedule: (i) => recorder.reschedule(id(i), { attempts: 0, pollCount: i, nextPollAt: new Date(t + i + 2000) }),
    });
    const { raw: rawRate, record: recordRate, reschedule: rescheduleRate } = writes;
    rows.push({ name: 'recorder.record (visible change)', value: recordRate, unit: 'rows/s', baseline: { name: 'raw prepared UPDATE', value: rawRate }, ratio: recordRate / rawRate, note: `${UPDATES} updates each over ${ROWS} rows in 4 interleaved turns; one implicit transaction per update` });
    rows.push({ name: 'recorder.reschedule (bookkeeping)', value: rescheduleRate, unit: 'rows/s', baseline: { name: 'raw prepared UPDATE', value: rawRate }, ratio: rescheduleRate / rawRate });
    return rows;
  } finally {
    db.$client.close();
    tmp.remove();
  }
}
