import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Connections } from '../auth/connections.js';
import type { Keys } from '../auth/keys.js';
import { authenticate, UNAUTHENTICATED_MESSAGE, type Principal } from '../auth/principal.js';
import type { Quotas } from '../auth/quotas.js';
import { refuse, type OriginPolicy } from './origin.js';

export interface AccessDeps {
  keys: Keys;
  origins: OriginPolicy;
  connections: Connections;
  quotas: Quotas;
}

/** Refuses too many long-lived connections of one key; the message names the limit. */
export function tooManySockets(max: number): string {
  return `this key already holds ${max} WebSocket connections and SSE streams (MAX_SOCKETS_PER_KEY)`;
}

/**
 * The HTTP layer's gate: which requests may reach a route at all (browser origin, and in open
 * mode the Host), and who is calling /graphql.
 */
export function createAccessGate({ keys, origins, connections, quotas }: AccessDeps) {
  return {
    /**
     * Refuses a request from a foreign browser origin (403 FORBIDDEN_ORIGIN) or, in open mode, one
     * addressed to a name that is not this machine's (403 FORBIDDEN_HOST). Kept media stays loadable
     * by any `<video>`: its URLs are unguessable capabilities.
     * @returns false when the request was answered.
     */
    screen(req: IncomingMessage, res: ServerResponse, pathname: string): boolean {
      if (pathname.startsWith('/media/') && (req.method === 'GET' || req.method === 'HEAD')) return true;
      const verdict = origins.check(req, keys.isEmpty());
      if (verdict.ok) return true;
      req.resume();
      refuse(res, 403, verdict.code, verdict.message);
      return false;
    },

    /**
     * The caller of a GraphQL request, or undefined once it has been answered 401 (or 429 for one
     * SSE stream too many). A GraphiQL page (GET, Accept: text/html) needs no key: yoga only renders
     * it and runs nothing, and the page sends the key with each operation.
     */
    graphql(req: IncomingMessage, res: ServerResponse): { principal?: Principal } | undefined {
      const accept = req.headers.accept ?? '';
      if (req.method === 'GET' && accept.includes('text/html')) return {};
      const principal = authenticate(keys, req.headers.authorization);
      if (!principal) {
        req.resume();
        refuse(res, 401, 'UNAUTHENTICATED', UNAUTHENTICATED_MESSAGE, { 'www-authenticate': 'Bearer' });
        return undefined;
      }
      if (accept.includes('text/event-stream')) {
        const max = quotas.maxSockets(principal);
        if (max !== undefined && connections.count(principal.owner) >= max) {
          req.resume();
          refuse(res, 429, 'TOO_MANY_SOCKETS', tooManySockets(max));
          return undefined;
        }
        // An SSE stream lives as long as its subscription: a revoked key's stream is cut.
        const release = connections.track(principal.owner, () => res.destroy());
        res.once('close', release);
      }
      return { principal };
    },
  };
}

export type AccessGate = ReturnType<typeof createAccessGate>;
