// Micro-benchmark of src/db/transact.ts: a nested savepoint around one insert, as a createVideo's
// writes run inside a group commit, through better-sqlite3's `transaction(fn)()` built at each call
// (before) and through `transact` (one wrapper per connection, after); the insert alone for scale.
// A WAL file database in a temp dir, alternating turns. `npx tsx bench/transact.ts [N=20000] [turns=5]`.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { transact } from '../src/db/transact.js';

const N = Number(process.argv[2] ?? 20_000);
const TURNS = Number(process.argv[3] ?? 5);
const dir = mkdtempSync(join(tmpdir(), 'cinegraph-transact-'));
const db = new Database(join(dir, 'bench.sqlite'));
db.pragma('journal_mode = WAL');
db.pragma('synchronous = NORMAL');
db.exec('CREATE TABLE t (x INTEGER)');
const insert = db.prepare('INSERT INTO t VALUES (1)');

const contenders: Record<string, () => void> = {
  'transaction(fn)() per call': () => db.transaction(() => insert.run())(),
  'transact(db, fn)': () => transact(db, () => insert.run()),
  'insert alone': () => insert.run(),
};
const times: Record<string, number[]> = Object.fromEntries(Object.keys(contenders).map((name) => [name, []]));
for (let t = 0; t < TURNS; t++) {
  for (const [name, one] of Object.entries(contenders)) {
    const t0 = process.hrtime.bigint();
    // One outer transaction, as a group commit's: each call inside it is a savepoint.
    transact(db, () => {
      for (let i = 0; i < N; i++) one();
    });
    times[name]?.push(Number(process.hrtime.bigint() - t0) / 1e3 / N);
  }
}
for (const [name, xs] of Object.entries(times)) {
  const s = [...xs].sort((a, b) => a - b);
  console.log(`${name.padEnd(28)} median ${(s[Math.floor(s.length / 2)] ?? Number.NaN).toFixed(2)} µs a call (${s[0]?.toFixed(2)}–${s.at(-1)?.toFixed(2)}), ${TURNS} turns of ${N}`);
}
db.close();
rmSync(dir, { recursive: true, force: true });
