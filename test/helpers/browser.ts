import { copyFileSync, existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium, type BrowserContext, type Page } from 'playwright-core';
import { tempDir } from './app.js';
import { onDispose } from './dispose.js';

/** Debian's chromium (`apt-get install chromium`; .ci/run installs it). CHROMIUM_PATH overrides. */
export const CHROMIUM_PATH = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';

const root = fileURLToPath(new URL('../..', import.meta.url));
export const ARTIFACTS_DIR = join(root, 'test-artifacts');

/**
 * Headless Chromium with a fresh profile, closed after the test. A missing browser is a failure,
 * never a skip: a page test that quietly does not run proves nothing.
 */
export async function launchChromium(viewport = { width: 1280, height: 900 }): Promise<{ context: BrowserContext; page: Page }> {
  if (!existsSync(CHROMIUM_PATH)) {
    throw new Error(`Chromium not found at ${CHROMIUM_PATH}: install Debian's chromium (apt-get install -y chromium) or set CHROMIUM_PATH`);
  }
  const context = await chromium.launchPersistentContext(tempDir('cinegraph-chromium-'), {
    executablePath: CHROMIUM_PATH,
    headless: true,
    viewport,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
  onDispose(() => context.close());
  // playwright-core waits forever by default; a page that never renders must fail, not hang.
  context.setDefaultTimeout(15_000);
  const page = context.pages()[0] ?? (await context.newPage());
  return { context, page };
}

/**
 * Lets through only requests to `origin` (blob: and data: URLs made by the page itself stay in the
 * browser); anything else is aborted and recorded, over HTTP and WebSocket alike. Also records the
 * same-origin sockets and every message the page sends on them.
 */
export async function fenceToOrigin(
  context: BrowserContext,
  origin: string,
): Promise<{ outside: string[]; sockets: string[]; socketMessages: string[] }> {
  const outside: string[] = [];
  const sockets: string[] = [];
  const socketMessages: string[] = [];
  const local = (url: string) => url.startsWith('data:') || new URL(url).origin === origin;
  await context.route(
    () => true,
    (route) => {
      const url = route.request().url();
      if (local(url)) return route.fallback();
      outside.push(url);
      return route.abort('blockedbyclient');
    },
  );
  const wsOrigin = origin.replace(/^http/, 'ws');
  await context.routeWebSocket(
    () => true,
    (ws) => {
      if (new URL(ws.url()).origin === wsOrigin) {
        sockets.push(ws.url());
        const server = ws.connectToServer();
        // Forwarded by hand so what the page sends (connection_init, subscribe) can be checked.
        ws.onMessage((message) => {
          socketMessages.push(String(message));
          server.send(message);
        });
      } else {
        outside.push(ws.url());
        void ws.close();
      }
    },
  );
  // Also every request the page saw, in case one bypassed routing (a worker, a preload).
  context.on('request', (req) => {
    if (!local(req.url()) && !outside.includes(req.url())) outside.push(req.url());
  });
  return { outside, sockets, socketMessages };
}

/**
 * Writes test-artifacts/NAME.png; with UPDATE_SCREENSHOTS=1 also docs/NAME.png, the README's copy
 * (kept out of ordinary runs so a test never rewrites committed files).
 */
export async function screenshot(page: Page, name: string, fullPage = true): Promise<string> {
  mkdirSync(ARTIFACTS_DIR, { recursive: true });
  const path = join(ARTIFACTS_DIR, `${name}.png`);
  await page.screenshot({ path, fullPage });
  if (process.env.UPDATE_SCREENSHOTS === '1') copyFileSync(path, join(root, 'docs', `${name}.png`));
  return path;
}
