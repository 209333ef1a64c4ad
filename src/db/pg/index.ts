import type { AdmissionLimits } from '../../poller/admission.js';
import type { Recorder } from '../../poller/record.js';
import type { PredictionPubSub } from '../../pubsub.js';
import type { PredictionInsert } from '../predictions.js';
import type { PredictionRow } from '../schema.js';
import type { Creator, Idempotency, Leases, Predictions, Queue, SharedPause } from '../store.js';
import type { PgDb } from './client.js';
import { PgCreator } from './creator.js';
import { PgIdempotency } from './idempotency.js';
import { PgLeases } from './leases.js';
import { PgSharedPause } from './pause.js';
import { PgPredictions } from './predictions.js';
import { PgQueue } from './queue.js';
import { createPgRecorder, type PgRecordHook } from './recorder.js';

export interface PgStoreOptions {
  /** Unique per process (e.g. host, pid and a random part): what this instance's leases say. */
  instanceId: string;
  /** LEASE_MS: how long a claim (or a fenced write) holds a row. */
  leaseMs: number;
  limits: AdmissionLimits;
  pubsub: PredictionPubSub;
  now: () => Date;
  /** Runs inside every recorded change's transaction: the webhook outbox (webhooks/outgoing.ts, createPgOutgoing). */
  hook?: PgRecordHook;
  /** Announces each recorded change to the other instances, after its commit and before the local publish (see PgRecorderOptions). */
  announce?: (row: PredictionRow) => void;
}

export interface PgStore {
  predictions: Predictions;
  queue: Queue;
  idempotency: Idempotency;
  creator: Creator;
  /** For the poller's steps: fenced by this instance's lease, and renewing it. */
  recorder: Recorder;
  /**
   * For writes from any instance that must win over whoever holds the row: a cancel (by a caller or
   * a deadline). Not fenced: a cancel made while another instance holds the lease still happens, and
   * the holder's later writes change nothing, since a final row fails every write's live-status guard.
   */
  lifecycleRecorder: Recorder;
  leases: Leases;
  pause: SharedPause;
  /** Inserts a row directly, as PredictionStore.insert does (tests). */
  insert(row: PredictionInsert): Promise<PredictionRow>;
}

/** The Postgres store for N gateway instances on one database (issue 16). */
export function createPgStore(db: PgDb, o: PgStoreOptions): PgStore {
  const predictions = new PgPredictions(db);
  const idempotency = new PgIdempotency(db);
  return {
    predictions,
    queue: new PgQueue(db),
    idempotency,
    creator: new PgCreator(db, predictions, idempotency),
    recorder: createPgRecorder(db, predictions, o.pubsub, { now: o.now, hook: o.hook, announce: o.announce, fence: { instanceId: o.instanceId, leaseMs: o.leaseMs } }),
    lifecycleRecorder: createPgRecorder(db, predictions, o.pubsub, { now: o.now, hook: o.hook, announce: o.announce }),
    leases: new PgLeases(db, { instanceId: o.instanceId, leaseMs: o.leaseMs, limits: o.limits }),
    pause: new PgSharedPause(db),
    insert: (row) => predictions.insert(row),
  };
}
