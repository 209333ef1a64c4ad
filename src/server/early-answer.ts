import type { IncomingMessage, ServerResponse } from 'node:http';
import { Readable } from 'node:stream';
import type { ExecutionResult } from 'graphql';
import type { Principal } from '../auth/principal.js';
import type { PlainParams } from './early-execution.js';
import { MISS, type ResponseCache } from './response-cache.js';

/**
 * Bodies read before yoga to look for a cached answer: a `prediction(id)` read is a few hundred
 * bytes. A longer body goes to yoga unread (its cached answers, if any, are served by the plugin).
 */
export const EARLY_MAX_BYTES = 4096;

/**
 * The Accept headers answered here, each with the content type yoga gives a query's answer for it
 * (its result processors' negotiation; test/early-answer.test.ts holds each against yoga). Any
 * other Accept, like `text/event-stream` (a query's answer as a stream), goes to yoga.
 */
export const CONTENT_TYPES: ReadonlyMap<string | undefined, string> = new Map<string | undefined, string>([
  [undefined, 'application/json; charset=utf-8'],
  ['*/*', 'application/json; charset=utf-8'],
  ['application/json', 'application/json; charset=utf-8'],
  ['application/graphql-response+json', 'application/graphql-response+json; charset=utf-8'],
  ['application/graphql-response+json, application/json', 'application/graphql-response+json; charset=utf-8'],
  ['application/graphql-response+json, application/json;q=0.9', 'application/graphql-response+json; charset=utf-8'],
  ['application/json, application/graphql-response+json', 'application/json; charset=utf-8'],
]);

/**
 * Content types of a body answered here, spelled exactly: yoga's match is case-sensitive (it answers
 * `Application/JSON` with 415), so a looser match here would answer what yoga refuses.
 */
const JSON_TYPES = new Set<string | undefined>(['application/json', 'application/json; charset=utf-8', 'application/json;charset=utf-8']);

/** The body fields of a request answered here; any other (yoga's `extensions`, or one yoga refuses with 400) goes to yoga. */
const PLAIN_FIELDS = new Set(['query', 'variables', 'operationName']);

/** A body parsed here and handed on to yoga, which then does not read the (consumed) stream again. */
export type ParsedBody = Record<string, unknown>;

/** What a request not answered from the cache goes on with: the body yoga is to be handed, and its parameters when the request has the plain shape and its answer is never cached. */
export interface NotAnswered {
  body: HandedBody;
  plain?: PlainParams;
}

/**
 * What yoga is handed instead of the consumed stream: the parsed body when it is a non-empty object
 * (as a body parser would leave it); else the bytes as a stream again, which yoga reads and refuses
 * as it would have the request's own. Not a Buffer or a string: whatwg-node asks `Object.keys` of
 * what it is handed, which lists every byte of those (~70 µs for 4 KiB).
 */
export type HandedBody = ParsedBody | Readable;

/**
 * Cached `prediction(id)` answers written by the HTTP layer itself, before yoga: on a hit yoga's
 * pipeline (a Fetch Request and Response per request, its plugins' hooks, content negotiation) cost
 * about half of the server's CPU per answer (issue 18, BENCHMARKS.md "Session 11"). Only the plain
 * shape of request is answered here: POST, `application/json`, a Content-Length of at most
 * EARLY_MAX_BYTES, no Origin (a browser's request gets yoga's CORS headers), no conditional
 * request, an Accept from CONTENT_TYPES, a body of `query` (+ `variables`, `operationName`) only.
 * Anything else, and every miss, goes to yoga, which then answers as if this did not exist:
 * the answer written here is the one the plugin would have served (same cache, same key, the same
 * bytes and headers; test/early-answer.test.ts compares them).
 */
export function createEarlyAnswer(cache: Pick<ResponseCache, 'lookup'> | undefined, onAnswer: () => void = () => undefined) {
  return {
    /** Whether this request's headers allow answering it here; if so, the caller reads its body and calls `answer`. */
    candidate(req: IncomingMessage): boolean {
      if (req.method !== 'POST') return false;
      const h = req.headers;
      if (h.origin !== undefined || h['if-none-match'] !== undefined || h['transfer-encoding'] !== undefined) return false;
      if (!JSON_TYPES.has(h['content-type'])) return false;
      if (!CONTENT_TYPES.has(h.accept)) return false;
      const length = h['content-length'];
      return length !== undefined && /^[1-9]\d{0,5}$/.test(length) && Number(length) <= EARLY_MAX_BYTES;
    },

    /** Answers the request from the cache when it holds its answer (true); otherwise says what yoga is to be handed (HandedBody). */
    answer(req: IncomingMessage, res: ServerResponse, principal: Principal, raw: Buffer): true | NotAnswered {
      let parsed: unknown;
      try {
        parsed = JSON.parse(raw.toString('utf8'));
      } catch {
        return { body: Readable.from([raw]) };
      }
      if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) return { body: Readable.from([raw]) };
      const body = parsed as ParsedBody;
      let keys = 0;
      let plain = true;
      for (const k in body) {
        keys++;
        if (!PLAIN_FIELDS.has(k)) plain = false;
      }
      if (keys === 0) return { body: Readable.from([raw]) };
      const { query, variables, operationName } = body;
      if (
        !plain ||
        typeof query !== 'string' ||
        (variables != null && (typeof variables !== 'object' || Array.isArray(variables))) ||
        (operationName != null && typeof operationName !== 'string')
      ) {
        return { body };
      }
      const found = cache?.lookup({ principal, host: req.headers.host, query, operationName, variables });
      if (found === undefined) return { body, plain: { query, variables: variables as PlainParams['variables'], operationName: operationName as PlainParams['operationName'] } };
      if (found === MISS) return { body };
      // Serialised on every hit rather than kept beside the cached result, which would double what
      // the cache holds (up to 1,024 answers) for a few µs a hit.
      writeAnswer(req, res, serialise(found));
      onAnswer();
      return true;
    },
  };
}

export type EarlyAnswer = ReturnType<typeof createEarlyAnswer>;

/**
 * Writes a query's 200 answer as yoga's adapter writes it: the content type yoga gives it for the
 * request's Accept (one of CONTENT_TYPES, which the caller checked), header names spelled and
 * ordered as yoga's. For every answer written before yoga (here and server/early-execution.ts).
 */
export function writeAnswer(req: IncomingMessage, res: ServerResponse, text: string): void {
  res.writeHead(200, { 'Content-Type': CONTENT_TYPES.get(req.headers.accept) as string, 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

/**
 * A cached answer as yoga writes it (graphql-yoga's jsonStringifyResultWithoutInternals): the
 * cache's `extensions.http` (its header bookkeeping) left out, and `extensions` with it when
 * nothing else is there. Cached answers never hold errors.
 */
function serialise(result: ExecutionResult): string {
  if (!result.extensions || !('http' in result.extensions)) return JSON.stringify(result);
  const { http: _http, ...extensions } = result.extensions;
  return JSON.stringify({ ...result, extensions: Object.keys(extensions).length ? extensions : undefined });
}
