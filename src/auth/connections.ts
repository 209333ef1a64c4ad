import type { Keys } from './keys.js';

/** Closes one long-lived connection (a WebSocket, an SSE stream) whose key no longer holds. */
type Close = () => void;

/**
 * The long-lived connections of each key, so that a revocation (made by the CLI in another
 * process) can close them, and so that a key's concurrent sockets can be counted.
 * Open-mode connections are kept under `null` and closed once the first key is created.
 */
export class Connections {
  private readonly byOwner = new Map<string | null, Set<Close>>();

  /** @returns the function that forgets the connection (call it when it closes). */
  track(owner: string | null, close: Close): () => void {
    let set = this.byOwner.get(owner);
    if (!set) {
      set = new Set();
      this.byOwner.set(owner, set);
    }
    set.add(close);
    return () => {
      set.delete(close);
      if (!set.size && this.byOwner.get(owner) === set) this.byOwner.delete(owner);
    };
  }

  count(owner: string | null): number {
    return this.byOwner.get(owner)?.size ?? 0;
  }

  /** Every open connection, all owners together (for metrics). */
  total(): number {
    let n = 0;
    for (const set of this.byOwner.values()) n += set.size;
    return n;
  }

  /** Closes every connection of these owners. */
  closeOwners(owners: Iterable<string | null>): number {
    let closed = 0;
    for (const owner of owners) {
      for (const close of [...(this.byOwner.get(owner) ?? [])]) {
        close();
        closed++;
      }
    }
    return closed;
  }

  /** Owners with open connections. */
  owners(): (string | null)[] {
    return [...this.byOwner.keys()];
  }
}

export interface RevocationWatchOptions {
  keys: Keys;
  connections: Connections;
  /** How often `changeVersion()` is read (SQLite: one PRAGMA; Postgres: a counter). @default 200 */
  intervalMs?: number;
  onClosed?: (owners: (string | null)[], count: number) => void;
}

/**
 * Closes the connections of revoked keys within `intervalMs` of the keys changing. Each tick costs one
 * `changeVersion()` (a PRAGMA on SQLite); the keys are only re-read when it moved.
 * @returns the function that stops watching.
 */
export function watchRevocations({ keys, connections, intervalMs = 200, onClosed }: RevocationWatchOptions): () => void {
  let seen = keys.changeVersion();
  const check = () => {
    const version = keys.changeVersion();
    if (version === seen) return;
    seen = version;
    const owners = connections.owners();
    const ids = owners.filter((o): o is string => o !== null);
    const gone: (string | null)[] = keys.revokedAmong(ids);
    if (owners.includes(null) && !keys.isEmpty()) gone.push(null);
    if (gone.length) onClosed?.(gone, connections.closeOwners(gone));
  };
  const timer = setInterval(check, intervalMs);
  timer.unref();
  return () => clearInterval(timer);
}
