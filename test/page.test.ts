import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, test } from 'vitest';
import { createLogger } from '../src/log.js';
import { createWebPage } from '../src/server/page.js';
import { createRequestLogging } from '../src/server/request-id.js';
import { startApp, tempDir } from './helpers/app.js';
import { listen } from './helpers/listen.js';
import { must } from './helpers/must.js';

describe('the web page assets at /, /app.js, /app.css', () => {
  test('served from this origin with a same-origin CSP, the script bundled with graphql-ws inside, ETags answered with 304', async () => {
    const { url } = await startApp();
    const page = await fetch(`${url}/`);
    expect(page.status).toBe(200);
    expect(page.headers.get('content-type')).toBe('text/html; charset=utf-8');
    const csp = page.headers.get('content-security-policy') ?? '';
    expect(csp).toContain("default-src 'self'");
    expect(csp).toContain("connect-src 'self'");
    expect(csp).toContain("script-src 'self'");
    const html = await page.text();
    expect(html).toContain('<script type="module" src="/app.js"></script>');
    // Nothing in the page points at another origin.
    expect(html).not.toMatch(/(src|href)="(https?:)?\/\//);

    const script = await fetch(`${url}/app.js`);
    expect(script.status).toBe(200);
    expect(script.headers.get('content-type')).toBe('text/javascript; charset=utf-8');
    const js = await script.text();
    expect(js).toContain('graphql-transport-ws'); // graphql-ws's subprotocol: the client is bundled in
    expect(js).not.toMatch(/\bimport\s*["'{*]/); // one self-contained file, no bare imports left
    expect(js).toContain('IMAGE_ASPECT_RATIO'); // the shared image rules came along

    const etag = must(script.headers.get('etag'));
    const again = await fetch(`${url}/app.js`, { headers: { 'if-none-match': etag } });
    expect(again.status).toBe(304);
    expect(await again.text()).toBe('');

    const css = await fetch(`${url}/app.css`);
    expect([css.status, css.headers.get('content-type')]).toEqual([200, 'text/css; charset=utf-8']);
  });

  test('HEAD answers headers only; other methods get 405; unknown paths stay 404', async () => {
    const { url } = await startApp();
    const head = await fetch(`${url}/app.js`, { method: 'HEAD' });
    expect(head.status).toBe(200);
    expect(Number(head.headers.get('content-length'))).toBeGreaterThan(1000);
    expect(await head.text()).toBe('');
    const post = await fetch(`${url}/`, { method: 'POST', body: 'x' });
    expect(post.status).toBe(405);
    expect(post.headers.get('allow')).toBe('GET, HEAD');
    expect((await fetch(`${url}/app.map`)).status).toBe(404);
    expect((await fetch(`${url}/index.html`)).status).toBe(404);
  });

  test('a script that does not build answers 500 and is tried again on the next request', async () => {
    const dir = tempDir();
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, 'main.ts'), 'export const broken = ;');
    const page = createWebPage({ dir });
    // As createHttpServer hands it requests: with their logger (req.log), which the failure is logged through.
    const logged = createRequestLogging(createLogger('silent'));
    const url = await listen((req, res) => void logged(req, res, () => page.serve(req, res, new URL(must(req.url), 'http://x').pathname)));
    const first = await fetch(`${url}/app.js`);
    expect(first.status).toBe(500);
    expect(await first.text()).toBe('the web page could not be built; see the server log');
    writeFileSync(join(dir, 'main.ts'), 'document.title = "fixed";');
    const second = await fetch(`${url}/app.js`);
    expect(second.status).toBe(200);
    expect(await second.text()).toContain('fixed');
  });
});
