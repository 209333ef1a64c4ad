// biome-ignore-all lint/performance/useDomNodeTextContent: these are Playwright Locator.innerText() calls, not DOM nodes: they read the text as rendered (hidden text left out), which is what the tests assert a person sees
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Locator, Page } from 'playwright-core';
import { describe, expect, test } from 'vitest';
import { UNAUTHENTICATED_MESSAGE } from '../src/auth/principal.js';
import { postGraphql, startApp, tempDir, waitFor } from './helpers/app.js';
import { heldClock } from './helpers/clock.js';
import { fenceToOrigin, launchChromium, screenshot, screenText, terminalHtml, terminalScreen } from './helpers/browser.js';
import { gif1x1, png } from './helpers/images.js';
import { createKey } from './helpers/keys.js';
import { must } from './helpers/must.js';

const root = fileURLToPath(new URL('..', import.meta.url));

/** How long a page may take to show what a test waits for; expect.poll's default (1 s) is too short on a busy machine. */
const eventually = { timeout: 15_000 };

/** Sets the built-in sandbox's faults (e.g. hangRate 1: every task submitted from now on runs until canceled). */
async function faults(url: string, settings: Record<string, number>): Promise<void> {
  const res = await fetch(`${url}/sandbox/_control/faults`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(settings) });
  expect(res.status).toBe(200);
}

/** A prediction created through the API, not the page; its id. */
async function createThroughApi(url: string, prompt: string, headers: Record<string, string> = {}): Promise<string> {
  const { body } = await postGraphql<{ createVideo: { id: string } }>(url, 'mutation ($input: CreateVideoInput!) { createVideo(input: $input) { id } }', { input: { prompt } }, headers);
  return body.data?.createVideo.id ?? expect.fail(JSON.stringify(body));
}

/** The ids of the `subscribe` messages the page sent over graphql-ws. */
const subscribedIds = (socketMessages: string[]) =>
  socketMessages.map((m) => JSON.parse(m)).filter((m) => m.type === 'subscribe').map((m) => m.payload.variables?.id as string);

/** Monaco renders spaces as no-break spaces and lines as separate nodes: compare on collapsed text. */
async function text(locator: Locator): Promise<string> {
  return (await locator.innerText()).replace(/\s+/g, ' ');
}

/** Replaces an editor's whole text, then drops what Monaco's auto-closing added after the cursor. */
async function replaceEditorText(page: Page, editor: Locator, value: string): Promise<void> {
  await editor.click();
  await page.keyboard.press('ControlOrMeta+A');
  await page.keyboard.insertText(value);
  await page.keyboard.press('Shift+ControlOrMeta+End');
  await page.keyboard.press('Delete');
}

