import { EventEmitter } from 'node:events';
import { systemClock, type Clock } from '../clock.js';
import { isStorageError, storageErrorOf } from '../db/errors.js';
import type { Leases, Predictions, Queue, SharedPause } from '../db/store.js';
import { terminalStatuses, type PredictionRow } from '../db/schema.js';
import type { Admission } from './admission.js';
import type { Logger } from '../log.js';
import type { ImageStore } from '../storage/images.js';
import type { MediaStore } from '../storage/media.js';
import type { WaveSpeedClient } from '../upstream/wavespeed.js';
import type { PollerEvents } from './events.js';
import { Pauses, type Pause, type PauseKind } from './pauses.js';
import type { Recorder } from './record.js';
import type { PollSchedule } from './schedule.js';
import { findSubmittedTask } from './reconcile.js';
import { PredictionSteps } from './steps.js';

export type { PollerEvents } from './events.js';

export interface PollerOptions {
  store: Predictions;
  /** The admission queue's view of the predictions table. */
  queue: Queue;
  /** The account tier's limits on submissions. */
  admission: Admission;
  client: WaveSpeedClient;
  recorder: Recorder;
  /**
   * Writes a cancel (from any instance, whoever leases the row); the recorder itself when there is
   * one process. With leases, `recorder` is fenced to this instance's leases, and a cancel must win anyway.
   */
  lifecycleRecorder?: Recorder;
  /** Work shared with other instances (Postgres mode): claims instead of the local due-queries. */
  leases?: Leases;
  /** The account-wide pause that every instance honours (Postgres mode). */
  sharedPause?: SharedPause;
  /** LEASE_MS: with leases, the rows this instance steps are renewed every third of it. */
  leaseMs?: number;
  log: Logger;
  schedule: PollSchedule;
  /** Most upstream requests in flight at once. */
  concurrency: number;
  /** A prediction with no final status this long after creation is failed. */
  maxAgeMs: number;
  /** Poll interval for predictions whose updates come by webhook: a slow safety net. */
  webhookFallbackMs: number;
  /** Longest wait a Retry-After may impose; a larger one is cut to this. */
  retryAfterMaxMs: number;
  /** Submissions per prediction that may have reached upstream; past it, FAILED with SUBMISSION_UNCERTAIN. */
  maxSubmissions: number;
  /** How long a submission with no certain answer is looked for upstream before it may be sent again. */
  reconcileGraceMs: number;
  /** Builds the webhook URL handed to upstream; webhooks are off without it. */
  webhookUrl?: (predictionId: string, token: string) => string;
  /** Where data-URI images are kept as files (uploaded through upstream's media upload before submission). */
  images?: ImageStore;
  /** Where completed outputs are copied; outputs are not kept without it. */
  media?: MediaStore;
  /** @default systemClock */
  clock?: Clock;
  /** Longest sleep when nothing is due; a nudge wakes the poller sooner. @default 5000 */
  idleMs?: number;
}

export interface PollerHealth {
  running: boolean;
  pauses: Pause[];
}

/** Webhook deliveries force at most one re-poll of a prediction per this long. */
const FORCED_POLL_GAP_MS = 5000;
/** Longest backoff of a poller-wide pause (account probe, storage retry, crashed pass). */
const PAUSE_CAP_MS = 60_000;
/**
 * With leases, work that looks due may be held by another instance (its lease runs on): a pass that
 * claimed nothing waits this long before looking again, instead of spinning on the claim queries.
 */
const LEASED_RETRY_MS = 500;

/**
 * The one background scheduler, its loop: which predictions are due, how many steps run at once,
 * nudges, poller-wide pauses (rate limit, account, storage) and stop. What one step does lives in
 * steps.ts; what a failure leads to, in decide.ts. All state lives in SQLite, so a new process
 * picks up exactly where a dead one stopped.
 */
