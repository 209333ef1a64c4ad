import type Database from 'better-sqlite3';
import { isStorageError } from './errors.js';
import { transact } from './transact.js';

/**
 * Group commit: the calls made in one turn of the event loop run in one SQLite transaction, each in
 * a savepoint of its own, and every caller is answered after the commit.
 *
 * A transaction costs far more than an insert (BEGIN, the WAL frames and the commit record, the write
 * lock): under a burst of createVideo calls, one commit per request was most of the store's share
 * of a request (BENCHMARKS.md, issue 18). The guarantees stay those of one transaction per call:
 * - a caller is told "done" only after the commit that holds its write (a failed commit rejects
 *   every caller of the batch, and none of their writes exists);
 * - a call that throws (a constraint, a refusal) rolls back its own savepoint only: the others of
 *   the batch go on and commit;
 * - a storage failure (disk full, I/O error) ends the whole batch at once: SQLite may already have
 *   rolled the transaction back by itself, and a call run after that would commit on its own,
 *   outside the batch. Every caller of the batch is rejected with it.
 * Calls run in the order they were made, each seeing the writes of those before it (so a twin
 * idempotent request, or the in-flight quota, is judged as if they had run one by one).
 */
type Call = { run: () => unknown; resolve: (r: unknown) => void; reject: (e: unknown) => void };

/** Calls waiting for their connection's next batch; one queue per connection, whichever function they came through. */
const queues = new WeakMap<Database.Database, Call[]>();

function flush(sqlite: Database.Database): void {
  const batch = queues.get(sqlite) ?? [];
  queues.delete(sqlite);
  const outcomes: ({ ok: true; value: unknown } | { ok: false; error: unknown })[] = [];
  try {
    transact(sqlite, () => {
      for (const call of batch) {
        try {
          // Nested: it runs in a savepoint, released on return, rolled back on throw.
          outcomes.push({ ok: true, value: transact(sqlite, call.run) });
        } catch (error) {
          if (isStorageError(error)) throw error;
          outcomes.push({ ok: false, error });
        }
      }
    });
  } catch (error) {
    for (const call of batch) call.reject(error);
    return;
  }
  batch.forEach((call, i) => {
    const outcome = outcomes[i] as (typeof outcomes)[number];
    if (outcome.ok) call.resolve(outcome.value);
    else call.reject(outcome.error);
  });
}

/**
 * How synchronous writes are committed: each on its own, or those of one event-loop turn together.
 * Either way a write's promise settles only once it has committed, or with the error that kept it
 * from committing.
 */
export type Committer = <A extends unknown[], R>(write: (...args: A) => R) => (...args: A) => Promise<R>;

/** Each write in its own transaction, as it runs. */
export const eachOnItsOwn: Committer =
  (write) =>
  async (...args) =>
    write(...args);

/** Every write wrapped by it group-committed on `sqlite`. */
export const groupCommitter =
  (sqlite: Database.Database): Committer =>
  (write) =>
    groupCommit(sqlite, write);

/**
 * `run`, group-committed on `sqlite`: every function wrapped for one connection shares its batches
 * (a turn's createVideo inserts and the poller's writes commit together).
 */
export function groupCommit<A extends unknown[], R>(sqlite: Database.Database, run: (...args: A) => R): (...args: A) => Promise<R> {
  return (...args: A) =>
    new Promise<R>((resolve, reject) => {
      let queue = queues.get(sqlite);
      if (!queue) {
        queue = [];
        queues.set(sqlite, queue);
        setImmediate(flush, sqlite);
      }
      queue.push({ run: () => run(...args), resolve: resolve as (r: unknown) => void, reject });
    });
}
