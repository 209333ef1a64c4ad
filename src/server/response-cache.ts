import { hash } from 'node:crypto';
import { createInMemoryCache, useResponseCache } from '@graphql-yoga/plugin-response-cache';
import { type ExecutionResult, Kind, parse, type OperationDefinitionNode } from 'graphql';
import type { Plugin } from 'graphql-yoga';
import type { Principal } from '../auth/principal.js';
import type { PredictionPubSub } from '../pubsub.js';
import { isVolatile } from '../schema/volatile.js';
import type { ServerContext } from './yoga.js';

export interface ResponseCacheOptions {
  /** Every recorded change of a prediction is published here; each one drops its cached answers. */
  pubsub: PredictionPubSub;
  /**
   * Answers kept at most; least recently used go first. One is a few KB (up to 20 aliased
   * predictions, so ~60 KB at worst). @default 1024
   */
  max?: number;
  /**
   * How long an answer may be kept. Changes never wait for it (they invalidate at once); it bounds
   * what no event announces: a prediction deleted by retention. @default 60_000
   */
  ttlMs?: number;
}

export interface ResponseCache {
  plugin: Plugin;
  /**
   * The cached answer the plugin would serve this request; MISS when it holds none but would store
   * this request's; undefined when this request's answer is never cached. For answering a hit before
   * yoga (server/early-answer.ts). Same key, same entries, same invalidation as the plugin's.
   */
  lookup(request: CacheRequest): ExecutionResult | typeof MISS | undefined;
  /**
   * Drops the cached answers holding this prediction, as a local publish does. For a change this
   * process hears of without publishing it: another instance's, announced over a bus.
   */
  invalidate(id: string): void;
  /**
   * Drops every cached answer: for when changes may have been missed (a bus that reconnected
   * after announcements were lost).
   */
  clear(): void;
  /** Stops listening to the pubsub. */
  stop(): void;
}

/** ResponseCache.lookup's answer for a request whose answer the cache would keep but does not hold. */
export const MISS = Symbol('response cache miss');

/** Distinct documents judged at most; past it the table starts again (a client sending endless distinct texts). */
const MAX_JUDGED_DOCUMENTS = 1000;
/**
 * Longer documents are never cached, nor kept in that table: a `prediction(id)` read is a few
 * hundred characters, while a createVideo may inline a data-URI image of megabytes in its text.
 */
const MAX_CACHED_DOCUMENT = 8192;
/** Longer operation names are never cached, nor kept in that table (a name is not otherwise bounded). */
const MAX_CACHED_OPERATION_NAME = 256;
/**
 * Longer keys are kept as their sha256 instead (43 characters, no newline, so never equal to a plain
 * key): variables the operation does not declare are ignored by execution, may be megabytes, and would
 * otherwise be held in the key of every answer cached.
 */
const MAX_PLAIN_KEY = 1024;

/**
 * One answer's key: the cache's generation, the caller (`owner\nhost`), the operation's number and
 * the variables. Neither a Host header nor a key id holds a newline, so the fields cannot run into
 * each other; a key over MAX_PLAIN_KEY is kept as its sha256.
 */
export function cacheKey(generation: number, sessionId: string, operation: number, variables: unknown): string {
  const plain = `${generation}\n${sessionId}\n${operation}\n${JSON.stringify(variables ?? {})}`;
  return plain.length > MAX_PLAIN_KEY ? hash('sha256', plain, 'base64url') : plain;
}

/** A GraphQL request as the cache keys it. */
export interface CacheRequest {
  principal: Principal;
  /** The Host header the request came with. */
  host: string | undefined;
  query: string;
  operationName: string | null | undefined;
  variables: unknown;
}

/**
 * The caller part of a key: the owner (a key's id, '' in open mode) and the Host, whose name is in
 * kept-output links. Neither holds a newline. Undefined, so never cached, without a Host (HTTP/1.0):
 * links are then built from the socket's local address, which the key does not hold.
 */
const sessionOf = (principal: Principal, host: string | undefined) => (host ? `${principal.owner ?? ''}\n${host}` : undefined);