export class Poller extends EventEmitter<PollerEvents> {
  private readonly clock: Clock;
  private readonly inFlight = new Map<string, Promise<void>>();
  /** Webhook deliveries that arrived while their prediction was being polled: poll once more, at this time. */
  private readonly repoll = new Map<string, number>();
  /** When each prediction was last forced due by a webhook (a future time: a forced poll is already scheduled). */
  private readonly forcedAt = new Map<string, number>();
  /** Predictions whose step crashed and whose reschedule may not have committed: not before this. */
  private readonly cooldown = new Map<string, number>();
  /** Queued predictions this process is submitting: counted against the tier until their intent is in the database. */
  private readonly submitting = new Set<string>();
  /** Upstream tasks this process has asked upstream to delete. */
  private readonly deletedTasks = new Set<string>();
  private readonly pauses = new Pauses(1000, PAUSE_CAP_MS);
  private probing = false;
  private running = false;
  /** Rows the last pass claimed (leases only): none while some look due means another instance holds them. */
  private lastClaimed = 0;
  private heartbeat?: ReturnType<typeof setInterval>;
  private loopPromise?: Promise<void>;
  /** Ends the loop's current sleep; unset while a pass runs. */
  private wakeUp?: () => void;
  /** A wake-up that came while a pass was running: the next sleep returns at once, so it is not lost. */
  private wakeRequested = false;
  private wakePending = false;
  /** Cancels in-flight polls and downloads on stop, so shutdown waits for writes, not for timeouts (submissions are let finish). */
  private readonly shutdown = new AbortController();

  private readonly steps: PredictionSteps;

  constructor(private readonly o: PollerOptions) {
    super();
    this.clock = o.clock ?? systemClock;
    this.steps = new PredictionSteps({
      ...o,
      clock: this.clock,
      signal: this.shutdown.signal,
      emit: (event, ...args) => void (this.emit as (e: string, ...a: unknown[]) => boolean)(event, ...args),
      hold: (kind, reason, err, waitMs) => this.hold(kind, reason, err, waitMs),
      resume: (kind, startedAt) => this.resume(kind, startedAt),
      deleteUpstream: (ids) => this.deleteUpstream(ids),
    });
  }

  start(): void {
    if (this.running) return;
    this.running = true;
    this.loopPromise = this.loop();
    const { leases, leaseMs } = this.o;
    if (leases && leaseMs) {
      // A step may outlast a lease (an upload or a download may take 120 s): its lease is renewed
      // while it runs, so no other instance takes the row from under it.
      this.heartbeat = setInterval(() => {
        const ids = [...this.inFlight.keys()];
        if (ids.length) leases.renew(ids, this.clock.now()).catch((err: unknown) => this.o.log.warn({ err: (err as Error).message }, 'could not renew leases'));
      }, Math.max(100, Math.floor(leaseMs / 3)));
      this.heartbeat.unref();
    }
  }

  /**
   * Stops taking new work, cancels in-flight polls and downloads, and waits until every outcome is
   * written; then gives up this instance's leases, so another instance takes their rows at once.
   */
  async stop(): Promise<void> {
    this.running = false;
    this.shutdown.abort();
    this.wake();
    await this.loopPromise;
    await Promise.allSettled(this.inFlight.values());
    clearInterval(this.heartbeat);
    await this.o.leases?.release().catch((err: unknown) => this.o.log.warn({ err: (err as Error).message }, 'could not release leases; they expire by themselves'));
  }

  /**
   * A write outside the poller failed on storage (a createVideo's insert on a full disk, say): the
   * poller pauses as if its own write had failed, so /readyz says so at once and the probe ends the
   * pause with the first write that commits. Other errors are not the poller's business.
   * @returns whether it was a storage failure.
   */
  storageFailed(err: unknown): boolean {
    const storage = storageErrorOf(err);
    if (!storage) return false;
    this.hold('storage', `storage unavailable: ${storage.code}: ${storage.message}`, storage);
    // An idle loop may sleep until its next due row: wake it so it sleeps until the probe instead.
    this.wake();
    return true;
  }

  /** For /readyz: whether the loop runs and what holds it off. */
  health(): PollerHealth {
    return { running: this.running, pauses: this.pauses.list() };
  }