describe('GraphiQL at /graphql, from installed assets only', () => {
  test('renders the editor with every off-origin request blocked, creates a prediction and follows it to COMPLETED over graphql-ws', async () => {
    const { url } = await startApp();
    const { context, page } = await launchChromium();
    const { outside, sockets } = await fenceToOrigin(context, url);

    await page.goto(`${url}/graphql`);
    const queryEditor = page.locator('.graphiql-query-editor .monaco-editor');
    await expect.poll(() => text(queryEditor), eventually).toContain('mutation Create($input: CreateVideoInput!)');
    await expect(page.title()).resolves.toBe('cinegraph');
    const tabs = page.locator('.graphiql-tab-button');
    await expect.poll(() => tabs.allInnerTexts(), eventually).toEqual(['Create', 'Follow', 'Recent']);

    // The Create tab runs as it stands: its variables are prefilled.
    const variables = page.locator('.monaco-editor[data-uri$="-variables.json"]');
    await expect.poll(() => text(variables), eventually).toContain('"prompt": "A paper boat');
    const execute = page.getByRole('button', { name: /^Execute query/ });
    const [created] = await Promise.all([
      page.waitForResponse((r) => r.url() === `${url}/graphql` && (r.request().postData() ?? '').includes('createVideo')),
      execute.click(),
    ]);
    const { id, status } = (await created.json()).data.createVideo;
    expect(status).toBe('CREATED');

    // Follow it: the subscription's events arrive over the page's WebSocket to /graphql.
    // A DOM click: the tab bar is a drag-to-reorder list, and a synthetic mouse gesture can start a drag.
    await tabs.filter({ hasText: 'Follow' }).dispatchEvent('click');
    await expect.poll(() => text(queryEditor), eventually).toContain('subscription Follow($id: ID!)');
    await expect.poll(() => text(variables), eventually).toContain('"id": "paste-an-id"');
    await replaceEditorText(page, variables, JSON.stringify({ id }));
    await expect.poll(() => text(variables), eventually).toBe(`1 ${JSON.stringify({ id })}`);
    await execute.click();
    const result = page.locator('.graphiql-response');
    await expect.poll(() => text(result), eventually).toContain('"status": "COMPLETED"');
    expect(await text(result)).toContain(`"id": "${id}"`);
    expect(await text(result)).toContain(`${url}/media/`);
    expect(sockets).toEqual([`${url.replace(/^http/, 'ws')}/graphql`]);

    await screenshot(page, 'graphiql', false);
    expect(outside).toEqual([]);
  });

  test('with API keys on, every tab starts with the Authorization placeholder; with the key filled in, Create runs over HTTP and Follow over graphql-ws', async () => {
    const dataDir = tempDir();
    const key = await createKey(dataDir, 'graphiql');
    const { url } = await startApp({ DATA_DIR: dataDir });
    const { context, page } = await launchChromium();
    const { outside, socketMessages } = await fenceToOrigin(context, url);

    await page.goto(`${url}/graphql`);
    const headersEditor = page.locator('.monaco-editor[data-uri$="-request-headers.json"]');
    await expect.poll(() => text(headersEditor), eventually).toBe('1 {"authorization":"Bearer <your key>"}');
    // GraphiQL keeps the header editor's text in localStorage (debounced); run once it has the key, as a person would.
    const fillKey = async () => {
      await replaceEditorText(page, headersEditor, JSON.stringify({ authorization: `Bearer ${key}` }));
      await expect.poll(() => page.evaluate(() => localStorage.getItem('graphiql:headers')), eventually).toContain(key);
    };
    await fillKey();

    const execute = page.getByRole('button', { name: /^Execute query/ });
    const [created] = await Promise.all([
      page.waitForResponse((r) => r.url() === `${url}/graphql` && (r.request().postData() ?? '').includes('createVideo')),
      execute.click(),
    ]);
    expect(created.request().headers().authorization).toBe(`Bearer ${key}`);
    const { id } = (await created.json()).data.createVideo;

    // Each tab has its own headers, as in any GraphiQL: the Follow tab starts with the placeholder too.
    await page.locator('.graphiql-tab-button').filter({ hasText: 'Follow' }).dispatchEvent('click');
    await expect.poll(() => text(headersEditor), eventually).toBe('1 {"authorization":"Bearer <your key>"}');
    await fillKey();
    await page.getByRole('button', { name: 'Variables' }).click();
    await replaceEditorText(page, page.locator('.monaco-editor[data-uri$="-variables.json"]'), JSON.stringify({ id }));
    await execute.click();
    await expect.poll(() => text(page.locator('.graphiql-response')), eventually).toContain('"status": "COMPLETED"');
    const init = socketMessages.map((m) => JSON.parse(m)).find((m) => m.type === 'connection_init');
    expect(init).toEqual({ type: 'connection_init', payload: { authorization: `Bearer ${key}` } });
    expect(outside).toEqual([]);
  });
});

