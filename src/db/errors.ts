import Database from 'better-sqlite3';

type SqliteError = InstanceType<typeof Database.SqliteError>;

/**
 * A failure of the store itself (disk full, I/O error, read-only or locked file, corruption), as
 * opposed to a bug in a query (a constraint violated, say). Such a failure says nothing about the
 * request that met it: the right answer is "try again later", and the poller pauses until writes
 * work. Drizzle wraps driver errors (DrizzleQueryError), so the cause chain is searched.
 */
export function isStorageError(err: unknown): boolean {
  return storageErrorOf(err) !== undefined;
}

/** The SQLite error behind `err`, if the store itself failed. */
export function storageErrorOf(err: unknown): SqliteError | undefined {
  for (let e = err, depth = 0; e && depth < 5; e = (e as { cause?: unknown }).cause, depth++) {
    if (e instanceof Database.SqliteError) return e.code.startsWith('SQLITE_CONSTRAINT') ? undefined : e;
  }
  return undefined;
}