  /**
   * Something became due (a new prediction); look soon instead of at the next timer. Nudges in
   * one turn of the event loop share one pass: under a burst of createVideo calls, a pass (and its
   * due-query) per request cost ~100 µs each (bench/throughput.ts).
   */
  nudge(): void {
    if (this.wakePending) return;
    this.wakePending = true;
    setImmediate(() => {
      this.wakePending = false;
      this.wake();
    });
  }

  /**
   * A webhook said this prediction changed: read it from upstream soon (unless it is final). At
   * most one forced read per prediction per 5 s, so a flood of deliveries cannot become a flood of
   * GETs; a delivery inside that gap is not dropped but moves the read to the gap's end.
   */
  pollNow(id: string): void {
    const now = this.clock.now().getTime();
    const last = this.forcedAt.get(id) ?? -Infinity;
    if (last > now) return; // a forced read is already scheduled
    const at = Math.max(now, last + FORCED_POLL_GAP_MS);
    if (this.forcedAt.size > 10_000) for (const [k, t] of this.forcedAt) if (now - t >= FORCED_POLL_GAP_MS) this.forcedAt.delete(k);
    this.forcedAt.set(id, at);
    if (this.inFlight.has(id)) {
      this.repoll.set(id, at);
      this.nudge();
      return;
    }
    // The pass looks once the row is due; if the write fails, the safety-net poll still comes.
    this.o.store.makeDue(id, new Date(at)).then(
      () => this.nudge(),
      (err: unknown) => this.o.log.warn({ predictionId: id, err: (err as Error).message }, 'could not make a prediction due after its webhook'),
    );
  }

  /** One pass: start everything due (within the concurrency bound) and wait for it. For tests. */
  async runOnce(): Promise<void> {
    await this.startDue();
    await Promise.allSettled(this.inFlight.values());
  }

  private async loop(): Promise<void> {
    while (this.running) {
      let delay: number;
      try {
        await this.probeStorageIfDue();
        await this.enforceDeadlines();
        await this.probeAccountIfDue();
        await this.followSharedPause();
        const ran = await this.startDue();
        delay = await this.delayUntilNextDue();
        // Only a whole pass that really ran (not one a nudge woke inside a pause, nor one that threw
        // after starting its work) proves the crash is over.
        if (ran && this.pauses.clear('crash', this.clock.now().getTime())) this.emit('resumed', { kind: 'crash' });
      } catch (err) {
        // Whatever broke (a corrupted index page under the due-query, say) is logged once and
        // retried with backoff; the loop itself never dies of it.
        this.hold(isStorageError(err) ? 'storage' : 'crash', `poller pass failed: ${(err as Error).message}`, err);
        delay = Math.max(0, this.pauses.until() - this.clock.now().getTime());
      }
      await this.sleep(delay);
    }
  }

  private hold(kind: PauseKind, reason: string, err?: unknown, waitMs?: number, share = true): void {
    const { pause, isNew } = this.pauses.hold(kind, reason, this.clock.now().getTime(), waitMs);
    if (isNew) {
      this.o.log.warn({ err, pause: { kind, until: new Date(pause.until).toISOString() } }, reason);
      this.emit('paused', pause);
    }
    // What upstream said about the account holds for every instance on it.
    if (share && this.o.sharedPause && (kind === 'rate' || kind === 'account')) {
      this.o.sharedPause.hold(new Date(pause.until), reason).catch((e: unknown) => this.o.log.warn({ err: (e as Error).message }, 'could not share a pause with the other instances'));
    }
  }

  /** Holds off while another instance has paused the account (a 429 it got, say); checked every pass. */
  private async followSharedPause(): Promise<void> {
    if (!this.o.sharedPause) return;
    const now = this.clock.now().getTime();
    const shared = await this.o.sharedPause.current(new Date(now));
    if (shared && shared.until.getTime() > this.pauses.until()) this.hold('rate', shared.reason, undefined, shared.until.getTime() - now, false);
  }