describe('the live page at /', () => {
  test('a prompt submitted from the page shows CREATED → PROCESSING → COMPLETED live and plays the kept MP4', async () => {
    // 3 s tasks: PROCESSING (80% of a task) must be polled and drawn on a loaded machine too.
    const { url, gql } = await startApp({ SANDBOX_TASK_SECONDS: '3' });
    const { context, page } = await launchChromium();
    const { outside, sockets } = await fenceToOrigin(context, url);
    const errors: string[] = [];
    page.on('pageerror', (err) => errors.push(err.message));

    await page.goto(`${url}/`);
    await expect(page.title()).resolves.toBe('cinegraph');
    await expect.poll(() => page.locator('#recent').innerText(), eventually).toBe('None yet.');

    // Keyboard: from the prompt, Tab reaches the file picker, the checkbox, then the submit button, which shows its focus.
    await page.getByLabel('Prompt', { exact: true }).fill('a lighthouse in a storm, seen from the sea');
    const focusOrder: string[] = [];
    for (let i = 0; i < 3; i++) {
      await page.keyboard.press('Tab');
      focusOrder.push(await page.evaluate(() => document.activeElement?.id ?? ''));
    }
    expect(focusOrder).toEqual(['image', 'expand', 'submit']);
    expect(await page.evaluate(() => getComputedStyle(document.activeElement ?? document.body).outlineStyle)).not.toBe('none');
    await page.keyboard.press('Enter');

    const timeline = page.locator('#timeline li');
    await expect.poll(() => timeline.evaluateAll((lis) => lis.map((li) => (li as HTMLElement).dataset.status)), eventually).toEqual([
      'CREATED',
      'PROCESSING',
      'COMPLETED',
    ]);
    const id = await page.locator('#current-id').innerText();
    const stored = await gql(`query($id: ID!) { prediction(id: $id) { status input { prompt } keptOutputs createdAt completedAt } }`, { id });
    expect(stored.body.data.prediction).toMatchObject({ status: 'COMPLETED', input: { prompt: 'a lighthouse in a storm, seen from the sea' } });

    // The <video> plays the gateway's kept copy (/media/…), decoded far enough to show a frame.
    const video = page.locator('#video');
    await expect(video.getAttribute('src')).resolves.toBe(stored.body.data.prediction.keptOutputs[0]);
    expect(stored.body.data.prediction.keptOutputs[0]).toMatch(new RegExp(`^${url}/media/`));
    await page.waitForFunction(() => (document.getElementById('video') as HTMLVideoElement).readyState >= 2, undefined, eventually);
    expect(await video.evaluate((v: HTMLVideoElement) => [v.videoWidth > 0, v.duration > 0, v.error])).toEqual([true, true, null]);

    // The recent list picked it up and followed it to the end.
    await expect.poll(() => page.locator(`#recent li[data-id="${id}"] .badge`).innerText(), eventually).toBe('COMPLETED');
    // Elapsed time stops at completion: the stored run time, in seconds.
    const { createdAt, completedAt } = stored.body.data.prediction;
    const runSeconds = Math.round((Date.parse(completedAt) - Date.parse(createdAt)) / 1000);
    await expect.poll(() => page.locator('#elapsed').innerText(), eventually).toBe(`${runSeconds} s`);
    expect(sockets.every((s) => s === `${url.replace(/^http/, 'ws')}/graphql`)).toBe(true);
    expect(sockets.length).toBeGreaterThan(0);

    // Seekable (the kept copy is served with Range): a seek lands and shows its frame.
    const seekedTo = await video.evaluate(
      (v: HTMLVideoElement) => new Promise<number>((resolve) => {
        v.addEventListener('seeked', () => resolve(v.currentTime), { once: true });
        v.currentTime = 1.5;
      }),
    );
    expect(seekedTo).toBeCloseTo(1.5, 1);
    await screenshot(page, 'page');
    expect(errors).toEqual([]);
    expect(outside).toEqual([]);
  });

  test('a picked image is judged in the browser by the server’s rules; the server’s own refusal is shown too', async () => {
    const { url, gql } = await startApp();
    const { context, page } = await launchChromium();
    const { outside } = await fenceToOrigin(context, url);
    const creates: string[] = [];
    page.on('request', (r) => (r.postData() ?? '').includes('createVideo') && creates.push(r.url()));
    await page.goto(`${url}/`);
    await page.getByLabel('Prompt', { exact: true }).fill('a red kite over a hill');

    const imageError = page.locator('#image-error');
    const cases = [
      { name: 'small.png', mimeType: 'image/png', buffer: png(300, 300), message: 'IMAGE_TOO_SMALL: image is 300×300; its short side must be over 300 px' },
      { name: 'tall.png', mimeType: 'image/png', buffer: png(400, 1000), message: 'IMAGE_ASPECT_RATIO: image is 400×1000; its aspect ratio must be between 2:5 and 5:2' },
      { name: 'named.png', mimeType: 'image/png', buffer: gif1x1, message: 'IMAGE_FORMAT: image is gif; only JPEG and PNG are accepted' },
    ];
    for (const c of cases) {
      await page.getByLabel('First frame').setInputFiles({ name: c.name, mimeType: c.mimeType, buffer: c.buffer });
      await expect.poll(() => imageError.innerText(), eventually).toBe(c.message);
      await page.getByRole('button', { name: 'Create video' }).click();
      await expect.poll(() => page.evaluate(() => document.activeElement?.id), eventually).toBe('image');
    }
    expect(creates).toEqual([]);
    expect((await gql('{ predictions(first: 5) { nodes { id } } }')).body.data.predictions.nodes).toEqual([]);

    // A good image goes up with the prompt.
    await page.getByLabel('First frame').setInputFiles({ name: 'ok.png', mimeType: 'image/png', buffer: png(640, 360) });
    await expect.poll(() => imageError.innerText(), eventually).toBe('');
    await page.getByRole('button', { name: 'Create video' }).click();
    await expect.poll(() => page.locator('#current-status').innerText(), eventually).toMatch(/CREATED|PROCESSING|COMPLETED/);
    const id = await page.locator('#current-id').innerText();
    expect((await gql(`query($id: ID!) { prediction(id: $id) { input { hasImage } } }`, { id })).body.data.prediction.input.hasImage).toBe(true);

    // What only the server judges (the prompt's length in characters) comes back with its code.
    await page.getByLabel('First frame').setInputFiles([]);
    await page.getByLabel('Prompt', { exact: true }).fill('x'.repeat(2001));
    await page.getByRole('button', { name: 'Create video' }).click();
    await expect.poll(() => page.locator('#form-error').innerText(), eventually).toBe('BAD_USER_INPUT: prompt is 2001 characters long; the limit is 2000');
    expect(creates).toHaveLength(2);
    expect(outside).toEqual([]);
  });

  test('with API keys on, a key entered once is kept in the browser, sent as Bearer on HTTP and in connectionParams, and the page works end to end', async () => {
    const dataDir = tempDir();
    const key = await createKey(dataDir, 'web-page');
    // 3 s tasks: the timeline must show PROCESSING, as above.
    const { url } = await startApp({ DATA_DIR: dataDir, SANDBOX_TASK_SECONDS: '3' });
    const { context, page } = await launchChromium();
    const { outside, socketMessages } = await fenceToOrigin(context, url);
    const authorizations: Array<string | undefined> = [];
    page.on('request', (r) => r.url() === `${url}/graphql` && authorizations.push(r.headers().authorization));
    const keyField = page.getByLabel(/^Key, kept in this browser/);

    // Without a key the server refuses, and the page says so with the server's code.
    await page.goto(`${url}/`);
    await expect.poll(() => page.locator('#key-status').innerText(), eventually).toBe('No key saved.');
    await expect.poll(() => page.locator('#recent-error').innerText(), eventually).toBe(`UNAUTHENTICATED: ${UNAUTHENTICATED_MESSAGE}`);

    await keyField.fill(key);
    await keyField.press('Enter');
    await expect.poll(() => page.locator('#key-status').innerText(), eventually).toBe('A key is saved in this browser.');
    expect(await keyField.inputValue()).toBe('');
    await expect.poll(() => page.locator('#recent').innerText(), eventually).toBe('None yet.');
    expect(await page.locator('#recent-error').innerText()).toBe('');

    // Kept across a reload: entered once. Create and follow it to the end over the keyed socket.
    authorizations.length = 0;
    await page.reload();
    await expect.poll(() => page.locator('#key-status').innerText(), eventually).toBe('A key is saved in this browser.');
    await page.getByLabel('Prompt', { exact: true }).fill('a key-carrying request');
    await page.getByRole('button', { name: 'Create video' }).click();
    await expect.poll(() => page.locator('#timeline li').evaluateAll((lis) => lis.map((li) => (li as HTMLElement).dataset.status)), eventually).toEqual([
      'CREATED',
      'PROCESSING',
      'COMPLETED',
    ]);
    await page.waitForFunction(() => (document.getElementById('video') as HTMLVideoElement).readyState >= 2, undefined, eventually);
    expect(authorizations.length).toBeGreaterThan(0);
    expect(new Set(authorizations)).toEqual(new Set([`Bearer ${key}`]));
    const inits = socketMessages.map((m) => JSON.parse(m)).filter((m) => m.type === 'connection_init');
    expect(inits.length).toBeGreaterThan(0);
    for (const init of inits) expect(init).toEqual({ type: 'connection_init', payload: { authorization: `Bearer ${key}` } });

    // Forgotten: gone from storage, and the server refuses the page again.
    await page.getByRole('button', { name: 'Forget' }).click();
    await expect.poll(() => page.locator('#key-status').innerText(), eventually).toBe('No key saved.');
    expect(await page.evaluate(() => localStorage.getItem('cinegraph.apiKey'))).toBeNull();
    await expect.poll(() => page.locator('#recent-error').innerText(), eventually).toBe(`UNAUTHENTICATED: ${UNAUTHENTICATED_MESSAGE}`);
    expect(outside).toEqual([]);
  });

  test('while the prediction waits for the account’s tier, its place in the queue shows and moves live, and goes once it is submitted', async () => {
    // 3 s tasks: ours must be seen PROCESSING once it runs, on a loaded machine too.
    const { url, app } = await startApp({ UPSTREAM_MAX_CONCURRENT: '1', SANDBOX_TASK_SECONDS: '3' });
    const { context, page } = await launchChromium();
    const { outside } = await fenceToOrigin(context, url);
    // The one slot is held by a task that runs until it is canceled; one more waits ahead of ours.
    await faults(url, { hangRate: 1 });
    const holder = await createThroughApi(url, 'holds the slot');
    await waitFor(() => app.store.findById(holder)?.upstreamId, Boolean);
    const ahead = await createThroughApi(url, 'waits first');
    const cancel = async (id: string) =>
      expect((await postGraphql(url, 'mutation ($id: ID!) { cancelPrediction(id: $id) { status } }', { id })).body).toEqual({ data: { cancelPrediction: { status: 'CANCELED' } } });

    await page.goto(`${url}/`);
    await page.getByLabel('Prompt', { exact: true }).fill('waits its turn');
    await page.getByRole('button', { name: 'Create video' }).click();
    const place = page.locator('#current-queue');
    await expect.poll(() => place.innerText(), eventually).toBe('queued: 2nd');
    expect(await page.locator('#current-status').innerText()).toBe('CREATED');

    // The slot frees: the one ahead is submitted, ours moves up without any action on the page. The
    // one ahead hangs too, so ours stays 1st until seen: the move is pushed about 1 s after the cancel,
    // and a task that ran to its end could take the place away again before a loaded browser drew it.
    await cancel(holder);
    await expect.poll(() => place.innerText(), eventually).toBe('queued: 1st');

    // The one ahead goes, ours is submitted: no place any more, and it runs to the end.
    await faults(url, { hangRate: 0 });
    await cancel(ahead);
    await expect.poll(() => page.locator('#timeline li').evaluateAll((lis) => lis.map((li) => (li as HTMLElement).dataset.status)), eventually).toEqual([
      'CREATED',
      'PROCESSING',
      'COMPLETED',
    ]);
    expect(await place.isHidden()).toBe(true);
    expect(await place.textContent()).toBe('');
    expect(outside).toEqual([]);
  });

  test('the recent list picks up a prediction created elsewhere (the API, same key) and follows it to COMPLETED with no action on the page', async () => {
    const dataDir = tempDir();
    const key = await createKey(dataDir, 'recent-list');
    // The task stands still until the page lists and follows it: seen unfinished first, however long
    // the page's refresh (every 3 s) takes on a loaded machine.
    const clock = heldClock();
    const { url } = await startApp({ DATA_DIR: dataDir }, { clock });
    const { context, page } = await launchChromium();
    const { outside, socketMessages } = await fenceToOrigin(context, url);
    const creates: string[] = [];
    page.on('request', (r) => (r.postData() ?? '').includes('createVideo') && creates.push(r.url()));
    await page.goto(`${url}/`);
    const keyField = page.getByLabel(/^Key, kept in this browser/);
    await keyField.fill(key);
    await keyField.press('Enter');
    await expect.poll(() => page.locator('#recent').innerText(), eventually).toBe('None yet.');

    const id = await createThroughApi(url, 'made by a backend', { authorization: `Bearer ${key}` });
    // Every badge text the row shows, in order, read as the test polls.
    const badge = page.locator(`#recent li[data-id="${id}"] .badge`);
    const shown: string[] = [];
    const status = async () => {
      const text = (await badge.count()) ? await badge.innerText() : '';
      if (text && shown.at(-1) !== text) shown.push(text);
      return text;
    };
    await expect.poll(status, eventually).not.toBe('');
    await expect.poll(() => subscribedIds(socketMessages), eventually).toContain(id);
    clock.release();
    await expect.poll(status, eventually).toBe('COMPLETED');
    // Seen unfinished first, then followed to the end.
    expect(shown[0]).toBe('CREATED');
    expect(await page.locator('#recent li').count()).toBe(1);
    expect(await page.locator(`#recent li[data-id="${id}"] button`).innerText()).toBe('made by a backend');
    expect(subscribedIds(socketMessages)).toContain(id);
    expect(creates).toEqual([]);
    expect(await page.locator('#current').isHidden()).toBe(true);
    expect(outside).toEqual([]);
  });

  test('a prediction canceled through the API while the page follows it shows CANCELED, its clock stops, and the list does not follow it again', async () => {
    const { url, gql } = await startApp();
    const { context, page } = await launchChromium();
    const { outside, socketMessages } = await fenceToOrigin(context, url);
    await faults(url, { hangRate: 1 }); // runs until canceled
    await page.goto(`${url}/`);
    await page.getByLabel('Prompt', { exact: true }).fill('never finished');
    await page.getByRole('button', { name: 'Create video' }).click();
    await expect.poll(() => page.locator('#current-status').innerText(), eventually).toBe('PROCESSING');
    const id = await page.locator('#current-id').innerText();

    const canceled = await gql('mutation ($id: ID!) { cancelPrediction(id: $id) { status createdAt completedAt } }', { id });
    const { status, createdAt, completedAt } = canceled.body.data.cancelPrediction;
    expect(status).toBe('CANCELED');
    await expect.poll(() => page.locator('#timeline li').evaluateAll((lis) => lis.map((li) => (li as HTMLElement).dataset.status)), eventually).toEqual([
      'CREATED',
      'PROCESSING',
      'CANCELED',
    ]);
    expect(await page.locator('#current-status').innerText()).toBe('CANCELED');
    await expect.poll(() => page.locator(`#recent li[data-id="${id}"] .badge`).innerText(), eventually).toBe('CANCELED');
    // The clock stops at the cancel: still the run time once a running clock would have moved on by 2 s.
    const runSeconds = Math.round((Date.parse(completedAt) - Date.parse(createdAt)) / 1000);
    await page.waitForFunction((end) => Date.now() > end, Date.parse(completedAt) + 2500, { polling: 100 });
    expect(await page.locator('#elapsed').innerText()).toBe(`${runSeconds} s`);

    // Reloaded, the list shows it CANCELED and does not subscribe to it. A prediction submitted
    // afterwards is subscribed to after the list's own subscriptions, so once its subscribe is seen,
    // one for the canceled row would have been seen too.
    await faults(url, { hangRate: 0 });
    socketMessages.length = 0;
    await page.reload();
    await expect.poll(() => page.locator(`#recent li[data-id="${id}"] .badge`).innerText(), eventually).toBe('CANCELED');
    await page.getByLabel('Prompt', { exact: true }).fill('after the cancel');
    await page.getByRole('button', { name: 'Create video' }).click();
    await expect.poll(() => page.locator('#current-id').innerText(), eventually).not.toBe('');
    const next = await page.locator('#current-id').innerText();
    await expect.poll(() => subscribedIds(socketMessages), eventually).toContain(next);
    expect(subscribedIds(socketMessages)).not.toContain(id);
    expect(outside).toEqual([]);
  });

  test('readable on a phone: nothing wider than the screen', async () => {
    const { url } = await startApp();
    const { page } = await launchChromium({ width: 390, height: 844 });
    await page.goto(`${url}/`);
    await expect.poll(() => page.locator('#key-status').innerText(), eventually).toBe('No key saved.');
    expect(await page.evaluate(() => document.documentElement.scrollWidth)).toBeLessThanOrEqual(390);
    await screenshot(page, 'page-phone');
  });
});

