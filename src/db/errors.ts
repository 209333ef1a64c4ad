import Database from 'better-sqlite3';
import pg from 'pg';

/** What a storage failure says: SQLite's code (SQLITE_FULL, SQLITE_IOERR, ...) or the file system's (ENOSPC, EIO, ...). */
export interface StorageFailure {
  code: string;
  message: string;
}

/** File-system failures of the files kept beside the database (images, outputs). */
const FILE_STORAGE_CODES = new Set(['ENOSPC', 'EDQUOT', 'EIO', 'EROFS']);
/** A Postgres that cannot be reached (DATABASE_URL): the socket errors its pool passes on as they are. */
const PG_SOCKET_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'EHOSTUNREACH', 'ENETUNREACH', 'EAI_AGAIN']);
/**
 * SQLSTATE classes of a Postgres that failed as a store rather than a query: connection exceptions
 * (08), insufficient resources (53: disk full, out of memory, too many connections), operator
 * intervention (57P01-57P05: shutdown, restart, cannot connect now), system errors (58), and a
 * read-only transaction (25006, a standby after failover).
 */
const isPgStoreFailure = (code: string) => /^(08|53|58|57P0)/.test(code) || code === '25006';

/**
 * A failure of the store itself (disk full, I/O error, read-only or locked file, corruption), as
 * opposed to a bug in a query (a constraint violated, say). Such a failure says nothing about the
 * request that met it: the right answer is "try again later", and the poller pauses until writes
 * work. Drizzle wraps driver errors (DrizzleQueryError), so the cause chain is searched.
 */
export function isStorageError(err: unknown): boolean {
  return storageErrorOf(err) !== undefined;
}

/** The storage failure behind `err`, if the store itself failed. */
export function storageErrorOf(err: unknown): StorageFailure | undefined {
  for (let e = err, depth = 0; e && depth < 5; e = (e as { cause?: unknown }).cause, depth++) {
    // Upstream's and media downloads' errors (they carry `transient`) are never the store's, even
    // when a socket error like ECONNREFUSED is their cause.
    if (typeof (e as { transient?: unknown }).transient === 'boolean') return undefined;
    if (e instanceof Database.SqliteError) return e.code.startsWith('SQLITE_CONSTRAINT') ? undefined : e;
    if (e instanceof pg.DatabaseError) return e.code && isPgStoreFailure(e.code) ? { code: e.code, message: e.message } : undefined;
    const message = (e as Error).message ?? '';
    // node-postgres's own words for a connection that died under a query.
    if (/^Connection terminated/.test(message)) return { code: 'PG_CONNECTION', message };
    const code = (e as NodeJS.ErrnoException).code;
    if (code && (FILE_STORAGE_CODES.has(code) || PG_SOCKET_CODES.has(code))) return { code, message };
  }
  return undefined;
}

/**
 * `target` with every method wrapped so that a storage failure it throws or rejects with is told to
 * `report` (and then thrown on as it was). The resolvers' writes go through such wrappers, so a
 * createVideo refused on a full disk pauses the poller and turns /readyz to 503 at once, instead of
 * only when the poller's own next write fails.
 */
export function reportStorageFailures<T extends object>(target: T, report: (err: unknown) => void): T {
  const tell = (err: unknown): never => {
    if (isStorageError(err)) report(err);
    throw err;
  };
  return new Proxy(target, {
    get(obj, key, receiver) {
      const value = Reflect.get(obj, key, receiver);
      if (typeof value !== 'function') return value;
      return (...args: unknown[]) => {
        try {
          const result = value.apply(obj, args);
          return result instanceof Promise ? result.catch(tell) : result;
        } catch (err) {
          return tell(err);
        }
      };
    },
  });
}