  private resume(kind: PauseKind, startedAt?: number): void {
    if (!this.pauses.clear(kind, this.clock.now().getTime(), startedAt)) return;
    this.o.log.info({ kind }, 'pause over: upstream work resumes');
    this.emit('resumed', { kind });
    this.nudge();
  }

  /**
   * A storage pause ends with the first write that commits. A step's writes prove it as work goes
   * on; an idle gateway has no steps, so once the backoff has run out one small real write decides,
   * or /readyz would answer 503 for good after a single failed write.
   */
  private async probeStorageIfDue(): Promise<void> {
    const pause = this.pauses.get('storage');
    if (!pause || this.clock.now().getTime() < pause.until) return;
    await this.o.store.probeWrite(); // throws while storage still fails: the pass's catch holds the pause again
    this.resume('storage');
  }

  /**
   * While the account is unusable nothing is sent; once its backoff has run out, one free request
   * (the first page of the task list) tells whether the key works again.
   */
  private async probeAccountIfDue(): Promise<void> {
    const pause = this.pauses.get('account');
    if (!pause || this.probing || this.clock.now().getTime() < pause.until) return;
    this.probing = true;
    try {
      await this.o.client.listPredictions(1, 1, { signal: this.shutdown.signal });
      this.resume('account');
    } catch {
      if (!this.shutdown.signal.aborted) this.hold('account', pause.reason, undefined);
    } finally {
      this.probing = false;
    }
  }

  private async delayUntilNextDue(): Promise<number> {
    const idle = this.o.idleMs ?? 5000;
    const nowDate = this.clock.now();
    const now = nowDate.getTime();
    const pausedUntil = this.pauses.until();
    const deadline = (await this.o.queue.nextDeadline())?.getTime() ?? Number.POSITIVE_INFINITY;
    // A deadline already past waits for the pause too: enforcing it needs the writes the pause is about.
    if (now < pausedUntil) return (deadline > now ? Math.min(pausedUntil, deadline) : pausedUntil) - now;
    // The next poll, the next queued submission the tier lets through, or the next deadline.
    let next = Math.min((await this.o.store.nextDueAt(this.inFlight))?.getTime() ?? Number.POSITIVE_INFINITY, deadline);
    const admitAt = await this.o.admission.nextAdmissionAt(nowDate, this.submitting);
    const queued = admitAt && (await this.o.queue.nextDue([...this.inFlight.keys(), ...this.cooldown.keys()]));
    if (admitAt && queued) next = Math.min(next, Math.max(queued.getTime(), admitAt.getTime()));
    if (next === Number.POSITIVE_INFINITY) return idle;
    const delay = next - now;
    // Due but not started means every slot is busy (a finishing request wakes us) or the row cools down.
    if (delay <= 0) {
      if (this.inFlight.size >= this.o.concurrency || this.cooldown.size) return Math.min(idle, 1000);
      // Due by the rows, yet nothing claimed: another instance's lease holds it (or the tier is full there).
      if (this.o.leases && this.lastClaimed === 0) return Math.min(idle, LEASED_RETRY_MS);
      return 0;
    }
    return Math.min(delay, idle);
  }

  /** Ends the loop's sleep, or, during a pass, the sleep that follows it (a nudge or stop() is never lost). */
  private wake(): void {
    if (this.wakeUp) this.wakeUp();
    else this.wakeRequested = true;
  }

  private sleep(ms: number): Promise<void> {
    if (!this.running || this.wakeRequested) {
      this.wakeRequested = false;
      return Promise.resolve();
    }
    return new Promise((resolve) => {
      const done = () => {
        timer.clear();
        this.wakeUp = undefined;
        resolve();
      };
      const timer = this.clock.setTimeout(done, ms);
      this.wakeUp = done;
    });
  }

