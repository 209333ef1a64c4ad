import Database from 'better-sqlite3';

/**
 * A failure of the store itself (disk full, I/O error, read-only or locked file, corruption), as
 * opposed to a bug in a query (a constraint violated, say). Such a failure says nothing about the
 * request that met it: the right answer is "try again later", and the poller pauses until writes work.
 */
export function isStorageError(err: unknown): err is InstanceType<typeof Database.SqliteError> {
  return err instanceof Database.SqliteError && !err.code.startsWith('SQLITE_CONSTRAINT');
}
