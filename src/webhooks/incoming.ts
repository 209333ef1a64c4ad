import { createHmac, timingSafeEqual } from 'node:crypto';

/** Upstream deliveries older (or further in the future) than this are refused: a captured one cannot be replayed later. */
export const UPSTREAM_TOLERANCE_MS = 5 * 60 * 1000;

export interface UpstreamSignatureHeaders {
  id?: string;
  timestamp?: string;
  signature?: string;
}

export type Verdict = { ok: true } | { ok: false; reason: string };

/**
 * Checks a WaveSpeed delivery: `webhook-signature: v3,<hex>` is HMAC-SHA256, keyed with the
 * account secret without its `whsec_` prefix (used as text, not base64-decoded), over
 * `{webhook-id}.{webhook-timestamp}.{raw body}`. Compared in constant time; several
 * space-separated signatures (during a secret rotation) are each tried.
 */
export function verifyUpstreamDelivery(secret: string, headers: UpstreamSignatureHeaders, body: Buffer, now: Date): Verdict {
  const { id, timestamp, signature } = headers;
  if (!id || !timestamp || !signature) return { ok: false, reason: 'missing webhook-id, webhook-timestamp or webhook-signature' };
  if (id.length > 256 || !/^\d{1,12}$/.test(timestamp)) return { ok: false, reason: 'malformed webhook-id or webhook-timestamp' };
  const sentAt = Number(timestamp) * 1000;
  if (Math.abs(now.getTime() - sentAt) > UPSTREAM_TOLERANCE_MS) return { ok: false, reason: 'webhook-timestamp is more than 5 minutes away' };
  const key = secret.startsWith('whsec_') ? secret.slice('whsec_'.length) : secret;
  const expected = createHmac('sha256', key).update(`${id}.${timestamp}.`).update(body).digest();
  for (const part of signature.split(' ')) {
    const [version, hex] = part.split(',', 2);
    if (version !== 'v3' || !hex || !/^[0-9a-f]{64}$/i.test(hex)) continue;
    if (timingSafeEqual(Buffer.from(hex, 'hex'), expected)) return { ok: true };
  }
  return { ok: false, reason: 'no valid signature' };
}

/** Signs a delivery the way WaveSpeed does (the sandbox's side of the contract above). */
export function signUpstreamDelivery(secret: string, id: string, timestamp: number, body: string): string {
  const key = secret.startsWith('whsec_') ? secret.slice('whsec_'.length) : secret;
  return `v3,${createHmac('sha256', key).update(`${id}.${timestamp}.${body}`).digest('hex')}`;
}

/**
 * The account's webhook secret, fetched from upstream once and cached. When a delivery does not
 * verify, `refresh` fetches it again (at most once a minute), in case it was rotated upstream.
 */
export class UpstreamSecret {
  private secret?: string;
  private fetchedAt = Number.NEGATIVE_INFINITY;
  /** A failed fetch is not retried for 5 s: unverifiable deliveries must not become a flood of requests upstream. */
  private failedAt = Number.NEGATIVE_INFINITY;
  private pending?: Promise<string | undefined>;

  constructor(
    private readonly fetchSecret: () => Promise<string>,
    private readonly onError: (err: unknown) => void,
    private readonly minRefreshMs = 60_000,
  ) {}

  /** The cached secret, fetching it first if there is none; undefined when upstream cannot give it. */
  async get(): Promise<string | undefined> {
    if (this.secret !== undefined || Date.now() - this.failedAt < 5000) return this.secret;
    return this.load();
  }

  /** Fetches the secret again unless that was done within the last minute; the secret now in force. */
  async refresh(): Promise<string | undefined> {
    if (Date.now() - this.fetchedAt < this.minRefreshMs) return this.secret;
    return this.load();
  }

  private load(): Promise<string | undefined> {
    this.pending ??= this.fetchSecret()
      .then(
        (s) => {
          this.secret = s;
          this.fetchedAt = Date.now();
          return s;
        },
        (err) => {
          this.failedAt = Date.now();
          this.onError(err);
          return this.secret;
        },
      )
      .finally(() => {
        this.pending = undefined;
      });
    return this.pending;
  }
}
