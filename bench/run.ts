import os from 'node:os';
import { printTable, type BenchRow } from './report.js';

type Section = () => Promise<BenchRow[]>;

const sections: Record<string, () => Promise<Section>> = {
  throughput: async () => (await import('./throughput.js')).run,
  fanout: async () => (await import('./fanout.js')).run,
  store: async () => (await import('./store.js')).run,
  pollcost: async () => (await import('./pollcost.js')).run,
  queue: async () => (await import('./queue.js')).run,
  scaleout: async () => (await import('./scaleout.js')).run,
  'upstream-client': async () => (await import('./upstream-client.js')).run,
  mixed: async () => (await import('./mixed.js')).run,
};

const only = process.argv.find((a) => a.startsWith('--only='))?.slice('--only='.length).split(',');
const unknown = only?.filter((n) => !(n in sections)) ?? [];
if (unknown.length) {
  console.error(`unknown section ${unknown.join(', ')}; choose from ${Object.keys(sections).join(', ')}`);
  process.exit(2);
}

const cpus = os.cpus();
console.log(`machine: ${cpus[0]?.model ?? 'unknown CPU'} × ${cpus.length}, ${(os.totalmem() / 2 ** 30).toFixed(1)} GiB RAM, node ${process.version}, ${os.platform()} ${os.release()}`);

const rows: BenchRow[] = [];
let crashed = false;
const started = Date.now();
for (const [name, load] of Object.entries(sections)) {
  if (only && !only.includes(name)) continue;
  const t0 = Date.now();
  process.stderr.write(`[bench] ${name}…\n`);
  try {
    rows.push(...(await (await load())()));
  } catch (err) {
    // Keep going so one broken section does not hide the others; the exit code still says so.
    crashed = true;
    console.error(`[bench] ${name} crashed:`, err);
    rows.push({ name, value: NaN, unit: '', note: `crashed: ${(err as Error).message.split('\n')[0]}` });
  }
  process.stderr.write(`[bench] ${name} done in ${((Date.now() - t0) / 1000).toFixed(1)} s\n`);
}

console.log();
printTable(rows);
console.log(`total ${((Date.now() - started) / 1000).toFixed(0)} s`);
process.exit(crashed ? 1 : 0);
