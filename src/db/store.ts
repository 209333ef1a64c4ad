import { type Committer, eachOnItsOwn } from './group-commit.js';
import type { IdempotencyStore, Remembered } from './idempotency.js';
import type { ListOptions, PredictionInsert, PredictionStore } from './predictions.js';
import type { Estimate, QueueStore } from './queue.js';
import type { PredictionRow } from './schema.js';

/**
 * The store as the poller and the resolvers see it: every method async, so one interface can be
 * served by SQLite (better-sqlite3, synchronous underneath: each call resolves at once) and by
 * Postgres (issue 16). Writes are not here: a visible change goes through the Recorder
 * (poller/record.ts, write then publish), a new prediction through the Creator below; each is one
 * transaction of its backend, so no caller ever holds a transaction open across an await.
 */
export interface Predictions {
  findById(id: string): Promise<PredictionRow | undefined>;
  /** The prediction that owns this upstream task, if any. */
  findByUpstreamId(upstreamId: string): Promise<PredictionRow | undefined>;
  /** The image a prediction was created with, until upstream has accepted it. */
  imageOf(id: string): Promise<string | null>;
  list(options: ListOptions): Promise<PredictionRow[]>;
  /** This owner's predictions not yet final (the in-flight quota). */
  countUnfinished(owner: string | null): Promise<number>;
  /** Ids of started rows whose next poll has come, earliest first. */
  due(now: Date, limit: number): Promise<string[]>;
  /** The earliest scheduled poll of a started row not in `busy`. */
  nextDueAt(busy: ReadonlySet<string> | ReadonlyMap<string, unknown>): Promise<Date | undefined>;
  /** Pulls a live prediction's next poll forward to `now`. */
  makeDue(id: string, now: Date): Promise<void>;
  /** Whether the store takes a write now; throws what the write throws. */
  probeWrite(): Promise<void>;
}

/** The admission queue's view of the predictions (see db/queue.ts for what each means). */
export interface Queue {
  due(now: Date, limit: number, busy?: Iterable<string>): Promise<string[]>;
  position(id: string): Promise<number | undefined>;
  nextDue(busy?: Iterable<string>): Promise<Date | undefined>;
  upstreamSubmittedAt(limit: number): Promise<Date[]>;
  upstreamInFlight(except?: Iterable<string>): Promise<number>;
  submittedSince(since: Date, except?: Iterable<string>): Promise<number>;
  oldestSubmissionSince(since: Date): Promise<Date | undefined>;
  pastDeadline(now: Date, limit: number): Promise<string[]>;
  nextDeadline(): Promise<Date | undefined>;
  recentRunMs(n?: number): Promise<number | undefined>;
}

export interface Idempotency {
  /** What this owner's key was last used for within the TTL, if anything. */
  find(owner: string | null, key: string, now: Date): Promise<Remembered | undefined>;
}

/** What createVideo asks the store to do in one transaction. */
export interface CreateRequest {
  row: PredictionInsert & { owner: string | null };
  /** Replays an earlier creation under this key (same input) instead of creating; refuses a different input. */
  idempotency?: { key: string; inputHash: string };
  /** Refuses when the owner already has this many unfinished predictions; undefined: no limit. */
  maxInFlight?: number;
  /**
   * Work that must commit with the new row (its outgoing webhook subscription), handed the backend's
   * transaction, which only work built for the same backend can use: on SQLite `undefined` (better-
   * sqlite3's transaction is implicit: the call runs inside it, synchronously, and must not return a
   * promise), on Postgres the Drizzle transaction (PgTx), awaited. A function it resolves to runs
   * after the commit.
   */
  withRow?: (row: PredictionRow, tx: unknown) => void | Promise<(() => void) | undefined>;
}

export type CreateOutcome =
  | { kind: 'created'; row: PredictionRow }
  /** An earlier call with the same key and input created this one. */
  | { kind: 'replayed'; row: PredictionRow }
  /** The key was used with a different input within the TTL. */
  | { kind: 'conflict' }
  | { kind: 'tooManyInFlight'; unfinished: number; max: number };

export interface Creator {
  /**
   * Checks the idempotency key and the in-flight quota again and inserts, all in one transaction:
   * a twin request that landed meanwhile is replayed, not created twice.
   */
  create(request: CreateRequest, now: Date): Promise<CreateOutcome>;
}

/** Queue place and estimates, as the schema's Prediction fields read them. */
export type { Estimate };

/** Each method of `T` named in `keys`, returning a promise of what it returned (and rejecting with what it threw). */
type Promised<T, K extends keyof T> = { [P in K]: T[P] extends (...args: infer A) => infer R ? (...args: A) => Promise<R> : never };

