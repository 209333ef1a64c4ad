import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { connect } from 'node:net';
import { freePort } from './net.js';

export interface TestRedis {
  url: string;
  /** Kills the server (SIGKILL) and starts it again on the same port; undefined when we did not start it. */
  restart?: () => Promise<void>;
  stop(): Promise<void>;
}

/**
 * A Redis for the bus tests. Our own `redis-server` on a free loopback port when the binary is on
 * PATH (so a test can kill and restart it), else the one answering on 127.0.0.1:6379 (no restart),
 * else a reason to skip, which the caller prints: a missing Redis never passes silently.
 */
export async function startRedis(): Promise<TestRedis | { skipped: string }> {
  if (spawnSync('redis-server', ['--version']).status === 0) {
    const port = await freePort();
    let proc = await launch(port);
    return {
      url: `redis://127.0.0.1:${port}`,
      async restart() {
        await kill(proc);
        proc = await launch(port);
      },
      stop: () => kill(proc),
    };
  }
  if (await answers(6379)) return { url: 'redis://127.0.0.1:6379', stop: async () => {} };
  return { skipped: 'no redis-server on PATH and nothing answers on 127.0.0.1:6379: the Redis bus tests are SKIPPED' };
}

async function launch(port: number): Promise<ChildProcess> {
  const proc = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: ['ignore', 'pipe', 'pipe'] });
  await new Promise<void>((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => reject(new Error(`redis-server did not start in 10 s: ${out}`)), 10_000);
    proc.stdout?.on('data', (d) => {
      out += d;
      if (out.includes('Ready to accept connections')) {
        clearTimeout(timer);
        resolve();
      }
    });
    proc.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`redis-server exited (${code}): ${out}`));
    });
  });
  proc.stdout?.resume();
  return proc;
}

function kill(proc: ChildProcess): Promise<void> {
  if (proc.exitCode !== null || proc.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    proc.once('exit', () => resolve());
    proc.kill('SIGKILL');
  });
}

function answers(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect(port, '127.0.0.1');
    s.setTimeout(500);
    s.on('connect', () => {
      s.end('PING\r\n');
      s.once('data', (d) => {
        s.destroy();
        resolve(d.toString().startsWith('+PONG'));
      });
    });
    s.on('error', () => resolve(false));
    s.on('timeout', () => {
      s.destroy();
      resolve(false);
    });
  });
}
