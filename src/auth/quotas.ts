import { RateLimiterMemory, RateLimiterRes } from 'rate-limiter-flexible';
import type { Principal } from './principal.js';

export interface QuotaSettings {
  /** createVideo calls per key per minute, unless the key sets its own. */
  createsPerMinute: number;
  /** Predictions of one key not yet COMPLETED or FAILED, unless the key sets its own. */
  maxInFlight: number;
  /** Open WebSocket connections and SSE streams of one key. */
  maxSocketsPerKey: number;
  /** Operations at once on one graphql-ws socket (every caller, open mode included). */
  maxSubscriptionsPerSocket: number;
}

/**
 * Per-key quotas. They bind keys only: open mode is one loopback user, who is limited by the
 * per-operation and per-socket limits alone.
 */
export class Quotas {
  /** One limiter per distinct per-minute allowance (keys may set their own). */
  private readonly limiters = new Map<number, RateLimiterMemory>();

  constructor(readonly settings: QuotaSettings) {}

  /**
   * Takes one createVideo from the caller's minute.
   * @returns undefined when allowed, else the whole seconds until one is free again.
   */
  async takeCreate(principal: Principal): Promise<number | undefined> {
    const key = principal.key;
    if (!key) return undefined;
    const points = key.perMinute ?? this.settings.createsPerMinute;
    let limiter = this.limiters.get(points);
    if (!limiter) {
      limiter = new RateLimiterMemory({ points, duration: 60, keyPrefix: `creates-${points}` });
      this.limiters.set(points, limiter);
    }
    try {
      await limiter.consume(key.id);
      return undefined;
    } catch (res) {
      if (res instanceof RateLimiterRes) return Math.max(1, Math.ceil(res.msBeforeNext / 1000));
      throw res;
    }
  }

  /** The most unfinished predictions the caller may have, or undefined for no limit. */
  maxInFlight(principal: Principal): number | undefined {
    return principal.key ? (principal.key.maxInFlight ?? this.settings.maxInFlight) : undefined;
  }

  /** The most sockets and SSE streams the caller may hold, or undefined for no limit. */
  maxSockets(principal: Principal): number | undefined {
    return principal.key ? this.settings.maxSocketsPerKey : undefined;
  }
}
