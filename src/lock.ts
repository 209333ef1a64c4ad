import { createHash } from 'node:crypto';
import { realpathSync, rmSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';

export class InstanceLockError extends Error {}

export interface InstanceLock {
  release(): Promise<void>;
}

/**
 * One gateway per DATA_DIR: two pollers on one database would both submit (and both be billed).
 * The lock is a listening Unix socket, not a lock on the database: CLI commands open the same
 * SQLite file while the server runs. The kernel frees the socket when the process dies, even by
 * SIGKILL, so a crash never leaves a stale lock behind. On Linux it lives in the abstract
 * namespace (no file, no path length limit), named after the directory's real path; elsewhere it
 * is a socket file in DATA_DIR, and a file nobody answers on is a leftover, removed and retaken.
 */
export async function acquireInstanceLock(dataDir: string): Promise<InstanceLock> {
  const real = realpathSync(dataDir);
  const abstract = process.platform === 'linux';
  const address = abstract ? `\0cinegraph-instance-${createHash('sha256').update(real).digest('hex').slice(0, 32)}` : join(real, '.instance.sock');
  const server = net.createServer((socket) => socket.end(`${process.pid}\n`));
  try {
    await listen(server, address);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EADDRINUSE') throw err;
    const holder = await whoHolds(address);
    if (holder !== undefined || abstract) {
      throw new InstanceLockError(
        `another cinegraph server${holder ? ` (pid ${holder})` : ''} already uses DATA_DIR ${real}; ` +
          'run one server per DATA_DIR (CLI commands may share it)',
      );
    }
    rmSync(address, { force: true }); // a socket file left by a process that died
    await listen(server, address);
  }
  server.unref();
  return { release: () => new Promise<void>((resolve) => server.close(() => resolve())) };
}

function listen(server: net.Server, address: string): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(address, () => {
      server.off('error', reject);
      resolve();
    });
  });
}

/** The pid the lock's holder answers with, or undefined when nobody answers. */
function whoHolds(address: string): Promise<string | undefined> {
  return new Promise((resolve) => {
    const socket = net.connect(address);
    let connected = false;
    let answer = '';
    // Someone accepted the connection: the lock is held, even if its holder is too busy to answer.
    socket.on('connect', () => (connected = true));
    socket.setTimeout(2000, () => socket.destroy());
    socket.on('data', (d) => (answer += d));
    socket.on('error', () => undefined);
    socket.on('close', () => resolve(connected ? answer.trim() || 'unknown' : undefined));
  });
}
