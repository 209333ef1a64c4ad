import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { constants as osConstants } from 'node:os';
import { fileURLToPath } from 'node:url';
import { fastEnv } from './app.js';
import { onDispose } from './dispose.js';

export { freePort } from './net.js';

const root = fileURLToPath(new URL('../..', import.meta.url));

export interface ServerProcess {
  child: ChildProcess;
  url: string;
  output: () => string;
  exited: Promise<number | null>;
}

/** The JSON log lines (pino's) in a process's output, in order; other lines (npm's, stack traces) are skipped. */
export function logLines<T = Record<string, unknown>>(output: string): T[] {
  return output
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as T);
}

/**
 * `src/main.ts` as its own process, as `npm start` runs it, with `env` over this process's
 * environment; its stdout and stderr together. Killed at the test's end if it is still running
 * (with WORKERS, its workers exit with it).
 */
function spawnMain(env: Record<string, string>) {
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/main.ts'], { cwd: root, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout?.on('data', (d) => (output += d));
  child.stderr?.on('data', (d) => (output += d));
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  onDispose(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL');
      await exited;
    }
  });
  return { child, exited, output: () => output };
}

/** Runs `src/main.ts` for a test that expects it to exit: its exit code, and its stdout and stderr together. */
export function runMain(env: Record<string, string>): { pid: number; exited: Promise<number | null>; output: () => string } {
  const { child, exited, output } = spawnMain(env);
  return { pid: child.pid ?? Number.NaN, exited, output };
}

/** Runs `src/main.ts` as its own process, as `npm start` does, and waits for /healthz. */
export async function spawnServer(env: Record<string, string>): Promise<ServerProcess> {
  const { child, exited, output } = spawnMain({ ...fastEnv, WAVESPEED_API_KEY: '', ...env });
  const url = `http://127.0.0.1:${env.PORT}`;
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`server exited early:\n${output()}`);
    try {
      if ((await fetch(`${url}/healthz`)).ok) break;
    } catch {}
    if (Date.now() > deadline) throw new Error(`server not healthy in 30 s:\n${output()}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  return { child, url, output, exited };
}

/**
 * Resolves once `signal` sent to `pid` is no longer pending there (Linux: /proc/<pid>/status,
 * ShdPnd): the process has taken it, so the next kill is a signal of its own. Sent before that, a
 * second one would merge into the first (the kernel keeps one pending signal of each kind), and a
 * test of a repeated signal would see only one.
 */
export async function signalTaken(pid: number, signal: NodeJS.Signals): Promise<void> {
  const bit = 1n << BigInt(osConstants.signals[signal] - 1);
  for (const deadline = Date.now() + 10_000; ; ) {
    const pending = /^ShdPnd:\s*([0-9a-f]+)$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1];
    if (pending === undefined) throw new Error(`no ShdPnd line in /proc/${pid}/status`);
    if ((BigInt(`0x${pending}`) & bit) === 0n) return;
    if (Date.now() > deadline) throw new Error(`${signal} still pending for ${pid} after 10 s`);
    await new Promise((r) => setTimeout(r, 1));
  }
}
