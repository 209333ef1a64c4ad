import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import send from 'send';
import type { Logger } from '../log.js';
import type { MediaStore } from '../storage/media.js';
import type { SandboxUpstream } from '../upstream/sandbox.js';
import type { WebPage } from './page.js';
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
  /** The live web page at `/` and its assets. */
  page?: WebPage;
}

const MEDIA_PREFIX = '/media/';

export const SANDBOX_PREFIX = '/sandbox';

/** The one HTTP server: /graphql (yoga), /healthz, and /sandbox when mounted. */
export function createHttpServer({ yoga, log, sandbox, media, onWebhook, page }: HttpDeps): Server {
  return createServer((req, res) => {
    route(req, res).catch((err) => {
      log.error({ err, url: req.url }, 'request failed');
      if (!res.headersSent) res.writeHead(500, { 'content-type': 'text/plain' });
      res.end('internal error');
    });
  });

  async function route(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = req.url ?? '/';
    const pathname = path.split('?', 1)[0]!;
    if (pathname === '/healthz') {
      res.writeHead(200, { 'content-type': 'application/json' }).end('{"status":"ok"}');
      return;
    }
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
    if (pathname === yoga.graphqlEndpoint) return yoga(req, res);
    notFound(res);
  }
}

function notFound(res: ServerResponse): void {
  res.writeHead(404, { 'content-type': 'application/json' }).end('{"error":"not found"}');
}
