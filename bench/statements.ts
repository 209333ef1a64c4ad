// Per-call cost of the store's statements that were built by Drizzle's query builder on every call
// (better-sqlite3 then compiled the SQL each time) against the prepared ones the store now keeps
// (BENCHMARKS.md, session 11). The builder forms are copied here as they were, to be measured.
// `npx tsx bench/statements.ts`: a file database in a temp dir, alternating turns, medians printed.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { and, count, desc, eq, getTableColumns, inArray, isNull, lt, lte } from 'drizzle-orm';
import { openDatabase } from '../src/db/client.js';
import { IDEMPOTENCY_TTL_MS, IdempotencyStore } from '../src/db/idempotency.js';
import { WebhookStore } from '../src/db/outbox.js';
import { PredictionStore } from '../src/db/predictions.js';
import { idempotencyKeys, predictions, webhookReceipts } from '../src/db/schema.js';
import { transact } from '../src/db/transact.js';
import { newRow } from '../test/helpers/db.js';

const dir = mkdtempSync(join(tmpdir(), 'cinegraph-bench-statements-'));
const db = openDatabase(join(dir, 'bench.sqlite'));
const store = new PredictionStore(db);
const idempotency = new IdempotencyStore(db);
const webhooks = new WebhookStore(db);

const T0 = new Date();
const row = (id: string, owner: string, status: 'CREATED' | 'COMPLETED') => ({ ...newRow(id), owner, status });
// One owner with 50 unfinished predictions (the count), 2,000 rows of two owners (the list).
for (let i = 0; i < 50; i++) store.insert(row(`u${i}`, 'k1', 'CREATED'));
for (let i = 0; i < 2000; i++) store.insert(row(`p${i}`, i % 2 ? 'k2' : 'k3', i % 3 ? 'COMPLETED' : 'CREATED'));
for (let i = 0; i < 2000; i++) idempotency.remember('o', `k${i}`, { predictionId: `p${i}`, inputHash: 'h' }, T0);

const { image: _image, ...rowColumns } = getTableColumns(predictions);
const ownedBy = (owner: string | null) => (owner === null ? isNull(predictions.owner) : eq(predictions.owner, owner));
const builder = {
  countUnfinished: (owner: string | null) =>
    db
      .select({ n: count() })
      .from(predictions)
      .where(and(ownedBy(owner), inArray(predictions.status, ['CREATED', 'PROCESSING'])))
      .get()?.n ?? 0,
  find: (owner: string | null, key: string) =>
    db
      .select({ predictionId: idempotencyKeys.predictionId, inputHash: idempotencyKeys.inputHash, createdAt: idempotencyKeys.createdAt })
      .from(idempotencyKeys)
      .where(and(eq(idempotencyKeys.owner, owner ?? ''), eq(idempotencyKeys.key, key)))
      .get(),
  remember: (owner: string | null, key: string, value: { predictionId: string; inputHash: string }, now: Date) => {
    db.delete(idempotencyKeys).where(lte(idempotencyKeys.createdAt, new Date(now.getTime() - IDEMPOTENCY_TTL_MS))).run();
    db.insert(idempotencyKeys)
      .values({ owner: owner ?? '', key, ...value, createdAt: now })
      .onConflictDoUpdate({ target: [idempotencyKeys.owner, idempotencyKeys.key], set: { ...value, createdAt: now } })
      .run();
  },
  list: (first: number, owner: string, beforeSeq?: number, status?: 'CREATED') =>
    db
      .select(rowColumns)
      .from(predictions)
      .where(
        and(
          beforeSeq === undefined ? undefined : lt(predictions.seq, beforeSeq),
          status === undefined ? undefined : eq(predictions.status, status),
          ownedBy(owner),
        ),
      )
      .orderBy(desc(predictions.seq))
      .limit(first)
      .all(),
  rememberReceipt: (webhookId: string, now: Date, forgetBefore: Date) =>
    transact(db.$client, () => {
      db.delete(webhookReceipts).where(lt(webhookReceipts.receivedAt, forgetBefore)).run();
      return db.insert(webhookReceipts).values({ webhookId, receivedAt: now }).onConflictDoNothing().run().changes === 1;
    }),
};

/** µs per call of `f`, over `n` calls. */
function time(n: number, f: (i: number) => unknown): number {
  const start = process.hrtime.bigint();
  for (let i = 0; i < n; i++) f(i);
  return Number(process.hrtime.bigint() - start) / n / 1000;
}

const TURNS = 5;
let unique = 0;
const cases: { name: string; n: number; builder: (i: number) => unknown; prepared: (i: number) => unknown }[] = [
  { name: 'countUnfinished, 50 unfinished', n: 5000, builder: () => builder.countUnfinished('k1'), prepared: () => store.countUnfinished('k1') },
  { name: 'idempotency find', n: 5000, builder: (i) => builder.find('o', `k${i % 2000}`), prepared: (i) => idempotency.find('o', `k${i % 2000}`, T0) },
  {
    name: 'idempotency remember (2 commits)',
    n: 2000,
    builder: () => builder.remember('o', `b${unique++}`, { predictionId: 'x', inputHash: 'h' }, T0),
    prepared: () => idempotency.remember('o', `p${unique++}`, { predictionId: 'x', inputHash: 'h' }, T0),
  },
  { name: "list, an owner's first 20", n: 1000, builder: () => builder.list(20, 'k2'), prepared: () => store.list({ first: 20, owner: 'k2' }) },
  {
    name: 'list, cursor and status',
    n: 1000,
    builder: () => builder.list(20, 'k3', 1500, 'CREATED'),
    prepared: () => store.list({ first: 20, owner: 'k3', beforeSeq: 1500, status: 'CREATED' }),
  },
  {
    name: 'incoming webhook receipt (1 commit)',
    n: 2000,
    builder: () => builder.rememberReceipt(`b${unique++}`, T0, new Date(T0.getTime() - 600_000)),
    prepared: () => webhooks.rememberReceipt(`p${unique++}`, T0, new Date(T0.getTime() - 600_000)),
  },
];

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] as number;
console.log(`statements: µs per call, median of ${TURNS} alternating turns`);
for (const c of cases) {
  const b: number[] = [];
  const p: number[] = [];
  for (let turn = 0; turn < TURNS; turn++) {
    b.push(time(c.n, c.builder));
    p.push(time(c.n, c.prepared));
  }
  const mb = median(b);
  const mp = median(p);
  console.log(`${c.name.padEnd(36)} builder ${mb.toFixed(1).padStart(7)}  prepared ${mp.toFixed(1).padStart(7)}  ${(mb / mp).toFixed(1)}×`);
}
db.$client.close();
rmSync(dir, { recursive: true, force: true });
