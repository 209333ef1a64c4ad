import { copyFileSync, existsSync, mkdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium, type BrowserContext, type Page } from 'playwright-core';
import { PNG } from 'pngjs';
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
 * (kept out of ordinary runs so a test never rewrites committed files). Each file written is read
 * back and must decode as a PNG of the viewport's size (at least, for a full page), or the test fails.
 */
export async function screenshot(page: Page, name: string, fullPage = true): Promise<string> {
  mkdirSync(ARTIFACTS_DIR, { recursive: true });
  const path = join(ARTIFACTS_DIR, `${name}.png`);
  await page.screenshot({ path, fullPage });
  const viewport = page.viewportSize();
  if (!viewport) throw new Error('the page has no viewport size');
  const written = [path];
  if (process.env.UPDATE_SCREENSHOTS === '1') {
    const doc = join(root, 'docs', `${name}.png`);
    copyFileSync(path, doc);
    written.push(doc);
  }
  for (const file of written) checkPng(file, viewport, fullPage);
  return path;
}

/** Throws unless `file` exists, is not empty and decodes as a PNG of the viewport's size (or larger, for a full page). */
export function checkPng(file: string, viewport: { width: number; height: number }, fullPage: boolean): void {
  if (!existsSync(file) || statSync(file).size === 0) throw new Error(`screenshot ${file} is missing or empty`);
  const { width, height } = PNG.sync.read(readFileSync(file)); // throws on a file that is not a PNG
  // A full page may be larger than the viewport, never smaller; a viewport shot is exactly its size.
  const fits = fullPage ? width >= viewport.width && height >= viewport.height : width === viewport.width && height === viewport.height;
  if (!fits) {
    throw new Error(`screenshot ${file} is ${width}×${height}; the viewport is ${viewport.width}×${viewport.height}${fullPage ? ' (full page)' : ''}`);
  }
}

/** One cell of a terminal screen: a character and its SGR foreground colour (30–37, 90–97), if any. */
interface Cell {
  ch: string;
  fg?: number;
}

/**
 * What a terminal shows once `output` (bytes a program wrote to a pty) has been drawn: lines of
 * cells. Knows what the CLI's spinner writes (CR, LF, CSI n G, CSI K, SGR colours, and the cursor
 * and synchronized-output modes, which draw nothing); any other escape throws, so an unknown
 * sequence can never end up drawn as garbage in a screenshot.
 */
export function terminalScreen(output: string): Cell[][] {
  const lines: Cell[][] = [[]];
  let row = 0;
  let col = 0;
  let fg: number | undefined;
  const line = () => {
    while (lines.length <= row) lines.push([]);
    return lines[row] as Cell[];
  };
  for (let i = 0; i < output.length; ) {
    const c = output[i] as string;
    if (c === '\x1b') {
      // After ESC: CSI, an optional private marker, numeric parameters, the final letter.
      const m = /^\[(\??)([\d;]*)([A-Za-z])/.exec(output.slice(i + 1, i + 16));
      if (!m) throw new Error(`unknown escape at ${i}: ${JSON.stringify(output.slice(i, i + 8))}`);
      const [all, priv, params = '', cmd] = m;
      const n = params === '' ? undefined : Number(params);
      if (priv === '?' && (cmd === 'h' || cmd === 'l')) {
        // cursor shown/hidden, synchronized output: nothing drawn
      } else if (!priv && cmd === 'G') col = (n ?? 1) - 1;
      else if (!priv && cmd === 'K' && (n ?? 0) === 0) line().length = Math.min(line().length, col);
      else if (!priv && cmd === 'm') {
        for (const p of (params || '0').split(';').map(Number)) fg = p === 0 || p === 39 ? undefined : (p >= 30 && p <= 37) || (p >= 90 && p <= 97) ? p : fg;
      } else throw new Error(`unknown escape ${JSON.stringify(all)}`);
      i += 1 + all.length;
      continue;
    }
    if (c === '\r') col = 0;
    else if (c === '\n') {
      row++;
      col = 0;
    } else {
      const cells = line();
      while (cells.length < col) cells.push({ ch: ' ' });
      // One code point per cell (the spinner's braille and ✔ are single code points).
      const ch = String.fromCodePoint(output.codePointAt(i) as number);
      cells[col++] = fg === undefined ? { ch } : { ch, fg };
      i += ch.length;
      continue;
    }
    i++;
  }
  line();
  while (lines.length > 1 && lines.at(-1)?.length === 0) lines.pop();
  return lines;
}

/** The screen's text, one string per line. */
export const screenText = (screen: Cell[][]) => screen.map((cells) => cells.map((c) => c.ch).join(''));

const ANSI_COLOURS: Record<number, string> = { 31: '#ff6b68', 32: '#5fd068', 33: '#e5c07b', 36: '#56b6c2', 90: '#8b949e' };

/** A page that shows `command` and the screen it produced, as a dark terminal window would. */
export function terminalHtml(command: string, screen: Cell[][]): string {
  const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
  const body = screen
    .map((cells) => {
      let html = '';
      for (let i = 0; i < cells.length; ) {
        const fg = cells[i]?.fg;
        let run = '';
        for (; i < cells.length && cells[i]?.fg === fg; i++) run += cells[i]?.ch;
        html += fg === undefined ? esc(run) : `<span style="color:${ANSI_COLOURS[fg] ?? '#c9d1d9'}">${esc(run)}</span>`;
      }
      return html;
    })
    .join('\n');
  return `<!doctype html><html><head><meta charset="utf-8"><title>cinegraph CLI</title><style>
  body { margin: 0; background: #0d1117; }
  .window { margin: 0; border-radius: 0; }
  .title { background: #21262d; color: #8b949e; font: 13px system-ui, sans-serif; padding: 8px 14px; }
  .title i { display: inline-block; width: 11px; height: 11px; border-radius: 50%; margin-right: 6px; vertical-align: -1px; }
  pre { margin: 0; padding: 14px 16px 18px; color: #c9d1d9; font: 14px/1.45 "DejaVu Sans Mono", "Liberation Mono", monospace; white-space: pre; }
  .prompt { color: #5fd068; }
</style></head><body><div class="window"><div class="title"><i style="background:#ff5f57"></i><i style="background:#febc2e"></i><i style="background:#28c840"></i> cinegraph</div>
<pre><span class="prompt">$</span> ${esc(command)}
${body}</pre></div></body></html>`;
}
