// What the benchmarks that repeat rounds share: the round count, mean and range, CPU time, pinning.
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import os from 'node:os';

/** `--rounds=N` (default 3): how many times each figure is measured. */
export const ROUNDS = (() => {
  const flag = process.argv.find((a) => a.startsWith('--rounds='));
  const n = flag ? Number(flag.slice('--rounds='.length)) : 3;
  if (!Number.isInteger(n) || n < 1) throw new Error(`--rounds must be a whole number >= 1, not ${flag}`);
  return n;
})();

export const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
export const range = (xs: number[], f: (n: number) => string) => `${f(Math.min(...xs))}–${f(Math.max(...xs))}`;

/** Ticks per second of /proc/<pid>/stat's times. */
const CLK_TCK = Number(spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout) || 100;

/** The value at percentile `p` of numbers sorted ascending (NaN when there are none). */
export const percentile = (sorted: number[], p: number) => sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? Number.NaN;

/**
 * The fields of /proc/<pid>/stat after the command name (which may hold spaces and parentheses):
 * state is 0, the parent's pid 1, utime 11, stime 12. Throws when the process is gone.
 */
export function statFields(pid: number): string[] {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  return stat.slice(stat.lastIndexOf(')') + 2).split(' ');
}

/** User + system CPU seconds of a process so far, or NaN where /proc cannot tell. */
export function cpuSeconds(pid: number): number {
  try {
    const f = statFields(pid);
    return (Number(f[11]) + Number(f[12])) / CLK_TCK;
  } catch {
    return Number.NaN;
  }
}

export interface Pinning {
  /** CPU for the servers measured (ours and bare yoga); undefined when not pinned. */
  server?: number;
  /** CPU for what stands in for a remote service (throughput's createVideo upstream): beside the load generator. */
  upstream?: number;
  /** Said in the output, pinned or not. */
  said: string;
  restore(): void;
}

/**
 * Servers on CPU 0, this process (the load generator: autocannon, or the fan-out's client threads,
 * which inherit it) on CPU 1, with taskset, so that the two never take turns on one core: unpinned,
 * bare yoga swung between 1,900 and 4,700 req/s here as the scheduler moved them. Undone at the end,
 * for the sections after this one.
 */
export function pin(): Pinning {
  const unpinned = (why: string): Pinning => ({ said: `not pinned (${why}): ratios swing with scheduling`, restore: () => undefined });
  if (os.availableParallelism() < 2) return unpinned('one CPU');
  const probe = spawnSync('taskset', ['-p', String(process.pid)], { encoding: 'utf8' });
  const mask = /:\s*([0-9a-f]+)\s*$/i.exec(probe.stdout ?? '')?.[1];
  if (probe.status !== 0 || !mask) return unpinned('taskset not available');
  // -a: every thread of this process (libuv's pool, V8's), not only the main one.
  if (spawnSync('taskset', ['-a', '-p', '-c', '1', String(process.pid)]).status !== 0) return unpinned('taskset refused');
  return {
    server: 0,
    upstream: 1,
    said: 'pinned with taskset: servers on CPU 0; load generator on CPU 1',
    restore: () => void spawnSync('taskset', ['-a', '-p', mask, String(process.pid)]),
  };
}

