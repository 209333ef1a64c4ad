import { AsyncLocalStorage } from 'node:async_hooks';
import { randomUUID } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { pinoHttp } from 'pino-http';
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

const requestLogs = new AsyncLocalStorage<Logger>();

/**
 * The logger of the request being handled, if any: code that is handed one global logger (yoga's
 * `logging` option) logs through this, so its lines carry the request id too.
 */
export function currentLog(fallback: Logger): Logger {
  return requestLogs.getStore() ?? fallback;
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

/**
 * Per-request logging through pino-http: each request gets an id (a sane incoming `x-request-id`,
 * else a UUID), echoed on the response, and a child logger that puts `requestId` on every line;
 * its completion is logged with status and duration. Paths only, never query strings (a webhook
 * token or a GET operation's variables may be there); headers are not logged.
 * @returns `handle(req, res, next)`: runs `next` with the request's logger as the current one.
 */
export function createRequestLogging(log: Logger) {
  const httpLog = pinoHttp({
    logger: log,
    genReqId: (req, res) => {
      const id = requestIdOf(req);
      res.setHeader(REQUEST_ID_HEADER, id);
      return id;
    },
    customAttributeKeys: { reqId: 'requestId' },
    // req.log carries the request id only; the full request is on the completion line.
    quietReqLogger: true,
    autoLogging: { ignore: (req) => QUIET_PATHS.has(pathOf(req.url)) },
    wrapSerializers: false,
    serializers: {
      req: (req: IncomingMessage) => ({ method: req.method, path: pathOf(req.url) }),
      res: (res: ServerResponse) => ({ statusCode: res.statusCode }),
    },
    customLogLevel: (_req, res, err) => (err || res.statusCode >= 500 ? 'error' : 'info'),
  });
  return <T>(req: IncomingMessage, res: ServerResponse, next: (log: Logger) => T): T => {
    httpLog(req, res);
    return requestLogs.run(req.log, () => next(req.log));
  };
}

const pathOf = (url: string | undefined) => (url ?? '/').split('?', 1)[0] ?? '/';
