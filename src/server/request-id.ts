import { AsyncLocalStorage } from 'node:async_hooks';
import { randomUUID } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
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
 * The logger of the request being handled, made only if something logs (see createRequestLogging).
 * The getter alone, not the request: timers started inside a request (a poller pass it nudged) carry
 * this store along, and must not keep the request, its socket and its headers alive.
 */
const requestLogs = new AsyncLocalStorage<() => Logger>();

/**
 * The logger of the request being handled, if any: code that is handed one global logger (yoga's
 * `logging` option) logs through this, so its lines carry the request id too.
 */
export function currentLog(fallback: Logger): Logger {
  return requestLogs.getStore()?.() ?? fallback;
}

/**
 * A logger for code that is handed one logger at start but runs inside requests (the page, the
 * webhook route): each call goes to the current request's logger, so the line carries its id, or
 * to `log` outside any request.
 */
export function requestScopedLog(log: Logger): Logger {
  return new Proxy(log, {
    get(target, prop) {
      const current = currentLog(target);
      const value: unknown = Reflect.get(current, prop, current);
      return typeof value === 'function' ? value.bind(current) : value;
    },
  });
}

declare module 'node:http' {
  interface IncomingMessage {
    /** This request's logger: every line carries its `requestId` (server/request-id.ts). */
    log: Logger;
  }
}

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
 * @returns `handle(req, res, next)`: runs `next` with the request's logger (`req.log`) as the current one.
 */
export function createRequestLogging(log: Logger) {
  return <T>(req: IncomingMessage, res: ServerResponse, next: () => T): T => {
    const requestId = requestIdOf(req);
    res.setHeader(REQUEST_ID_HEADER, requestId);
    const requestLog = lazyChild(log, requestId);
    Object.defineProperty(req, 'log', { get: requestLog, configurable: true, enumerable: false });
    const path = pathOf(req.url);
    // An 'error' on the response (a write after its end, say) is logged, never left unheard: with no
    // listener it would be an uncaught exception and end the process (pino-http listened too).
    let failed = false;
    res.once('error', (err) => {
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
    return requestLogs.run(requestLog, next);
  };
}

/** `log.child({ requestId })`, made on first use: most requests never log a line of their own. */
function lazyChild(log: Logger, requestId: string): () => Logger {
  let child: Logger | undefined;
  return () => (child ??= log.child({ requestId }));
}

const pathOf = (url: string | undefined) => (url ?? '/').split('?', 1)[0] ?? '/';
