/**
 * HTTP helpers shared by everything that calls out: the upstream client (upstream/wavespeed.ts)
 * and the output downloads (storage/media.ts).
 */

/** HTTP statuses after which the same request may well succeed later. */
export const isRetryableStatus = (status: number) => status >= 500 || status === 429 || status === 408;

/** A signal that aborts after `ms`, or earlier with `signal` (shutdown). */
export function withTimeout(ms: number, signal?: AbortSignal): AbortSignal {
  const timeout = AbortSignal.timeout(ms);
  return signal ? AbortSignal.any([timeout, signal]) : timeout;
}

/** Retry-After is either delta-seconds or an HTTP date; the wait in ms, unbounded (callers cap it). */
export function parseRetryAfter(value: string | null, now = Date.now()): number | undefined {
  if (!value) return undefined;
  const seconds = Number(value);
  if (Number.isFinite(seconds) && seconds >= 0) return Math.round(seconds * 1000);
  const at = Date.parse(value);
  return Number.isNaN(at) ? undefined : Math.max(0, at - now);
}
