import { expect, test } from 'vitest';
import { startApp } from './helpers/app.js';
import { listen } from './helpers/listen.js';
import { freePort } from './helpers/process.js';

const submit = (url: string, webhook: string) =>
  fetch(`${url}/sandbox/api/v3/minimax/video-01?webhook=${encodeURIComponent(webhook)}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: 'Bearer any' },
    body: JSON.stringify({ prompt: 'hook' }),
  });

test("the sandbox posts webhooks only to this gateway's own webhook route", async () => {
  let hits = 0;
  const elsewhere = await listen((req, res) => {
    hits++;
    req.resume();
    res.end();
  });
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const { app } = await startApp({ PORT: String(port), PUBLIC_URL: url, SANDBOX_TASK_SECONDS: '0.2' });
  const refused = [
    `${elsewhere}/webhooks/wavespeed/x?token=t`,
    `${url}/graphql`,
    `${url}/webhooks/wavespeed/../../graphql`,
    `${url}/webhooks/wavespeed/%2e%2e/%2e%2e/sandbox/_control/faults`,
    `http://user@127.0.0.1:${port}/webhooks/wavespeed/x`,
    `http://localhost:${port}/webhooks/wavespeed/x`,
    'not a url',
  ];
  for (const webhook of refused) {
    const r = await submit(url, webhook);
    expect([webhook, r.status, ((await r.json()) as { message: string }).message]).toEqual([webhook, 400, "webhook must be this gateway's own webhook route"]);
  }
  expect(app.sandbox?.stats.submissions).toBe(0);
  const accepted = await submit(url, `${url}/webhooks/wavespeed/some-id?token=abc`);
  expect(accepted.status).toBe(200);
  expect(app.sandbox?.stats.submissions).toBe(1);
  expect(hits).toBe(0);
});

test('without PUBLIC_URL the sandbox accepts no webhook at all', async () => {
  const { url, app } = await startApp();
  expect((await submit(url, `${url}/webhooks/wavespeed/x?token=t`)).status).toBe(400);
  expect(app.sandbox?.stats.submissions).toBe(0);
});

test('the control route and the API answer only direct loopback requests, not ones a reverse proxy forwarded', async () => {
  const { url, app } = await startApp();
  const control = (headers: Record<string, string> = {}) => fetch(`${url}/sandbox/_control/faults`, { headers });
  expect((await control()).status).toBe(200);
  const proxyHeaders: Record<string, string>[] = [
    { 'x-forwarded-for': '203.0.113.7' },
    { forwarded: 'for=203.0.113.7;proto=https' },
    { 'x-real-ip': '203.0.113.7' },
    { 'x-forwarded-host': 'cine.example' },
    { via: '1.1 proxy' },
  ];
  for (const forwarded of proxyHeaders) {
    const r = await control(forwarded);
    expect([forwarded, r.status, ((await r.json()) as { message: string }).message]).toEqual([forwarded, 403, 'the sandbox API answers only direct requests from this machine']);
    // Nor may a relayed caller submit (the sandbox would store what it is sent) or read the task list.
    const submitted = await fetch(`${url}/sandbox/api/v3/minimax/video-01`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: 'Bearer any', ...forwarded },
      body: JSON.stringify({ prompt: 'relayed' }),
    });
    expect(submitted.status).toBe(403);
    const listed = await fetch(`${url}/sandbox/api/v3/predictions`, { method: 'POST', headers: { authorization: 'Bearer any', ...forwarded }, body: '{}' });
    expect(listed.status).toBe(403);
  }
  expect(app.sandbox?.stats.submissions).toBe(0);
  expect(app.sandbox?.stats.listRequests).toBe(0);
  // The media stay public: outputs are links that clients follow (404 here only because no task exists).
  expect((await fetch(`${url}/sandbox/media/sbx-none.mp4`, { headers: { 'x-forwarded-for': '203.0.113.7' } })).status).toBe(404);
  const post = await fetch(`${url}/sandbox/_control/faults`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'x-forwarded-for': '203.0.113.7' },
    body: JSON.stringify({ serverErrorRate: 1 }),
  });
  expect(post.status).toBe(403);
  expect(((await (await control()).json()) as { serverErrorRate: number }).serverErrorRate).toBe(0);
  // A web page cannot switch faults either (a text/plain POST needs no preflight).
  const fromPage = await fetch(`${url}/sandbox/_control/faults`, { method: 'POST', headers: { origin: 'https://evil.example', 'content-type': 'text/plain' }, body: '{"serverErrorRate":1}' });
  expect(fromPage.status).toBe(403);
  expect(((await (await control()).json()) as { serverErrorRate: number }).serverErrorRate).toBe(0);
});