describe('the CLI, as a terminal shows it', () => {
  test('`create --wait --out` run for real on a pseudo-terminal against the server, drawn in Chromium: test-artifacts/cli.png (and docs/cli.png with UPDATE_SCREENSHOTS=1)', async () => {
    const { url } = await startApp();
    const dir = tempDir();
    const prompt = 'a paper boat drifting down a rainy street';
    const shown = `npx cinegraph create '${prompt}' --wait --out boat.mp4`;
    // util-linux `script` gives the bin a real pty (sized by stty), so it draws its spinner as on a terminal.
    const command = `stty cols 110 rows 40; cd '${dir}' && '${process.execPath}' '${join(root, 'bin/cinegraph.mjs')}' create '${prompt}' --wait --out boat.mp4`;
    const output = await new Promise<string>((resolve, reject) =>
      // As a person's terminal: colours on (CI=true, as .ci/run sets it, turns them off in ora/chalk).
      execFile('script', ['-qec', command, '/dev/null'], { env: { ...process.env, CINEGRAPH_URL: url, CINEGRAPH_API_KEY: '', CI: '', FORCE_COLOR: '1' }, timeout: 60_000 }, (err, stdout) =>
        err ? reject(new Error(`the CLI failed: ${err.message}\n${stdout}`)) : resolve(stdout),
      ),
    );
    const mp4 = readFileSync(join(dir, 'boat.mp4'));
    expect(mp4.subarray(4, 8).toString('latin1')).toBe('ftyp');

    // The screen once the command ended: the spinner's last frame replaced by its ✔ line, then the summary.
    const screen = terminalScreen(output);
    const lines = screenText(screen);
    const id = must(/^✔ COMPLETED in [\d.]+ s · ([0-9a-f-]{36})$/.exec(lines[0] ?? '')?.[1], `✔ line in ${JSON.stringify(lines)}`);
    expect(lines.slice(1).map((l) => l.replace(/ +.*/, ''))).toEqual(['id:', 'status:', 'prompt:', 'image:', 'created:', 'completed:', 'video:', 'saved:']);
    expect(lines[1]).toBe(`id:        ${id}`);
    expect(lines[8]).toBe(`saved:     ${join(dir, 'boat.mp4')} (${mp4.length} bytes, ${/[\d.]+ s in all/.exec(lines[8] ?? '')?.[0]})`);
    expect(screen[0]?.[0]).toEqual({ ch: '✔', fg: 32 }); // green, as the terminal draws it

    const { context, page } = await launchChromium({ width: 1000, height: 300 });
    const { outside } = await fenceToOrigin(context, url);
    await page.setContent(terminalHtml(shown, screen));
    expect(await page.locator('pre').innerText()).toBe(`$ ${shown}\n${lines.join('\n')}`);
    // Nothing cut off or scrolled: the 110-column terminal fits the window.
    expect(await page.evaluate(() => document.documentElement.scrollWidth)).toBeLessThanOrEqual(1000);
    await screenshot(page, 'cli');
    expect(outside).toEqual([]);
  });
});
