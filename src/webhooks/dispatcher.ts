import { randomUUID } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { performance } from 'node:perf_hooks';
import { Webhook } from 'standardwebhooks';
import { systemClock, type Clock } from '../clock.js';
import type { MessageStep, Outbox } from '../db/outbox.js';
import type { PredictionStatus, WebhookAttemptRow, WebhookMessageRow } from '../db/schema.js';
import type { Logger } from '../log.js';
import type { ResolveHost } from '../validation/address.js';
import { blockedAddress } from './target.js';

/** What the dispatcher does, as typed events: tests await them instead of sleeping. */
export interface DispatcherEvents {
  /** One POST was tried (or refused before it left). */
  attempted: [{ deliveryId: string; messageId: string; predictionId: string; event: PredictionStatus; ok: boolean; statusCode: number | null; error: string | null; manual: boolean }];
  /** A message reached its receiver (2xx). */
  delivered: [{ messageId: string; predictionId: string }];
  /** A message is no longer retried: 24 h passed, or it can never be sent. */
  gaveUp: [{ messageId: string; predictionId: string; reason: string }];
}

export interface DispatcherOptions {
  /** SQLite's (db/outbox.ts) or, with N instances, Postgres' (db/pg/outbox.ts: claims are leased). */
  store: Outbox;
  /** The signing secret of the prediction's owner; undefined when there is none. */
  secretFor: (predictionId: string) => Promise<string | undefined>;
  log: Logger;
  resolveHost: ResolveHost;
  /** Deliver to loopback and private addresses too (WEBHOOK_ALLOW_PRIVATE). */
  allowPrivate: boolean;
  /** The first retry's delay; each later one doubles, up to MAX_GAP_MS. */
  retryBaseMs: number;
  timeoutMs: number;
  clock?: Clock;
  fetch?: typeof fetch;
  /** POSTs in flight at once. @default 8 */
  concurrency?: number;
}

/** Messages are retried this long after they were written, then given up. */
export const RETRY_WINDOW_MS = 24 * 3600 * 1000;
/** Longest gap between two attempts. */
export const MAX_GAP_MS = 3600 * 1000;

/** The pause after the `attempts`-th failed attempt: base × 2^(attempts−1), at most MAX_GAP_MS. */
export function retryGapMs(baseMs: number, attempts: number): number {
  return Math.min(baseMs * 2 ** (attempts - 1), MAX_GAP_MS);
}

/**
 * When to try again after the `attempts`-th failure at `now`, for a message written at `createdAt`;
 * null once that would be past RETRY_WINDOW_MS after `createdAt` (the message is given up).
 */
export function nextAttemptAt(baseMs: number, attempts: number, now: Date, createdAt: Date): Date | null {
  const at = now.getTime() + retryGapMs(baseMs, attempts);
  return at > createdAt.getTime() + RETRY_WINDOW_MS ? null : new Date(at);
}
/** Longest sleep when nothing is due; a nudge wakes the loop sooner. */
const IDLE_MS = 5000;
/**
 * The pause when a message is due but the pass could not claim it (Postgres: another instance's claim
 * holds the row this instant, or took it). Never on SQLite, where everything due is taken.
 */
const CONTENDED_MS = 100;

type Outcome = { statusCode: number | null; error: string | null; ok: boolean; permanent: boolean; latencyMs: number };

/**
 * Delivers the outbox: every message due is POSTed to its URL, signed per Standard Webhooks with
 * its owner's secret, and retried with exponential backoff for 24 h. All state is in the database
 * (SQLite, or Postgres shared by N instances, where each message is claimed by one instance at a
 * time), so a new process delivers whatever a dead one left (at least once: receivers drop
 * duplicates by `webhook-id`, which stays the same across attempts).
 */
export class WebhookDispatcher extends EventEmitter<DispatcherEvents> {
  private readonly clock: Clock;
  private readonly inFlight = new Map<string, Promise<void>>();
  private running = false;
  private loopPromise?: Promise<void>;
  private wakeUp?: () => void;
  /** Set by a nudge or a finished POST: a pass that was running then (awaiting the store) looks again at once. */
  private woken = false;
  /** Aborts POSTs in flight on stop: shutdown does not wait for slow receivers. */
  private readonly shutdown = new AbortController();

