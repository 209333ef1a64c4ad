import Database from 'better-sqlite3';

/** What a storage failure says: SQLite's code (SQLITE_FULL, SQLITE_IOERR, ...) or the file system's (ENOSPC, EIO, ...). */
export interface StorageFailure {
  code: string;
  message: string;
}

/** File-system failures of the files kept beside the database (images, outputs). */
const FILE_STORAGE_CODES = new Set(['ENOSPC', 'EDQUOT', 'EIO', 'EROFS']);

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
    if (e instanceof Database.SqliteError) return e.code.startsWith('SQLITE_CONSTRAINT') ? undefined : e;
    const code = (e as NodeJS.ErrnoException).code;
    if (code && FILE_STORAGE_CODES.has(code)) return { code, message: (e as Error).message };
  }
  return undefined;
}
