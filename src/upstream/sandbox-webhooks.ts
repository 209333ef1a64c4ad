import { randomUUID } from 'node:crypto';
import type { Clock } from '../clock.js';
import { signUpstreamDelivery } from '../webhooks/incoming.js';

/** Attempts per delivery: the first and this many retries minus one, each after twice the last gap. */
export const SANDBOX_WEBHOOK_ATTEMPTS = 4;

export interface SignedDelivery {
  url: string;
  secret: string;
  /** The body at send time (the task's record). */
  body: () => string;
  clock: Clock;
  fetch: typeof fetch;
  /** First retry's delay, in the clock's time. */
  retryMs: number;
  /** Pending timers, so close() can cancel them. */
  timers: Set<{ clear(): void }>;
  /** Stop retrying (the task was deleted). */
  cancelled: () => boolean;
  onAttempt: (ok: boolean) => void;
}

/**
 * Delivers one event as WaveSpeed does: signed (`webhook-id`, `webhook-timestamp`, `webhook-signature:
 * v3,<hex>`, the id the same on every attempt), and retried with doubling gaps while the receiver
 * does not answer 2xx, up to SANDBOX_WEBHOOK_ATTEMPTS attempts.
 */
export function deliverSigned(d: SignedDelivery, attempt = 1, id = `${randomUUID().replaceAll('-', '')}`): void {
  if (d.cancelled()) return;
  const body = d.body();
  // The signature's timestamp is wall-clock seconds: the receiver checks it against its own clock.
  const timestamp = Math.floor(Date.now() / 1000);
  const retry = () => {
    if (attempt >= SANDBOX_WEBHOOK_ATTEMPTS) return;
    const timer = d.clock.setTimeout(() => {
      d.timers.delete(timer);
      deliverSigned(d, attempt + 1, id);
    }, d.retryMs * 2 ** (attempt - 1));
    d.timers.add(timer);
  };
  d.fetch(d.url, {
    method: 'POST',
    headers: {
      'content-type': 'application/json',
      'webhook-id': id,
      'webhook-timestamp': String(timestamp),
      'webhook-signature': signUpstreamDelivery(d.secret, id, timestamp, body),
    },
    body,
    signal: AbortSignal.timeout(10_000),
  }).then(
    (r) => {
      d.onAttempt(r.ok);
      void r.body?.cancel();
      if (!r.ok) retry();
    },
    () => {
      d.onAttempt(false);
      retry();
    },
  );
}
