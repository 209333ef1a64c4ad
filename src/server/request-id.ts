import { AsyncLocalStorage } from 'node:async_hooks';
import { randomUUID } from 'node:crypto';
import { IncomingMessage, type ServerResponse } from 'node:http';
import { handleStreamOrSingleExecutionResult, type Plugin } from 'graphql-yoga';
import type { Logger } from '../log.js';

export const REQUEST_ID_HEADER = 'x-request-id';

/**
 * An incoming id is kept only when it is short and made of characters that cannot break a log
 * line or a header (no spaces, quotes or control characters); anything else gets a fresh UUID, so
 * a client cannot forge log structure or flood lines with a huge id.
 */
const SANE_REQUEST_ID = /^[A-Za-z0-9._:/+=@-]{1,128}$/;

export function requestIdOf(req: IncomingMessage): string {
  const incoming = req.headers[REQUEST_ID_HEADER];
  return typeof incoming === 'string' && SANE_REQUEST_ID.test(incoming) ? incoming : randomUUID();
}

/** Routes polled by machines (probes, scrapers): their completions are not logged at info. */
const QUIET_PATHS = new Set(['/healthz', '/readyz', '/metrics']);

/**
 * The logger of the request being handled, while debug lines are wanted (see createRequestLogging).
 * The getter alone, not the request: timers started inside a request (a poller pass it nudged) carry
 * this store along, and must not keep the request, its socket and its headers alive.
 */
const requestLogs = new AsyncLocalStorage<() => Logger>();

/** Errors of an operation's results → the logger of the request they came from (see useErrorRequestLog). */
const errorLogs = new WeakMap<object, () => Logger>();

/**
 * The logger for a line of code that is handed one global logger (yoga's `logging` option): the
 * logger of the request that `subject` (the error yoga logs) came from, else of the request being
 * handled at debug level, else `fallback`. So yoga's lines carry the request id: its error lines for
 * errors an operation's resolvers raised (tagged by useErrorRequestLog) at every level, and at debug
 * every line, through AsyncLocalStorage.
 */
export function logFor(fallback: Logger, subject?: unknown): Logger {
  const tagged = typeof subject === 'object' && subject !== null ? errorLogs.get(subject) : undefined;
  return (tagged ?? requestLogs.getStore())?.() ?? fallback;
}

/**
 * Tags each error of an operation's results with its request's logger, for yoga: it logs an
 * unexpected error when it masks it, with the error alone (see logFor). Masking runs after every
 * plugin of ours, so the errors tagged here are the very objects it logs. Queries and mutations,
 * and subscriptions over SSE (each event's errors, and a source stream that throws); a graphql-ws
 * socket's operations belong to no request logger (their `req` is the upgrade's headers only).
 */
export function useErrorRequestLog(): Plugin<{ req?: IncomingMessage }> {
  const loggerOf = (context: { req?: IncomingMessage }) => (context.req as RequestWithLog | undefined)?.[REQUEST_LOG];
  const tagErrorsOf = (made: () => Logger) => ({ result }: { result: { errors?: readonly object[] } }) => {
    for (const error of result.errors ?? []) errorLogs.set(error, made);
  };
  return {
    onExecute({ args }) {
      const made = loggerOf(args.contextValue);
      if (!made) return;
      return { onExecuteDone: (payload) => handleStreamOrSingleExecutionResult(payload, tagErrorsOf(made)) };
    },
    onSubscribe({ args }) {
      const made = loggerOf(args.contextValue);
      if (!made) return;
      return {
        onSubscribeResult: (payload) => handleStreamOrSingleExecutionResult(payload, tagErrorsOf(made)),
        onSubscribeError: ({ error }) => {
          if (typeof error === 'object' && error !== null) errorLogs.set(error, made);
        },
      };
    },
  };
}

declare module 'node:http' {
  interface IncomingMessage {
    /** This request's logger: every line carries its `requestId` (server/request-id.ts). */
    log: Logger;
  }
}