/**
 * Whether an operation only reads `prediction(id)` (aliases and `__typename` allowed): the one
 * answer we cache. Anything else — the `predictions` list, webhooks, mutations, subscriptions, a
 * root fragment — is never looked up nor stored.
 */
export function onlyReadsPrediction(query: string, operationName: string | null | undefined): boolean {
  let doc: ReturnType<typeof parse>;
  try {
    doc = parse(query, { noLocation: true });
  } catch {
    return false; // yoga answers it with its own error
  }
  const ops = doc.definitions.filter((d): d is OperationDefinitionNode => d.kind === Kind.OPERATION_DEFINITION);
  const op = operationName ? ops.find((o) => o.name?.value === operationName) : ops.length === 1 ? ops[0] : undefined;
  if (op?.operation !== 'query') return false;
  const fields = op.selectionSet.selections;
  return (
    fields.some((s) => s.kind === Kind.FIELD && s.name.value === 'prediction') &&
    fields.every((s) => s.kind === Kind.FIELD && (s.name.value === 'prediction' || s.name.value === '__typename'))
  );
}

/**
 * The response cache of `prediction(id)` over HTTP (@graphql-yoga/plugin-response-cache, in memory).
 *
 * - Key: the caller (owner: the API key's id, or none in open mode) and the Host the request came
 *   to (kept-output links are absolute URLs built from it unless PUBLIC_URL is set), then the
 *   operation (operation name and document, as the number the table of judged documents gave it)
 *   and the variables as JSON. A request without a Host header, and one naming the empty operation
 *   name, is never cached. Built as a plain string, synchronously, instead of the plugin's
 *   asynchronous WebCrypto digest; not hashed (unless over MAX_PLAIN_KEY), so no two requests can
 *   collide (a collision would hand one caller another's answer). A document's number is never given
 *   again, even once the table starts over, so a number always means one operation.
 * - A hit is answered in yoga's onParams, before the context is built; authentication has run
 *   before yoga (server/access.ts reads the key from the database on every request), so a revoked
 *   key is refused 401 and never reaches a cached answer.
 * - Invalidation: every publish of 'prediction:updated' (the one write-then-publish path) drops the
 *   cached answers holding that prediction. A counter of publishes is read when the request is keyed
 *   and again before storing: an answer whose execution overlapped any change is not stored, so an
 *   asynchronous store could not put back a row read before the change.
 * - Not stored: answers with errors or a null root field (unknown id, another owner's), and any
 *   answer that resolved a live prediction's queuePosition or estimates (schema/volatile.ts): those
 *   move with the clock, with other predictions and with recent run times, none of which is a
 *   recorded change of this one, so invalidating on queue moves would still serve stale estimates.
 * - Conditional requests: the plugin would answer If-None-Match with 304 from onRequest, before
 *   the caller is known to it, with the cache key as ETag; both are left off (`enabled` is false
 *   until the request is keyed; see shouldCacheResult for the headers).
 */
