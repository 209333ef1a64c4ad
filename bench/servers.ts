import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { freePort } from '../test/helpers/net.js';

const root = fileURLToPath(new URL('..', import.meta.url));

export interface BenchServer {
  url: string;
  /** The child's pid, for reading its memory from /proc. */
  pid: number;
  /** What the child printed so far (its log lines at the LOG_LEVEL it was given; silent by default). */
  output(): string;
  stop(): Promise<void>;
}

export { freePort };

export function tempDir(prefix: string): { dir: string; remove(): void } {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  return { dir, remove: () => rmSync(dir, { recursive: true, force: true }) };
}

// Children must not outlive a crashed or interrupted benchmark: they would hold ports and CPU.
const children = new Set<ChildProcess>();
let hooked = false;
function killOnExit(): void {
  if (hooked) return;
  hooked = true;
  process.on('exit', () => {
    for (const c of children) c.kill('SIGKILL');
  });
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.once(signal, () => {
      for (const c of children) c.kill('SIGKILL');
      process.exit(130);
    });
  }
}

/** Spawns `node --import tsx <script>` from the repo root (under `taskset -c cpu` when given) and waits for its /healthz. */
async function spawnNode(script: string, env: Record<string, string | undefined>, prefix: string, cpu?: number): Promise<BenchServer> {
  killOnExit();
  const port = await freePort();
  const data = tempDir(prefix);
  const merged: NodeJS.ProcessEnv = { ...process.env, HOST: '127.0.0.1', PORT: String(port), DATA_DIR: data.dir, LOG_LEVEL: 'silent', ...env };
  for (const [k, v] of Object.entries(merged)) if (v === undefined) delete merged[k];
  // BENCH_SERVER_NODE_ARGS: node flags for the servers measured, e.g. `--cpu-prof --cpu-prof-dir=/tmp/prof`
  // (Node refuses --cpu-prof in NODE_OPTIONS).
  const extra = process.env.BENCH_SERVER_NODE_ARGS?.split(' ').filter(Boolean) ?? [];
  const node = [process.execPath, ...extra, '--import', 'tsx', script];
  // taskset execs node, so the pid stays the server's own (its /proc/<pid>/stat is the server's CPU).
  const [command = process.execPath, ...args] = cpu === undefined ? node : ['taskset', '-c', String(cpu), ...node];
  const child = spawn(command, args, {
    cwd: root,
    env: merged,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.add(child);
  let output = '';
  // stdio is 'pipe', so both streams exist.
  child.stdout?.on('data', (d) => (output += d));
  child.stderr?.on('data', (d) => (output += d));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const url = `http://127.0.0.1:${port}`;
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(timer);
    }
    children.delete(child);
    data.remove();
  };
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (child.exitCode !== null) {
      await stop();
      throw new Error(`${script} exited early (code ${child.exitCode}):\n${output}`);
    }
    try {
      if ((await fetch(`${url}/healthz`)).ok) break;
    } catch {}
    if (Date.now() > deadline) {
      await stop();
      throw new Error(`${script} not healthy within 30 s:\n${output}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  if (child.pid === undefined) throw new Error(`${script} has no pid`); // only when spawning failed
  return { url, pid: child.pid, output: () => output, stop };
}

/** The real gateway, against its embedded sandbox (WAVESPEED_API_KEY removed from the env). */
export function startCinegraph(env: Record<string, string> = {}, cpu?: number): Promise<BenchServer> {
  return spawnNode('src/main.ts', { WAVESPEED_API_KEY: undefined, WAVESPEED_BASE_URL: undefined, ...env }, 'cinegraph-bench-', cpu);
}

/** graphql-yoga answering `{ __typename }` with a one-field SDL schema: the floor for any yoga server. */
export function startBareYoga(cpu?: number): Promise<BenchServer> {
  return spawnNode('bench/bare-yoga.ts', {}, 'cinegraph-bench-bare-', cpu);
}