function promised<T extends object, K extends keyof T & string>(target: T, keys: readonly K[]): Promised<T, K> {
  const out: Record<string, unknown> = {};
  for (const key of keys) {
    out[key] = (...args: unknown[]) => {
      try {
        // Looked up at each call, not bound once: what the store is now (tests wrap its methods) answers.
        return Promise.resolve((target[key] as (...args: unknown[]) => unknown).apply(target, args));
      } catch (err) {
        return Promise.reject(err);
      }
    };
  }
  return out as Promised<T, K>;
}

/** The SQLite predictions behind the async interface. */
export function sqlitePredictions(store: PredictionStore): Predictions {
  return promised(store, ['findById', 'findByUpstreamId', 'imageOf', 'list', 'countUnfinished', 'due', 'nextDueAt', 'makeDue', 'probeWrite']);
}

export function sqliteQueue(queue: QueueStore): Queue {
  return promised(queue, [
    'due',
    'position',
    'nextDue',
    'upstreamSubmittedAt',
    'upstreamInFlight',
    'submittedSince',
    'oldestSubmissionSince',
    'pastDeadline',
    'nextDeadline',
    'recentRunMs',
  ]);
}

export function sqliteIdempotency(idempotency: IdempotencyStore): Idempotency {
  return promised(idempotency, ['find']);
}

/**
 * createVideo's transaction on SQLite: better-sqlite3 is synchronous, so nothing else in the
 * process interleaves between the checks and the insert they guard.
 */
export function sqliteCreator(store: PredictionStore, idempotency: IdempotencyStore, commit: Committer = eachOnItsOwn): Creator {
  const create = (request: CreateRequest, now: Date): CreateOutcome =>
    idempotency.atomically((): CreateOutcome => {
      const owner = request.row.owner;
      if (request.idempotency) {
        const earlier = idempotency.find(owner, request.idempotency.key, now);
        if (earlier && earlier.inputHash !== request.idempotency.inputHash) return { kind: 'conflict' };
        const row = earlier && store.findById(earlier.predictionId);
        if (row && row.owner === owner) return { kind: 'replayed', row };
      }
      if (request.maxInFlight !== undefined) {
        const unfinished = store.countUnfinished(owner);
        if (unfinished >= request.maxInFlight) return { kind: 'tooManyInFlight', unfinished, max: request.maxInFlight };
      }
      const row = store.insert(request.row);
      // Synchronous, inside the transaction: a promise here would run after the commit, outside it.
      if (request.withRow?.(row, undefined) instanceof Promise) throw new Error('withRow must be synchronous on SQLite');
      if (request.idempotency) idempotency.remember(owner, request.idempotency.key, { predictionId: row.id, inputHash: request.idempotency.inputHash }, now);
      return { kind: 'created', row };
    });
  // The app group-commits them: the creations of one event-loop turn share a commit (db/group-commit.ts).
  return { create: commit(create) };
}

/**
 * Work shared between N gateway instances on one Postgres (issue 16); SQLite's single process (the
 * DATA_DIR lock) needs none. A claim leases rows to this instance until `now + LEASE_MS`
 * (`locked_by`, `locked_until`): no other instance takes them before the lease ends, and every
 * write of the step is fenced by it (see the Postgres recorder), so an instance that lost its
 * lease (stalled past it, or SIGKILLed) writes nothing; another takes the work over once it expires.
 */
export interface Leases {
  /**
   * Started predictions (polls, reconciliations) due now and not leased by a live lease: leased to
   * this instance. `busy`: rows this instance is still stepping, never claimed again meanwhile (a
   * claim would make an old step's fenced writes valid again, after another instance took the row).
   */
  claimDue(now: Date, limit: number, busy?: readonly string[]): Promise<string[]>;
  /**
   * Queued predictions this instance may submit now, in the queue's fair order, leased to it. The
   * account's limits (`UPSTREAM_MAX_CONCURRENT`, `UPSTREAM_MAX_PER_MINUTE`) are judged across every
   * instance inside one transaction that serializes such claims, counting rows leased for
   * submission by any instance as in flight: N instances together never exceed the tier.
   */
  claimQueued(now: Date, limit: number, busy?: readonly string[]): Promise<string[]>;
  /** Extends this instance's leases on rows it is still stepping (a long upload or download), so none runs out mid-step. */
  renew(ids: readonly string[], now: Date): Promise<void>;
  /** Ends this instance's leases (all, or these), so another instance may take them at once (SIGTERM). */
  release(ids?: readonly string[]): Promise<void>;
}

/**
 * The account-wide pause (a 429's Retry-After, an account error) every instance must honour
 * (Postgres: the `account_state` row). Extended, never shortened, by a hold.
 */
export interface SharedPause {
  hold(until: Date, reason: string): Promise<void>;
  /** The pause in force at `now`, if any. */
  current(now: Date): Promise<{ until: Date; reason: string } | undefined>;
}