export function createResponseCache({ pubsub, max = 1024, ttlMs = 60_000 }: ResponseCacheOptions): ResponseCache {
  const cache = createInMemoryCache({ max });
  /** Document → operation name ('' for none) → its number in keys, or 0 when it is not cached. */
  const judged = new Map<string, Map<string, number>>();
  let judgedCount = 0;
  let lastNumber = 0;
  /** Requests that may use the cache → the publish count when they were keyed. */
  const admitted = new WeakMap<Request, { epoch: number; key: string }>();
  /** Keys onTtl refused, read by shouldCacheResult right after (same call of the plugin). */
  const refused = new Set<string>();
  let epoch = 0;
  /** Part of every key: clear() moves it, so no earlier answer is ever found again (the LRU and TTL let them go). */
  let generation = 0;

  /** The operation's number in cache keys, or 0 when its answers are never cached. */
  const operationNumber = (query: string, operationName: string | null | undefined): number => {
    if (query.length > MAX_CACHED_DOCUMENT || (operationName?.length ?? 0) > MAX_CACHED_OPERATION_NAME) return 0;
    // An empty name is a name to graphql-js, which finds no operation by it (400), but it would share
    // the unnamed entry below and be answered that operation's cached 200: never cached.
    if (operationName === '') return 0;
    const name = operationName ?? '';
    let byName = judged.get(query);
    let number = byName?.get(name);
    if (number === undefined) {
      if (judgedCount >= MAX_JUDGED_DOCUMENTS) {
        judged.clear();
        judgedCount = 0;
        byName = undefined;
      }
      number = onlyReadsPrediction(query, operationName) ? ++lastNumber : 0;
      if (!byName) {
        byName = new Map();
        judged.set(query, byName);
      }
      byName.set(name, number);
      judgedCount++;
    }
    return number;
  };

  /** The key of a caller's operation, or undefined when its answers are never cached: the plugin's and lookup's alike. */
  const keyOf = (sessionId: string | undefined, query: string, operationName: string | null | undefined, variables: unknown) => {
    if (sessionId === undefined) return undefined;
    const operation = operationNumber(query, operationName);
    return operation === 0 ? undefined : cacheKey(generation, sessionId, operation, variables);
  };

  const invalidate = (id: string) => {
    epoch++;
    cache.invalidate([{ typename: 'Prediction', id }]);
  };
  const stopTap = pubsub.tap('prediction:updated', invalidate);

  const plugin = useResponseCache<ServerContext>({
    cache,
    ttl: ttlMs,
    // Only for the key below; `undefined` keeps a request without a caller (or a Host) out of the cache.
    session: (_request, { principal, req }) => (principal ? sessionOf(principal, req.headers.host) : undefined),
    buildResponseCacheKey: ({ documentString, variableValues, operationName, sessionId, request }) => {
      const key = keyOf(sessionId ?? undefined, documentString, operationName, variableValues);
      if (key === undefined) return '';
      admitted.set(request, { epoch, key });
      return key;
    },
    enabled: (request) => admitted.has(request),
    onTtl: ({ ttl, context }) => {
      const entry = admitted.get((context as { request: Request }).request);
      if (entry && entry.epoch === epoch && !isVolatile(context)) return ttl;
      if (entry) {
        if (refused.size > 100) refused.clear(); // never grows: each is consumed at once
        refused.add(entry.key);
      }
      return 0;
    },
    shouldCacheResult: ({ cacheKey, result }) => {
      if (refused.delete(cacheKey)) return false;
      if (result.errors?.length || !result.data) return false;
      for (const value of Object.values(result.data)) if (value === null) return false;
      // The plugin then sets ETag (the cache key, the same for every version of the answer, so not
      // a validator) and Last-Modified (which would let a browser reuse a GET answer by heuristic
      // freshness after it changed) on the stored answer's headers: both are swallowed here, so a
      // cached answer goes out exactly as an uncached one.
      const headers: Record<string, string> = {};
      result.extensions = { ...result.extensions, http: { headers } };
      for (const name of ['ETag', 'Last-Modified']) Object.defineProperty(headers, name, { set: () => undefined, enumerable: false });
      return true;
    },
    // Hits and misses are not announced in the answer's extensions (the plugin does under NODE_ENV=development).
    includeExtensionMetadata: false,
    invalidateViaMutation: false,
  });

  const clear = () => {
    generation++;
    epoch++; // and an execution under way when it happens is not stored either
  };
  const lookup = ({ principal, host, query, operationName, variables }: CacheRequest): ExecutionResult | typeof MISS | undefined => {
    // As the plugin's onParams does, with its `params.query || ''` (an empty document is never cached).
    const key = keyOf(sessionOf(principal, host), query, operationName, variables);
    if (key === undefined) return undefined;
    // The in-memory cache answers synchronously (an LRU map; an expired entry reads as absent); a
    // promise would only come from another kind of cache, and is treated as a miss.
    const hit = cache.get(key);
    return hit && !('then' in hit) ? hit : MISS;
  };
  return { plugin, lookup, invalidate, clear, stop: stopTap };
}
