import type { IncomingMessage, ServerResponse } from 'node:http';
import ipaddr from 'ipaddr.js';
import { sendJson } from './json.js';

/** `localhost`, 127.0.0.0/8 or ::1 (with or without brackets): reachable from this machine only. */
export function isLoopbackHost(host: string): boolean {
  const name = host.replace(/^\[(.*)\]$/, '$1').toLowerCase();
  if (name === 'localhost' || name.endsWith('.localhost')) return true;
  if (!ipaddr.isValid(name)) return false;
  const addr = ipaddr.process(name);
  return addr.range() === 'loopback';
}

export interface OriginPolicyOptions {
  /** CORS_ORIGINS: exact origins allowed besides the server's own. */
  corsOrigins: string[];
  /** PUBLIC_URL, whose origin is the server's own too. */
  publicUrl?: string;
}

/** Distinct Host headers whose open-mode verdict is remembered; past it the memo starts over. */
export const MAX_REMEMBERED_HOSTS = 256;

export type OriginVerdict = { ok: true } | { ok: false; code: 'FORBIDDEN_ORIGIN' | 'FORBIDDEN_HOST'; message: string };

/**
 * Which browser origins may use the gateway. A request without an `Origin` is not from a web page's
 * script (or is a same-origin GET, which cannot mutate). One with an `Origin` must be the server's
 * own (the origin's host:port is the request's `Host`: a browser sets both truthfully), PUBLIC_URL's,
 * or in CORS_ORIGINS. `Origin: null` (sandboxed frames, file://) is foreign.
 *
 * In open mode no key protects the gateway, so the `Host` must also name this machine (or
 * PUBLIC_URL's host): otherwise a page on a domain rebound to 127.0.0.1 (DNS rebinding) would be
 * "same-origin" with it.
 */
export function createOriginPolicy({ corsOrigins, publicUrl }: OriginPolicyOptions) {
  const allowed = new Set(corsOrigins);
  if (publicUrl) allowed.add(new URL(publicUrl).origin);
  const publicHost = publicUrl ? new URL(publicUrl).host.toLowerCase() : undefined;

  /**
   * Open mode's verdict per Host header (lower-cased, port included), remembered: parsing it as an
   * address (ipaddr.js) on every request was ~7 µs, 1.5% of an uncached `prediction(id)` (issue 18),
   * and nearly every request carries the same Host. Bounded, since any client picks its Host.
   */
  const openHosts = new Map<string, boolean>();
  const openModeServes = (host: string) => {
    let serves = openHosts.get(host);
    if (serves === undefined) {
      serves = isLoopbackHost(host.replace(/:\d+$/, '')) || host === publicHost;
      if (openHosts.size >= MAX_REMEMBERED_HOSTS) openHosts.clear();
      openHosts.set(host, serves);
    }
    return serves;
  };

  const sameOrigin = (origin: string, host: string) => {
    try {
      return new URL(origin).host === host;
    } catch {
      return false;
    }
  };

  return {
    check(req: IncomingMessage, openMode: boolean): OriginVerdict {
      const origin = req.headers.origin;
      const host = (req.headers.host ?? '').toLowerCase();
      if (origin !== undefined && !allowed.has(origin) && !sameOrigin(origin, host)) {
        return { ok: false, code: 'FORBIDDEN_ORIGIN', message: `requests from origin ${origin} are not allowed (see CORS_ORIGINS)` };
      }
      if (openMode && !openModeServes(host)) {
        return { ok: false, code: 'FORBIDDEN_HOST', message: `open mode answers only requests addressed to this machine, not to "${host}"` };
      }
      return { ok: true };
    },
  };
}

export type OriginPolicy = ReturnType<typeof createOriginPolicy>;

/** A refusal in the shape of a GraphQL error response, so GraphQL clients read its code. */
export function refuse(res: ServerResponse, status: number, code: string, message: string, headers: Record<string, string> = {}): void {
  sendJson(res, status, { errors: [{ message, extensions: { code } }] }, headers);
}
