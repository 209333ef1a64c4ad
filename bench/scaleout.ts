import { pino } from 'pino';
import { type Bridge, startBridge } from '../src/bus/bridge.js';
import type { ChangeBus } from '../src/bus/bus.js';
import { PgChangeBus } from '../src/bus/pg.js';
import { RedisChangeBus } from '../src/bus/redis.js';
import { closePostgres, openPostgres, type PgDb } from '../src/db/pg/client.js';
import { createPgStore, type PgStore } from '../src/db/pg/index.js';
import type { PredictionRow } from '../src/db/schema.js';
import { createPredictionPubSub } from '../src/pubsub.js';
import { MODEL } from '../src/upstream/wavespeed.js';
import { startPostgres } from '../test/helpers/postgres.js';
import { startRedis } from '../test/helpers/redis.js';
import type { BenchRow } from './report.js';
import { percentile } from './rounds.js';

const PREDICTIONS = 200;
/** Changes written one at a time, each awaited on the other instance: the latency figures. */
const SEQUENTIAL = 300;
/** Changes written 16 at a time: the throughput figure. */
const BURST = 3000;
const log = pino({ level: 'silent' });

interface Instance {
  db: PgDb;
  store: PgStore;
  bridge: Bridge;
  pubsub: ReturnType<typeof createPredictionPubSub>;
}

async function instance(url: string, name: string, bus: ChangeBus): Promise<Instance> {
  const db = await openPostgres(url);
  const pubsub = createPredictionPubSub();
  const store = createPgStore(db, { instanceId: name, leaseMs: 60_000, limits: {}, pubsub, now: () => new Date() });
  const bridge = await startBridge({ bus, pubsub, load: (id) => store.predictions.findById(id), log, resyncMs: 0 });
  return { db, store, bridge, pubsub };
}

/**
 * Events between instances (issue 16): instance A records visible changes (one Postgres transaction
 * each, through the store's recorder) and announces them; instance B, watching every prediction,
 * reads each announced row back and publishes it to its own pubsub. Measured: the time from the
 * start of A's write to B's publish, against the time to A's own local publish (one process), one
 * change at a time; and how many changes per second reach B when A writes 16 at a time. Two
 * connections pools and two buses in one process: the GraphQL and socket side is bench/fanout.ts's.
 */
export async function run(): Promise<BenchRow[]> {
  const pgServer = await startPostgres();
  const redis = await startRedis();
  const rows: BenchRow[] = [];
  try {
    const buses: [string, (id: string, url: string) => ChangeBus][] = [['LISTEN/NOTIFY', (id, url) => new PgChangeBus({ connectionString: url, instanceId: id, log })]];
    if ('skipped' in redis) console.warn(`[bench] scaleout: ${redis.skipped}`);
    else buses.push(['Redis', (id) => new RedisChangeBus({ url: redis.url, instanceId: id, log })]);
    for (const [busName, makeBus] of buses) {
      const url = await pgServer.createDatabase();
      const a = await instance(url, 'A', makeBus('A', url));
      const b = await instance(url, 'B', makeBus('B', url));
      try {
        const now = new Date();
        const ids: string[] = [];
        for (let i = 0; i < PREDICTIONS; i++) {
          const row = await a.store.insert({ id: `bench-${i}`, model: MODEL, status: 'CREATED', prompt: `p${i}`, image: null, hasImage: false, enablePromptExpansion: true, createdAt: now, updatedAt: now, nextPollAt: now, owner: null });
          ids.push(row.id);
        }
        const arrivedOnB = new Map<string, number>();
        const arrivedOnA = new Map<string, number>();
        /** Who waits for a version to reach B (the sequential changes only: a burst coalesces older versions). */
        const onB = new Map<string, () => void>();
        for (const id of ids) {
          b.pubsub.subscribe('prediction:updated', id, (row: PredictionRow) => {
            const key = `${row.id}@${row.version}`;
            arrivedOnB.set(key, performance.now());
            onB.get(key)?.();
          });
          a.pubsub.subscribe('prediction:updated', id, (row: PredictionRow) => arrivedOnA.set(`${row.id}@${row.version}`, performance.now()));
        }
        /** One visible change on A, announced; `reachB` resolves once B has published it (when asked for). */
        const write = async (k: number, awaitB: boolean) => {
          const id = ids[k % ids.length] as string;
          const started = performance.now();
          const row = await a.store.lifecycleRecorder.record(id, { error: `change ${k}` });
          if (!row) throw new Error(`no row ${id}`);
          const key = `${row.id}@${row.version}`;
          // Registered before the announcement leaves, so B's publish cannot come first.
          const reachB = awaitB ? new Promise<void>((resolve) => onB.set(key, resolve)) : undefined;
          a.bridge.announce(row);
          return { key, started, reachB };
        };

        const local: number[] = [];
        const remote: number[] = [];
        for (let k = 0; k < SEQUENTIAL; k++) {
          const { key, started, reachB } = await write(k, true);
          await reachB;
          onB.delete(key);
          local.push((arrivedOnA.get(key) ?? Number.NaN) - started);
          remote.push((arrivedOnB.get(key) ?? Number.NaN) - started);
        }
        remote.sort((a, b) => a - b);
        local.sort((a, b) => a - b);
        for (const q of [50, 99]) {
          const [there, here] = [percentile(remote, q), percentile(local, q)];
          rows.push({
            name: `event to another instance (${busName}), p${q}`,
            value: there,
            unit: 'ms',
            baseline: { name: 'same process', value: here },
            ratio: there / here,
            note: `write start → B's publish; added ${(there - here).toFixed(2)} ms; ${SEQUENTIAL} changes one at a time`,
          });
        }

        // Throughput: 16 writers at once; done when B has published every change (or a newer one of its row).
        const t0 = performance.now();
        let next = 0;
        const written: string[] = [];
        await Promise.all(
          Array.from({ length: 16 }, async () => {
            while (next < BURST) {
              const k = next++;
              written.push((await write(SEQUENTIAL + k, false)).key);
            }
          }),
        );
        const newest = new Map<string, number>();
        for (const key of written) {
          const [id, v] = key.split('@') as [string, string];
          newest.set(id, Math.max(newest.get(id) ?? 0, Number(v)));
        }
        const deadline = Date.now() + 30_000;
        while ([...newest].some(([id, v]) => !arrivedOnB.has(`${id}@${v}`)) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
        const seconds = (performance.now() - t0) / 1000;
        const delivered = [...newest].filter(([id, v]) => arrivedOnB.has(`${id}@${v}`)).length;
        rows.push({
          name: `changes delivered to another instance per second (${busName})`,
          value: BURST / seconds,
          unit: 'events/s',
          note: `${BURST} changes over ${PREDICTIONS} rows, 16 writers; B read and published ${[...arrivedOnB.keys()].length} versions, the newest of all ${delivered}/${newest.size} rows (older versions of a row under read are coalesced)`,
        });
      } finally {
        await a.bridge.stop();
        await b.bridge.stop();
        await closePostgres(a.db);
        await closePostgres(b.db);
      }
    }
  } finally {
    if (!('skipped' in redis)) await redis.stop();
    await pgServer.stop();
  }
  return rows;
}
