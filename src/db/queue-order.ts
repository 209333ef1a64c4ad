import { OrderedSet } from '@js-sdsl/ordered-set';
import type Database from 'better-sqlite3';

/** A queued prediction's place in the fair order (db/queue.ts): by turn, then by seq. */
interface Key {
  turn: number;
  seq: number;
}
const byTurnThenSeq = (a: Key, b: Key) => a.turn - b.turn || a.seq - b.seq;

/**
 * Past this many rows changed since the last look, a rebuild (one ordered read of the partial index)
 * is cheaper than looking each up, and the set of changed rows stays small.
 */
const MAX_CHANGED = 10_000;

/** The trigger's callback; a name of our own, so it cannot clash with anything registered on the connection. */
const TOUCHED = 'cinegraph_queue_touched';

/** What `position` answers when it cannot tell right now: the caller asks SQL instead. */
export const ASK_SQL = null;

/**
 * The queued predictions' (turn, seq) keys in an order-statistics tree, so a prediction's place in
 * the queue is a rank, O(log n), where SQL's b-trees can only count the rows before it, O(place):
 * 3.6 ms at 100,000 queued (BENCHMARKS.md). The tree is js-sdsl's red-black OrderedSet with subtree
 * sizes (`enableIndex`), whose iterator's `index` is the rank.
 *
 * Kept in step with the database, not with the stores' methods, so that no write can slip past it:
 * - Writes on this connection, whatever issues them (the stores, retention's DELETE, raw SQL in a
 *   tool or a test), fire TEMP triggers that note the row's seq. The notes are only hints: on the
 *   next turn of the event loop, or at the next `position` if sooner, each noted row is read as it
 *   is now and its key moved in or out. A write rolled back,
 *   or a statement that failed at its commit, therefore leaves nothing wrong behind: the row reads
 *   as it really is. Inside an open transaction nothing is applied (it may still roll back): SQL
 *   answers.
 * - Writes by any other connection (another process on the same file) fire no trigger here but move
 *   `PRAGMA data_version`, read before and after each answer: a change rebuilds the tree from the
 *   database; a change during an answer makes SQL answer it.
 * - Opening builds it from the database (a restart loses nothing), and so does any doubt: a queued
 *   row missing from the tree, or too many changes to look up one by one.
 *
 * One per connection (see `QueueOrder.of`): a single set of triggers and a single tree, however many
 * QueueStores wrap the connection.
 */
export class QueueOrder {
  private static readonly byConnection = new WeakMap<Database.Database, QueueOrder>();

  /** The connection's queue order; `queued` is the SQL condition of a queued row (db/queue.ts). */
  static of(c: Database.Database, queued: string): QueueOrder {
    let order = QueueOrder.byConnection.get(c);
    if (!order) {
      order = new QueueOrder(c, queued);
      QueueOrder.byConnection.set(c, order);
    }
    return order;
  }

  private readonly tree = new OrderedSet<Key>([], byTurnThenSeq, true);
  /** The tree's keys by seq: a row leaving the queue (or deleted) is found by seq alone. */
  private readonly members = new Map<number, Key>();
  /** Seqs of rows written on this connection since they were last looked at. */
  private readonly changed = new Set<number>();
  /** Whether an application of `changed` is scheduled for the next turn of the event loop. */
  private applying = false;
  /** Set when the tree cannot be trusted and must be rebuilt before the next answer. */
  private stale = true;
  /** `PRAGMA data_version` when the tree was built: it moves when another connection commits. */
  private version = -1;
  private readonly versionStmt;
  private readonly allStmt;
  private readonly bySeqStmt;
  private readonly byIdStmt;