  constructor(private readonly o: DispatcherOptions) {
    super();
    this.clock = o.clock ?? systemClock;
  }

  start(): void {
    if (this.running) return;
    this.running = true;
    this.loopPromise = this.loop();
  }

  /**
   * Stops taking messages and aborts the POSTs in flight; an aborted attempt is not recorded, so
   * its message stays due and is sent again by the next process (receivers drop the duplicate).
   */
  async stop(): Promise<void> {
    this.running = false;
    this.shutdown.abort();
    this.wakeUp?.();
    await this.loopPromise;
    await Promise.allSettled(this.inFlight.values());
  }

  /** A message was written: look now rather than at the next timer. */
  nudge(): void {
    setImmediate(() => this.wake());
  }

  private wake(): void {
    this.woken = true;
    this.wakeUp?.();
  }

  /**
   * Sends the message of an earlier attempt once more, now, outside the retry schedule, and
   * returns the new attempt. A success marks a still-pending message delivered.
   */
  async redeliver(attemptId: string): Promise<WebhookAttemptRow | undefined> {
    const attempt = await this.o.store.attempt(attemptId);
    const message = attempt && (await this.o.store.message(attempt.messageId));
    if (!message) return undefined;
    const deliveryId = await this.send(message, true);
    return deliveryId === undefined ? undefined : this.o.store.attempt(deliveryId);
  }

  private async loop(): Promise<void> {
    while (this.running) {
      this.woken = false;
      let delay = IDLE_MS;
      try {
        const now = this.clock.now();
        const started = await this.startDue(now);
        delay = await this.delay(now, started);
      } catch (err) {
        this.o.log.error({ err }, 'webhook dispatcher pass failed; retrying');
      }
      // A nudge or a finished POST during the pass (while it awaited the store) is not lost, nor a
      // stop(): it ends the loop now, not after one more sleep.
      if (!this.woken && this.running) await this.sleep(delay);
    }
  }

  /** Claims what is due and starts sending it; how many were started. */
  private async startDue(now: Date): Promise<number> {
    const free = (this.o.concurrency ?? 8) - this.inFlight.size;
    if (free <= 0) return 0;
    const due = await this.o.store.claimDue(now, free, this.inFlight);
    for (const message of due) {
      const work = this.send(message, false)
        .then(() => undefined)
        .catch((err) => this.o.log.error({ err, messageId: message.id }, 'recording a webhook attempt failed'))
        .finally(() => {
          this.inFlight.delete(message.id);
          this.wake();
        });
      this.inFlight.set(message.id, work);
    }
    return due.length;
  }