  /** @returns false when a pause kept it from looking at all. */
  private async startDue(): Promise<boolean> {
    const now = this.clock.now();
    const t = now.getTime();
    if (t < this.pauses.until()) return false;
    for (const [id, until] of this.cooldown) if (until <= t) this.cooldown.delete(id);
    let free = this.o.concurrency - this.inFlight.size;
    if (free <= 0) return false;
    if (this.o.leases) {
      // Shared work: claims lease rows to this instance; the tier's limits are judged across all instances.
      // Never a row this instance is still stepping: see Leases.claimDue.
      const polls = await this.o.leases.claimDue(now, free, [...this.inFlight.keys()]);
      for (const id of polls) this.begin(id, false);
      free = this.o.concurrency - this.inFlight.size;
      const submissions = free > 0 ? await this.o.leases.claimQueued(now, free, [...this.inFlight.keys()]) : [];
      for (const id of submissions) this.begin(id, true);
      this.lastClaimed = polls.length + submissions.length;
      return true;
    }
    // Work already paid for first: polls of tasks upstream, and reconciliations.
    const busy = this.inFlight.size + this.cooldown.size;
    const polls = (await this.o.store.due(now, free + busy)).filter((id) => !this.inFlight.has(id) && !this.cooldown.has(id));
    for (const id of polls.slice(0, free)) this.begin(id, false);
    free = this.o.concurrency - this.inFlight.size;
    // Then new submissions, in the queue's fair order, as far as the account's tier allows.
    const admit = Math.min(free, await this.o.admission.allowance(now, this.submitting));
    if (admit <= 0) return true;
    for (const id of await this.o.queue.due(now, admit, [...this.inFlight.keys(), ...this.cooldown.keys()])) this.begin(id, true);
    return true;
  }

  private begin(id: string, submission: boolean): void {
    // Reads and starts are split by awaits: never start a prediction that is already under way.
    if (this.inFlight.has(id)) return;
    if (submission) this.submitting.add(id);
    const startedAt = this.clock.now().getTime();
    const work = (async () => {
      try {
        await this.steps.run(id);
        // The step's writes committed (a storage error would have thrown): storage works again,
        // unless the step began before the pause's latest hold. Then its writes may all have
        // committed before the failure (a Postgres restart failing the steps beside it), and ending
        // the pause on it would let the next failure of the same outage start a pause one step longer.
        this.resume('storage', startedAt);
        // Done with it: another instance may take its next step. (A crashed step keeps its lease
        // until it expires, which holds the row back as the cooldown does.)
        await this.o.leases?.release([id]).catch(() => {});
      } catch (err) {
        await this.onStepCrash(id, err);
      } finally {
        this.inFlight.delete(id);
        this.submitting.delete(id);
        const repollAt = this.repoll.get(id);
        if (repollAt !== undefined) {
          this.repoll.delete(id);
          await this.o.store.makeDue(id, new Date(repollAt)).catch(() => {}); // the safety-net poll still comes
        }
        if (submission) this.emit('queueMoved');
        this.nudge();
      }
    })();
    this.inFlight.set(id, work);
  }

  /**
   * Ends a live prediction CANCELED: never submitted if it was queued; no longer tracked if it was
   * upstream, where its task is deleted on a best-effort basis. A submission in flight finds the
   * prediction final when its answer lands, and deletes the task it created (steps.ts).
   * @returns the row as it is now (CANCELED, or already final), or undefined for an unknown id.
   */
  async cancel(id: string, error: string | null = null, awaitDelete = true): Promise<PredictionRow | undefined> {
    const now = this.clock.now();
    const row = await this.o.store.findById(id);
    if (!row || terminalStatuses.has(row.status)) return row;
    const canceled = await (this.o.lifecycleRecorder ?? this.o.recorder).record(id, { status: 'CANCELED', error, nextPollAt: null, completedAt: now, image: null, submitStartedAt: null });
    if (!canceled) return this.o.store.findById(id); // it ended otherwise a moment before
    this.o.log.info({ predictionId: id, upstreamId: row.upstreamId, reason: error ?? 'asked by the client' }, 'prediction canceled');
    this.emit('recorded', { id, status: 'CANCELED' });
    this.emit('queueMoved');
    // A submission without a certain answer (or still under way) may have created a task that no
    // row will ever name: look for it a few times over the grace period, and delete it if it shows.
    // The task as stored by the cancel's own write: a submission answered between the read above and
    // that write has its upstream id there, not in `row`.
    const upstreamId = canceled.upstreamId;
    if (!upstreamId && (row.submitStartedAt || this.submitting.has(id))) void this.deleteOrphanOf(row, row.submitStartedAt ?? now);
    // The loop never waits on upstream for a deadline: a slow delete would hold every other prediction.
    if (upstreamId) {
      const deleting = this.deleteUpstream([upstreamId]);
      if (awaitDelete) await deleting;
    }
    return canceled;
  }

