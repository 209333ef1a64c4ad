import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';
import { sendJson } from './json.js';

const WEB_DIR = join(dirname(fileURLToPath(import.meta.url)), '../../web');

interface Asset {
  body: Buffer;
  type: string;
  etag: string;
}

/**
 * The live web page at `/` (web/index.html, web/style.css, web/main.ts). The script is bundled
 * from npm packages with esbuild when it is first asked for, in memory, so a clean `npm ci && npm
 * start` serves it with no build step and an edit to web/ shows on the next start.
 */
export interface WebPage {
  /** True when the path is one of the page's own. */
  handles(pathname: string): boolean;
  serve(req: IncomingMessage, res: ServerResponse, pathname: string): Promise<void>;
}

/**
 * Everything the page loads comes from this origin; the video may come from upstream's URL only
 * when the gateway kept no copy (KEEP_OUTPUTS=false), hence media-src https:.
 */
const CONTENT_SECURITY_POLICY = [
  "default-src 'self'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self' data: blob:",
  "media-src 'self' https:",
  "connect-src 'self'",
  "object-src 'none'",
  "base-uri 'none'",
  "form-action 'self'",
  "frame-ancestors 'none'",
].join('; ');

export function createWebPage({ dir = WEB_DIR }: { dir?: string } = {}): WebPage {
  const loaders: Record<string, () => Promise<Asset>> = {
    '/': () => file('index.html', 'text/html; charset=utf-8'),
    '/app.css': () => file('style.css', 'text/css; charset=utf-8'),
    '/app.js': bundle,
  };
  const cache = new Map<string, Promise<Asset>>();

  async function file(name: string, type: string): Promise<Asset> {
    return asset(await readFile(join(dir, name)), type);
  }

  async function bundle(): Promise<Asset> {
    const result = await build({
      entryPoints: [join(dir, 'main.ts')],
      bundle: true,
      write: false,
      format: 'esm',
      platform: 'browser',
      target: 'es2022',
      minify: true,
      legalComments: 'none',
      logLevel: 'silent',
    });
    const [out] = result.outputFiles;
    if (!out) throw new Error('esbuild wrote no output file');
    return asset(Buffer.from(out.contents), 'text/javascript; charset=utf-8');
  }

  function load(pathname: string): Promise<Asset> {
    let pending = cache.get(pathname);
    if (!pending) {
      const loader = loaders[pathname];
      if (!loader) return Promise.reject(new Error(`no web page asset at ${pathname}`));
      pending = loader();
      // A failed build is not remembered: the next request tries again.
      pending.catch(() => cache.delete(pathname));
      cache.set(pathname, pending);
    }
    return pending;
  }

  return {
    handles: (pathname) => Object.hasOwn(loaders, pathname),
    async serve(req, res, pathname) {
      if (req.method !== 'GET' && req.method !== 'HEAD') {
        sendJson(res, 405, { error: 'method not allowed' }, { allow: 'GET, HEAD' });
        return;
      }
      let asset: Asset;
      try {
        asset = await load(pathname);
      } catch (err) {
        req.log.error({ err, pathname }, 'web page asset failed to build');
        res.writeHead(500, { 'content-type': 'text/plain' }).end('the web page could not be built; see the server log');
        return;
      }
      const headers = {
        'content-type': asset.type,
        etag: asset.etag,
        // Revalidated on every load (cheap with the ETag): a restart with a changed page shows at once.
        'cache-control': 'no-cache',
        'x-content-type-options': 'nosniff',
        'referrer-policy': 'no-referrer',
        ...(pathname === '/' ? { 'content-security-policy': CONTENT_SECURITY_POLICY } : {}),
      };
      if (req.headers['if-none-match'] === asset.etag) {
        res.writeHead(304, headers).end();
        return;
      }
      res.writeHead(200, { ...headers, 'content-length': asset.body.length });
      res.end(req.method === 'HEAD' ? undefined : asset.body);
    },
  };
}

function asset(body: Buffer, type: string): Asset {
  return { body, type, etag: `"${createHash('sha256').update(body).digest('base64url').slice(0, 27)}"` };
}