  private constructor(
    private readonly c: Database.Database,
    queued: string,
  ) {
    this.versionStmt = c.prepare('PRAGMA data_version').pluck();
    // Rows with a NULL turn are left out, as the SQL count leaves them out (a row-value comparison
    // with a NULL is never true); a NULL turn only comes from a write outside the store.
    this.allStmt = c.prepare(`SELECT queue_turn AS turn, seq FROM predictions INDEXED BY predictions_queue WHERE ${queued} AND queue_turn IS NOT NULL ORDER BY queue_turn, seq`);
    this.bySeqStmt = c.prepare(`SELECT queue_turn FROM predictions WHERE seq = ? AND ${queued} AND queue_turn IS NOT NULL`).pluck();
    this.byIdStmt = c.prepare(`SELECT queue_turn AS turn, seq FROM predictions WHERE id = ? AND ${queued}`);
    // Only notes a seq: a callback inside a statement must not touch the connection.
    c.function(TOUCHED, { deterministic: false }, (seq) => {
      this.touched(seq as number);
      return null;
    });
    // Filters that are wider than the queue, never narrower: a queued row is CREATED, and only these
    // columns decide whether a row is queued and where (the condition is QUEUED's, in db/queue.ts).
    c.exec(`
      CREATE TEMP TRIGGER IF NOT EXISTS cinegraph_queue_insert AFTER INSERT ON main.predictions
        WHEN new.status = 'CREATED' BEGIN SELECT ${TOUCHED}(new.seq); END;
      CREATE TEMP TRIGGER IF NOT EXISTS cinegraph_queue_update AFTER UPDATE OF status, upstream_id, submit_started_at, queue_turn, seq ON main.predictions
        WHEN old.status = 'CREATED' OR new.status = 'CREATED' BEGIN SELECT ${TOUCHED}(old.seq), ${TOUCHED}(new.seq); END;
      CREATE TEMP TRIGGER IF NOT EXISTS cinegraph_queue_delete AFTER DELETE ON main.predictions
        WHEN old.status = 'CREATED' BEGIN SELECT ${TOUCHED}(old.seq); END;
    `);
    this.rebuild();
  }

  /** How many predictions the tree holds (for tests and benchmarks). */
  get size(): number {
    return this.tree.size();
  }

  /**
   * 1-based place in the queue, as `QueueStore.positionBySql` counts it; undefined when the
   * prediction is not queued; ASK_SQL when this cannot be told right now (inside a transaction, or
   * another connection committed meanwhile).
   */
  position(id: string): number | undefined | typeof ASK_SQL {
    if (this.c.inTransaction) return ASK_SQL;
    const version = this.versionStmt.get() as number;
    if (this.stale || version !== this.version) this.rebuild();
    else this.applyChanges();
    const row = this.byIdStmt.get(id) as { turn: number | null; seq: number } | undefined;
    let place: number | undefined | typeof ASK_SQL;
    if (!row) place = undefined;
    else if (row.turn === null) place = 1; // nothing counts before it in SQL either
    else {
      const key = this.members.get(row.seq);
      if (key?.turn === row.turn) place = this.tree.find(key).index + 1;
      else {
        // Queued in the database but not here: some write went unseen. Never answer from a tree
        // that missed one; rebuild at the next call.
        this.stale = true;
        place = ASK_SQL;
      }
    }
    return (this.versionStmt.get() as number) === version ? place : ASK_SQL;
  }

  private touched(seq: number): void {
    if (this.stale) return;
    this.changed.add(seq);
    if (this.changed.size > MAX_CHANGED) {
      this.stale = true;
      this.changed.clear();
    } else if (!this.applying) {
      // Applied soon after the write as well as at the next answer: a queue that changes for hours
      // with nobody asking would otherwise pile up changes until a rebuild (a pause of hundreds of
      // ms at 100,000 queued) instead of a few µs each.
      this.applying = true;
      setImmediate(() => this.applySoon()).unref();
    }
  }

  /** Between statements, outside any transaction, with no other connection's commit unseen; else the next answer does it. */
  private applySoon(): void {
    this.applying = false;
    if (!this.c.open || this.c.inTransaction || this.stale) return;
    try {
      if ((this.versionStmt.get() as number) === this.version) this.applyChanges();
    } catch {
      // Nobody to tell here: the next answer rebuilds, and meets (and throws) the same error if it lasts.
      this.stale = true;
    }
  }

  /** Moves each changed row's key in or out of the tree as the row is now. */
  private applyChanges(): void {
    for (const seq of this.changed) {
      const turn = this.bySeqStmt.get(seq) as number | undefined;
      const key = this.members.get(seq);
      if (key?.turn === turn) continue;
      if (key) {
        this.tree.eraseElementByKey(key);
        this.members.delete(seq);
      }
      if (turn !== undefined) this.add({ turn, seq });
    }
    this.changed.clear();
  }

  /** Reads every queued key afresh, in order. The version is read first: a commit after it is seen next time. */
  private rebuild(): void {
    this.version = this.versionStmt.get() as number;
    this.tree.clear();
    this.members.clear();
    this.changed.clear();
    for (const key of this.allStmt.iterate() as Iterable<Key>) this.add(key);
    this.stale = false;
  }

  private add(key: Key): void {
    this.tree.insert(key);
    this.members.set(key.seq, key);
  }
}