  /** Best effort: upstream may refuse or be unreachable; the prediction is CANCELED here either way. */
  private async deleteUpstream(all: string[]): Promise<void> {
    // A task can be named twice (its late answer, and the search for it after a cancel): delete once.
    const upstreamIds = all.filter((id) => !this.deletedTasks.has(id));
    if (!upstreamIds.length) return;
    if (this.deletedTasks.size > 10_000) this.deletedTasks.clear();
    for (const id of upstreamIds) this.deletedTasks.add(id);
    try {
      await this.o.client.deletePredictions(upstreamIds, { signal: this.shutdown.signal });
      this.emit('deletedUpstream', { upstreamIds });
    } catch (err) {
      this.o.log.warn({ upstreamIds, err: (err as Error).message }, 'could not delete canceled tasks upstream');
    }
  }

  private async deleteOrphanOf(row: PredictionRow, since: Date): Promise<void> {
    const gap = Math.max(100, Math.round(this.o.reconcileGraceMs / 3));
    for (let look = 0; look < 4 && !this.shutdown.signal.aborted; look++) {
      if (look) await new Promise<void>((resolve) => this.clock.setTimeout(resolve, gap));
      try {
        const found = await findSubmittedTask(this.o.client, {
          prompt: row.prompt,
          image: row.hasImage ? (row.imageUploadUrl ?? (await this.o.store.imageOf(row.id))) : null,
          since,
          isTaken: async (upstreamId) => (await this.o.store.findByUpstreamId(upstreamId)) !== undefined,
        });
        if (typeof found === 'object') return await this.deleteUpstream([found.id]);
      } catch (err) {
        this.o.log.warn({ predictionId: row.id, err: (err as Error).message }, 'could not look for the task of a canceled submission');
      }
    }
  }

  /** Cancels every live prediction whose deadline has passed; runs every pass, pauses or not. */
  private async enforceDeadlines(): Promise<void> {
    const now = this.clock.now();
    for (const id of await this.o.queue.pastDeadline(now, 100)) {
      const row = await this.o.store.findById(id);
      const seconds = row?.deadlineAt ? Math.round((row.deadlineAt.getTime() - row.createdAt.getTime()) / 1000) : 0;
      await this.cancel(id, `canceled: the deadline of ${seconds} s passed before the prediction was final`, false);
    }
  }

  /**
   * Something outside the upstream error handling failed (a database write, say). The row is held
   * back in memory, whether or not the write pushing it back commits, so it cannot spin the loop;
   * a storage failure pauses all work until writes succeed again.
   */
  private async onStepCrash(id: string, err: unknown): Promise<void> {
    const now = this.clock.now().getTime();
    this.cooldown.set(id, now + this.o.schedule.maxMs);
    const storage = storageErrorOf(err);
    if (storage) {
      this.hold('storage', `storage unavailable: ${storage.code}: ${storage.message}`, storage);
      return;
    }
    this.o.log.error({ err, predictionId: id }, 'poller step failed');
    try {
      await this.o.recorder.reschedule(id, { nextPollAt: new Date(now + this.o.schedule.maxMs) });
    } catch (again) {
      const storageAgain = storageErrorOf(again);
      if (storageAgain) this.hold('storage', `storage unavailable: ${storageAgain.code}: ${storageAgain.message}`, storageAgain);
    }
  }

}
