import type { IncomingMessage } from 'node:http';

/**
 * HTTP helpers shared by everything that calls out (the upstream client, the output downloads) and
 * by the small routes that read a body themselves (the sandbox, the incoming webhook route).
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

/**
 * A request body of at most `limit` bytes; over it, rejects with 'too large' once the body has been
 * read to its end (the bytes past the limit are dropped), so the sender still gets its 413.
 */
export function readBody(req: IncomingMessage, limit: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size <= limit) chunks.push(chunk);
    });
    req.on('end', () => (size > limit ? reject(new Error('too large')) : resolve(Buffer.concat(chunks))));
    req.on('error', reject);
  });
}