  /** How long to sleep after a pass at `passAt` that started `started` POSTs. */
  private async delay(passAt: Date, started: number): Promise<number> {
    if (this.inFlight.size >= (this.o.concurrency ?? 8)) return IDLE_MS; // a finishing POST wakes the loop
    const next = await this.o.store.nextDueAt();
    if (!next) return IDLE_MS;
    // Due at the pass, yet nothing claimed nor in flight: another instance's claim holds it this
    // instant (Postgres; on SQLite the pass takes all that is due). Look again soon, not at once.
    if (next <= passAt && !started && !this.inFlight.size) return CONTENDED_MS;
    // Due but in flight: its end wakes the loop.
    const ms = next.getTime() - this.clock.now().getTime();
    return ms <= 0 ? (this.inFlight.size ? IDLE_MS : 0) : Math.min(ms, IDLE_MS);
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = this.clock.setTimeout(done, ms);
      function done() {
        timer.clear();
        resolve();
      }
      this.wakeUp = done;
    });
  }

  /** One attempt, recorded with the message's next step; returns the attempt's id (undefined when cut off by stop()). */
  private async send(message: WebhookMessageRow, manual: boolean): Promise<string | undefined> {
    const outcome = await this.post(message);
    if (this.shutdown.signal.aborted && !outcome.ok) {
      // Cut off by stop(): not an attempt. Its claim (Postgres) ends now, so another instance sends it at once.
      if (!manual) await this.o.store.release([message.id]);
      return undefined;
    }
    const now = this.clock.now();
    const deliveryId = randomUUID();
    const attempts = message.attempts + (manual ? 0 : 1);
    let next: MessageStep = {};
    let gaveUp: string | undefined;
    if (outcome.ok) {
      if (!message.deliveredAt) next = { deliveredAt: now, nextAttemptAt: null, attempts };
    } else if (!manual) {
      const at = nextAttemptAt(this.o.retryBaseMs, attempts, now, message.createdAt);
      if (outcome.permanent) gaveUp = outcome.error ?? 'cannot be sent';
      else if (at === null) gaveUp = `no success in ${RETRY_WINDOW_MS / 3_600_000} h`;
      next = { attempts, nextAttemptAt: gaveUp ? null : at };
    }
    await this.o.store.recordAttempt(
      { id: deliveryId, messageId: message.id, predictionId: message.predictionId, attemptedAt: now, statusCode: outcome.statusCode, latencyMs: outcome.latencyMs, error: outcome.error, manual },
      next,
    );
    const base = { messageId: message.id, predictionId: message.predictionId };
    this.emit('attempted', { ...base, deliveryId, event: message.event, ok: outcome.ok, statusCode: outcome.statusCode, error: outcome.error, manual });
    if (outcome.ok && next.deliveredAt) this.emit('delivered', base);
    if (gaveUp) {
      this.o.log.warn({ ...base, url: redact(message.url), reason: gaveUp }, 'webhook given up');
      this.emit('gaveUp', { ...base, reason: gaveUp });
    }
    return deliveryId;
  }

  private async post(message: WebhookMessageRow): Promise<Outcome> {
    const started = performance.now();
    const done = (o: Omit<Outcome, 'latencyMs'>): Outcome => ({ ...o, latencyMs: Math.round(performance.now() - started) });
    const secret = await this.o.secretFor(message.predictionId);
    if (!secret) return done({ ok: false, statusCode: null, error: 'no signing secret for the owner of this prediction', permanent: true });
    const url = new URL(message.url);
    if (!this.o.allowPrivate) {
      // Checked again at every attempt: a name may resolve elsewhere than when the prediction was created.
      let blocked: string | undefined;
      try {
        blocked = await blockedAddress(url, this.o.resolveHost);
      } catch (err) {
        return done({ ok: false, statusCode: null, error: `host could not be resolved: ${(err as Error).message}`, permanent: false });
      }
      if (blocked !== undefined) return done({ ok: false, statusCode: null, error: `refused: ${url.hostname} points at a non-public address (${blocked})`, permanent: true });
    }
    const timestamp = this.clock.now();
    try {
      const res = await (this.o.fetch ?? fetch)(url, {
        method: 'POST',
        headers: {
          'content-type': 'application/json',
          'user-agent': 'cinegraph-webhooks',
          'webhook-id': message.id,
          'webhook-timestamp': String(Math.floor(timestamp.getTime() / 1000)),
          'webhook-signature': new Webhook(secret).sign(message.id, timestamp, message.payload),
        },
        body: message.payload,
        // A redirect is an answer, not a place to send the payload (it could point anywhere).
        redirect: 'manual',
        signal: AbortSignal.any([AbortSignal.timeout(this.o.timeoutMs), this.shutdown.signal]),
      });
      await res.body?.cancel().catch(() => undefined);
      const ok = res.status >= 200 && res.status < 300;
      return done({ ok, statusCode: res.status, error: ok ? null : `receiver answered HTTP ${res.status}`, permanent: false });
    } catch (err) {
      const e = err as Error & { cause?: { code?: string } };
      const why = e.name === 'TimeoutError' ? `no answer within ${this.o.timeoutMs} ms` : `${e.message}${e.cause?.code ? ` (${e.cause.code})` : ''}`;
      return done({ ok: false, statusCode: null, error: why, permanent: false });
    }
  }
}

/** A URL for logs: its query string may carry the receiver's own token. */
function redact(raw: string): string {
  const url = new URL(raw);
  return `${url.origin}${url.pathname}`;
}