const REQUEST_LOG = Symbol('cinegraph.requestLog');
type RequestWithLog = IncomingMessage & { [REQUEST_LOG]?: () => Logger };
/**
 * `req.log` is one getter on the prototype, reading the request's own lazy logger from a symbol
 * field. Defining a getter on each request instead (Object.defineProperty, a new closure each time)
 * cost ~8% of a cached `prediction(id)`'s server CPU (issue 18; 182 → 168 µs, 3 runs each), more than
 * its own share of the profile: it changes the request object's shape, and later reads of it (Node's
 * HTTP internals, yoga's adapter) pay too. There is no setter: a library that assigns `req.log`
 * (pino-http does) throws at once instead of being silently ignored.
 */
Object.defineProperty(IncomingMessage.prototype, 'log', {
  get(this: RequestWithLog): Logger {
    const made = this[REQUEST_LOG];
    if (!made) throw new Error('req.log is only set on requests handled by createRequestLogging');
    return made();
  },
  configurable: true,
  enumerable: false,
});

/** The level of a request's completion line. */
const completionLevel = (statusCode: number) => (statusCode >= 500 ? 'error' : 'info');

/**
 * Per-request logging: each request gets an id (a sane incoming `x-request-id`, else a UUID),
 * echoed on the response, and a logger that puts `requestId` on every line; its completion is
 * logged with method, path, status and duration. Paths only, never query strings (a webhook token
 * or a GET operation's variables may be there); headers are not logged.
 *
 * Written here rather than through pino-http (which it replaced; same lines, same fields) because
 * pino-http builds two child loggers per request, serialising the request into one of them, even
 * when nothing is ever logged: 10% of a cached `prediction(id)`'s CPU (issue 18). Here the child
 * is made on the first line the request logs, and the completion line costs nothing unless its
 * level is enabled.
 * @returns `handle(req, res, next)`: gives the request its logger (`req.log`) and runs `next`; at debug level
 * also as the current one (logFor).
 */
export function createRequestLogging(log: Logger) {
  return <T>(req: IncomingMessage, res: ServerResponse, next: () => T): T => {
    const requestId = requestIdOf(req);
    res.setHeader(REQUEST_ID_HEADER, requestId);
    const requestLog = lazyChild(log, requestId);
    (req as RequestWithLog)[REQUEST_LOG] = requestLog;
    const path = pathOf(req.url);
    // An 'error' on the response (a write after its end, say) is logged, never left unheard: with no
    // listener it would be an uncaught exception and end the process (pino-http listened too). `on`,
    // not `once`: each late write emits its own 'error', and a second one with no listener left
    // would end the process all the same.
    let failed = false;
    res.on('error', (err) => {
      failed = true;
      requestLog().error({ req: { method: req.method, path }, res: { statusCode: res.statusCode }, err }, 'request errored');
    });
    if (!QUIET_PATHS.has(path) && log.isLevelEnabled('error')) {
      const started = Date.now();
      // 'close' comes once, after the response finished or when the connection went first.
      res.once('close', () => {
        if (failed) return; // its line is written
        const level = completionLevel(res.statusCode);
        if (!log.isLevelEnabled(level)) return;
        const fields = { req: { method: req.method, path }, res: { statusCode: res.statusCode }, responseTime: Date.now() - started };
        if (level === 'error') requestLog().error({ ...fields, err: new Error(`failed with status code ${res.statusCode}`) }, 'request errored');
        else requestLog().info(fields, !req.readableAborted && res.writableEnded ? 'request completed' : 'request aborted');
      });
    }
    // Only at debug, where yoga logs several lines per request: on Node 20 an AsyncLocalStorage in use
    // installs a promise hook that runs for every promise the process makes, ~9% of an uncached
    // `prediction(id)`'s server CPU (issue 18; 277 → 252 µs, 3 runs each). Below debug yoga logs only
    // errors, and logFor finds their request without it.
    return log.isLevelEnabled('debug') ? requestLogs.run(requestLog, next) : next();
  };
}

/** `log.child({ requestId })`, made on first use: most requests never log a line of their own. */
function lazyChild(log: Logger, requestId: string): () => Logger {
  let child: Logger | undefined;
  return () => (child ??= log.child({ requestId }));
}

const pathOf = (url: string | undefined) => (url ?? '/').split('?', 1)[0] ?? '/';
