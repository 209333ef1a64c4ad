import { readFileSync, realpathSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';

export class InstanceLockError extends Error {}

export interface InstanceLock {
  release(): Promise<void>;
}

/**
 * One gateway per DATA_DIR: two pollers on one database would both submit (and both be billed).
 * The lock is an exclusive SQLite lock on its own file, DATA_DIR/instance.lock, held for the
 * process's life (locking_mode=EXCLUSIVE keeps it after the first write): an OS file lock on the
 * file itself, so it holds across containers, network namespaces and mount paths that share the
 * volume (an abstract socket, tried first, did not), and the kernel frees it when the process dies,
 * even by SIGKILL. It is not a lock on the database: CLI commands open cinegraph.sqlite as usual.
 */
export async function acquireInstanceLock(dataDir: string): Promise<InstanceLock> {
  const real = realpathSync(dataDir);
  const db = new Database(join(real, 'instance.lock'), { timeout: 0 });
  const pidFile = join(real, 'instance.pid');
  try {
    db.pragma('locking_mode = EXCLUSIVE');
    db.exec('BEGIN EXCLUSIVE');
    db.exec('CREATE TABLE IF NOT EXISTS holder (pid INTEGER NOT NULL, since INTEGER NOT NULL)');
    db.prepare('DELETE FROM holder').run();
    db.prepare('INSERT INTO holder (pid, since) VALUES (?, ?)').run(process.pid, Date.now());
    db.exec('COMMIT');
  } catch (err) {
    db.close();
    if ((err as { code?: string }).code !== 'SQLITE_BUSY') throw err;
    let holder = '';
    try {
      holder = ` (pid ${Number.parseInt(readFileSync(pidFile, 'utf8'), 10)})`;
    } catch {}
    throw new InstanceLockError(`another cinegraph server${holder} already uses DATA_DIR ${real}; run one server per DATA_DIR (CLI commands may share it)`);
  }
  // For the message a second server prints; the lock itself is the database's.
  writeFileSync(pidFile, `${process.pid}\n`);
  return {
    release: async () => {
      if (db.open) db.close();
    },
  };
}
