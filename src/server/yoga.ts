import { costLimitPlugin } from '@escape.tech/graphql-armor-cost-limit';
import { maxAliasesPlugin } from '@escape.tech/graphql-armor-max-aliases';
import { maxDepthPlugin } from '@escape.tech/graphql-armor-max-depth';
import { maxTokensPlugin } from '@escape.tech/graphql-armor-max-tokens';
import type { GraphQLError, GraphQLSchema } from 'graphql';
import { createYoga, type Plugin, type YogaServerInstance } from 'graphql-yoga';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { stdSerializers } from 'pino';
import type { Logger } from '../log.js';
import type { Principal } from '../auth/principal.js';
import type { Context } from '../schema/context.js';
import { MAX_REQUEST_BYTES } from '../validation/limits.js';
import { graphiqlOptions, renderLocalGraphiQL, type GraphiqlSettings } from './graphiql.js';
import { useBrowserRules } from './browser.js';
import { logFor, useErrorRequestLog } from './request-id.js';
import { useResultCostLimit } from './result-cost.js';
import { useBodyLimit } from './body-limit.js';
import { useSharedSubscriptionExecution } from './shared-execution.js';

export interface ServerContext {
  req: IncomingMessage;
  res: ServerResponse;
  /** Who is calling, established by the HTTP layer before yoga sees the request. */
  principal?: Principal;
}

export type Yoga = YogaServerInstance<ServerContext, Context>;

/** Tags the armor plugins' rejections so clients can tell "too complex" from other validation errors. */
const tagTooComplex = [
  (_ctx: unknown, err: GraphQLError) => void Object.assign(err.extensions, { code: 'QUERY_TOO_COMPLEX', http: { status: 400 } }),
];

/**
 * Limits on what one operation may ask for. Our deepest honest query (a connection's node input)
 * is 5 levels. The depth and cost limits skip `__schema` introspection, so GraphiQL and codegen
 * keep working; aliases and tokens are limited for every operation.
 */
export const operationLimits = { maxDepth: 10, maxAliases: 20, maxCost: 5000, maxTokens: 2000 };

/**
 * Yoga answers a malformed or invalid operation with 400 only to clients that accept
 * application/graphql-response+json, and with 200 under plain application/json (the spec's legacy
 * leniency). We promise every client a 4xx for a request it got wrong, so the statuses yoga
 * computes are applied whatever the Accept header. Request errors graphql-js leaves without a
 * code (variables of the wrong type, a missing required field) are the client's: BAD_USER_INPUT.
 */
const useRequestErrorStatus: Plugin = {
  onResultProcess({ result }) {
    for (const r of Array.isArray(result) ? result : [result]) {
      const requestError = !('data' in r);
      for (const e of ('errors' in r && r.errors) || []) {
        const http = e.extensions?.http as { spec?: boolean } | undefined;
        if (http?.spec) http.spec = false;
        if (requestError && e.extensions && e.extensions.code === undefined) {
          Object.assign(e.extensions, { code: 'BAD_USER_INPUT', http: { status: 400 } });
        }
      }
    }
  },
};

/**
 * yoga's arguments as a log line can hold them: an error's message and stack are not enumerable, so
 * a plain Error would be written as `{}` (and a GraphQLError without its stack); pino's error
 * serializer writes type, message, stack and the error's own fields (a GraphQLError's path).
 */
const loggable = (args: unknown[]) => args.map((a) => (a instanceof Error ? stdSerializers.err(a) : a));

/**
 * What yoga hands the context factory: a Fetch Request over HTTP; over graphql-ws, the upgrade
 * request's URL and headers (ws.ts lets the IncomingMessage itself go at connect); for an operation
 * the HTTP layer executes itself, the IncomingMessage and its URL's origin.
 */
export type InitialContext = {
  request?: Request;
  req?: Pick<IncomingMessage, 'url' | 'headers'>;
  principal?: Principal;
  /** The origin of the request's URL as yoga would see it, when the HTTP layer executes the operation itself (server/early-execution.ts). */
  origin?: string;
};

export function createGraphqlHandler(
  schema: GraphQLSchema,
  context: (initial: InitialContext) => Context,
  log: Logger,
  graphiql: GraphiqlSettings = { apiKeys: false },
  /** The response cache of `prediction(id)` (server/response-cache.ts), when there is one. */
  responseCache?: Plugin,
  /** Answers requests whose operation the HTTP layer executed (server/early-execution.ts). */
  earlyExecution?: Plugin<Record<string, unknown>, ServerContext>,
): Yoga {
  return createYoga<ServerContext, Context>({
    schema,
    context,
    graphqlEndpoint: '/graphql',
    landingPage: false,
    // The HTTP layer has already refused foreign origins (403 FORBIDDEN_ORIGIN); what reaches yoga
    // with an Origin is allowed, and gets CORS headers for it. No cookies: keys travel in headers.
    cors: (request) => {
      const origin = request.headers.get('origin');
      return origin ? { origin: [origin], credentials: false, allowedHeaders: ['authorization', 'content-type', 'accept', 'x-graphql-yoga-csrf'] } : false;
    },
    // Replaced by useBodyLimit (last in `plugins`): the same 413, without a stream per request.
    maxRequestBodySize: false,
    plugins: [
      useRequestErrorStatus,
      useErrorRequestLog(),
      useSharedSubscriptionExecution(),
      ...useBrowserRules(),
      useResultCostLimit(),
      maxDepthPlugin({ n: operationLimits.maxDepth, exposeLimits: true, onReject: tagTooComplex }),
      maxAliasesPlugin({ n: operationLimits.maxAliases, exposeLimits: true, onReject: tagTooComplex }),
      costLimitPlugin({ maxCost: operationLimits.maxCost, exposeLimits: true, onReject: tagTooComplex }),
      maxTokensPlugin({ n: operationLimits.maxTokens, exposeLimits: true, onReject: tagTooComplex }),
      // After the request checks: a hit is answered from onParams, before parse and validation.
      ...(responseCache ? [responseCache] : []),
      ...(earlyExecution ? [earlyExecution] : []),
      // Last: after every request parser has registered, like yoga's own limit it replaces.
      useBodyLimit(MAX_REQUEST_BYTES),
    ],
    // Rendered from the installed package (src/server/graphiql.ts), so it works offline.
    graphiql: () => graphiqlOptions(graphiql),
    renderGraphiQL: renderLocalGraphiQL,
    // Through the logger of the request a line is about, so yoga's lines carry its id. The level is
    // asked first: yoga logs at debug several times per request, and the request's logger is only
    // made for a line that will be written (server/request-id.ts).
    logging: {
      debug: (...args) => log.isLevelEnabled('debug') && logFor(log).debug({ args: loggable(args) }, 'yoga'),
      info: (...args) => log.isLevelEnabled('info') && logFor(log).info({ args: loggable(args) }, 'yoga'),
      warn: (...args) => log.isLevelEnabled('warn') && logFor(log).warn({ args: loggable(args) }, 'yoga'),
      error: (...args) => log.isLevelEnabled('error') && logFor(log, args[0]).error({ args: loggable(args) }, 'yoga'),
    },
  });
}
