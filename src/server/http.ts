import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import send from 'send';
import { readBody } from '../http-helpers.js';
import type { Logger } from '../log.js';
import type { MediaStore } from '../storage/media.js';
import type { SandboxUpstream } from '../upstream/sandbox.js';
import type { AccessGate } from './access.js';
import { EARLY_MAX_BYTES, type EarlyAnswer } from './early-answer.js';
import type { EarlyExecution } from './early-execution.js';
import { sendJson } from './json.js';
import type { WebPage } from './page.js';
import { createRequestLogging } from './request-id.js';
import { WEBHOOK_PREFIX } from './webhooks.js';
import type { Yoga } from './yoga.js';

export interface HttpDeps {
  yoga: Yoga;
  log: Logger;
  /** Mounted under /sandbox when the embedded upstream is in use. */
  sandbox?: SandboxUpstream;
  /** Kept outputs, served under /media with Range support. */
  media?: MediaStore;
  onWebhook?: (req: IncomingMessage, res: ServerResponse, url: URL) => void;
  /** What keeps the gateway from doing its work (storage, upstream account, poller); empty when ready. */
  notReady: () => string[] | Promise<string[]>;
  /** The live web page at `/` and its assets. */
  page?: WebPage;
  /** Browser-origin screening for every route and API keys for /graphql. */
  access: AccessGate;
  /** GET /metrics (Prometheus), which checks its own credentials. */
  metrics?: (req: IncomingMessage, res: ServerResponse) => Promise<void>;
  /** Reads plain bodies before yoga: cached `prediction(id)` answers written there (with the response cache), and the body for `execution`. */
  early?: EarlyAnswer;
  /** Plain queries and mutations executed outside yoga's HTTP pipeline (its plugin must be in yoga's). */
  execution?: EarlyExecution;
}

const MEDIA_PREFIX = '/media/';

export const SANDBOX_PREFIX = '/sandbox';

/**
 * An idle keep-alive connection is closed after 65 s, not Node's default 5 s. A client that sends
 * its next request just as the server closes the connection gets a reset (fetch: "other side
 * closed"), and a POST is not retried. Clients and proxies avoid that by closing first, which they
 * can only do if their own idle limit is shorter than the server's: nginx keeps upstream connections
 * 60 s, and undici follows the server's Keep-Alive hint but misses it when its event loop is busy
 * (a 20 MiB body being parsed). headersTimeout must stay above keepAliveTimeout.
 */
const SERVER_OPTIONS = { keepAliveTimeout: 65_000, headersTimeout: 66_000 };

/** The one HTTP server: /graphql (yoga), /healthz, and /sandbox when mounted. */
export function createHttpServer({ yoga, log, sandbox, media, onWebhook, page, access, notReady, metrics, early, execution }: HttpDeps): Server {
  // Every request gets an id (x-request-id, echoed) and a logger that puts it on each of its lines.
  const withRequestLog = createRequestLogging(log);
  return createServer(SERVER_OPTIONS, (req, res) => {
    withRequestLog(req, res, () => route(req, res)).catch((err) => {
      // The path only: a query string may carry a secret (a webhook token, say).
      req.log.error({ err, path: (req.url ?? '/').split('?', 1)[0] }, 'request failed');
      if (!res.headersSent) res.writeHead(500, { 'content-type': 'text/plain' });
      res.end('internal error');
    });
  });

  async function route(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = req.url ?? '/';
    const [pathname = path] = path.split('?', 1); // split always yields one element
    if (pathname === '/healthz') {
      sendJson(res, 200, { status: 'ok' });
      return;
    }
    if (pathname === '/readyz') {
      // Liveness stays /healthz; this says whether work can be done, and if not, why.
      const reasons = await notReady();
      sendJson(res, reasons.length ? 503 : 200, reasons.length ? { status: 'unavailable', reasons } : { status: 'ready' }, { 'cache-control': 'no-store' });
      return;
    }
    if (!access.screen(req, res, pathname)) return;
    if (metrics && pathname === '/metrics') return metrics(req, res);
    if (sandbox && (pathname === SANDBOX_PREFIX || pathname.startsWith(`${SANDBOX_PREFIX}/`))) {
      const mountUrl = `http://${req.headers.host ?? 'localhost'}${SANDBOX_PREFIX}`;
      return sandbox.handle(req, res, path.slice(SANDBOX_PREFIX.length) || '/', mountUrl);
    }
    if (media && pathname.startsWith(MEDIA_PREFIX) && (req.method === 'GET' || req.method === 'HEAD')) {
      const name = pathname.slice(MEDIA_PREFIX.length);
      if (!media.has(name)) return notFound(res);
      // Relative to `root`: send's dotfile rule then judges only the name, not a DATA_DIR like ~/.cinegraph.
      // Names are content hashes, so a file never changes: cache it for good.
      send(req, name, { root: media.dir, acceptRanges: true, immutable: true, maxAge: '365d' }).pipe(res);
      return;
    }
    if (onWebhook && pathname.startsWith(WEBHOOK_PREFIX)) return onWebhook(req, res, new URL(path, 'http://gateway'));
    if (page?.handles(pathname)) return page.serve(req, res, pathname);
    if (pathname === yoga.graphqlEndpoint) {
      const caller = access.graphql(req, res);
      if (!caller) return;
      // Only at exactly the endpoint: yoga's own request hooks read the URL (its health check answers
      // any URL ending in /health, a query string is yoga's to parse), so any other URL is theirs.
      if (early && caller.principal && req.url === yoga.graphqlEndpoint && early.candidate(req)) {
        let raw: Buffer;
        try {
          // At most EARLY_MAX_BYTES: candidate() checked Content-Length, and Node's parser reads no further.
          raw = await readBody(req, EARLY_MAX_BYTES);
        } catch {
          // The client went away before sending its whole body: there is no one to answer.
          res.destroy();
          return;
        }
        const answered = early.answer(req, res, caller.principal, raw);
        if (answered === true) return;
        if (execution && answered.plain) {
          const executed = execution.execute(yoga, req, res, caller.principal, answered.plain);
          if (executed === true || (executed !== false && (await executed))) return;
        }
        // The stream is consumed: yoga's adapter takes a body already read from `req.body`, as it
        // would from a body parser's.
        (req as IncomingMessage & { body?: unknown }).body = answered.body;
      }
      return yoga(req, res, caller);
    }
    notFound(res);
  }
}

function notFound(res: ServerResponse): void {
  sendJson(res, 404, { error: 'not found' });
}
