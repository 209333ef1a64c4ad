import { readFileSync } from 'node:fs';
import { describe, expect, test } from 'vitest';
import { UpstreamError, WaveSpeedClient } from '../src/upstream/wavespeed.js';
import { startApp, waitFor } from './helpers/app.js';
import { listen } from './helpers/listen.js';
import { capturedLogger, record, stubUpstream } from './helpers/stub-upstream.js';
import { must } from './helpers/must.js';

const CREATE = `mutation($p: String!) { createVideo(input: { prompt: $p }) { id } }`;
const video = readFileSync(new URL('../assets/sandbox.mp4', import.meta.url));

/**
 * A gateway whose upstream (a loopback stub) answers every result as completed with `outputs`.
 * Its fetch only lets loopback traffic through and records everything asked of it, so a broken
 * guard shows up as a recorded URL, never as a packet leaving this machine.
 */
async function gatewayWithOutputs(outputs: (stubUrl: string) => string[], resolved: Record<string, string[]> = {}) {
  const requested: string[] = [];
  const guardedFetch: typeof fetch = async (input, init) => {
    const url = String(input instanceof Request ? input.url : input);
    requested.push(url);
    if (!/^http:\/\/127\.0\.0\.1:\d+\//.test(url)) throw new TypeError(`test: refused to connect to ${url}`);
    return fetch(input, init);
  };
  let stubUrl = '';
  const stub = await stubUpstream({
    result: ({ res }) => stub.ok(res, record({ id: 'stub-1' }, 'completed', outputs(stubUrl))),
    other: ({ req, res }) => {
      const hops = /^\/r\/(\d+)$/.exec(req.url ?? '');
      if (hops) return void res.writeHead(302, { location: Number(hops[1]) > 1 ? `/r/${Number(hops[1]) - 1}` : '/video.mp4' }).end();
      if (req.url === '/video.mp4') return void res.writeHead(200, { 'content-type': 'video/mp4', 'content-length': video.length }).end(video);
      const away = /^\/away\?to=(.+)$/.exec(req.url ?? '');
      if (away) return void res.writeHead(302, { location: decodeURIComponent(must(away[1])) }).end();
      res.writeHead(404).end();
    },
  });
  stubUrl = stub.url;
  const logs = capturedLogger();
  const t = await startApp(
    { WAVESPEED_API_KEY: 'k', WAVESPEED_BASE_URL: stub.url },
    { fetch: guardedFetch, log: logs.log, resolveHost: async (host) => resolved[host] ?? Promise.reject(new Error(`test: no DNS for ${host}`)) },
  );
  const { id } = (await t.gql(CREATE, { p: 'outputs' })).body.data.createVideo;
  const done = await waitFor(() => must(t.app.store.findById(id)), (r) => r.status === 'COMPLETED');
  return { done, requested: requested.filter((u) => !u.startsWith(`${stub.url}/api/`)), logs: logs.lines.join('\n'), stub };
}

describe('output downloads trust upstream only as far as needed', () => {
  test('an output URL on a private address is not fetched, and its query string reaches no log', async () => {
    const { done, requested, logs } = await gatewayWithOutputs(() => ['http://10.255.255.1/out.mp4?X-Amz-Signature=sekrit']);
    expect(done.keptOutputs).toEqual([]);
    expect(done.outputs).toEqual(['http://10.255.255.1/out.mp4?X-Amz-Signature=sekrit']); // upstream's URL is still passed on
    expect(requested).toEqual([]);
    expect(logs).toContain('refusing to download http://10.255.255.1/out.mp4: it points at a non-public address (10.255.255.1)');
    expect(logs).not.toContain('sekrit');
  });

  test('a name that resolves to a private address is not fetched; one that resolves to public addresses is', async () => {
    const { requested } = await gatewayWithOutputs(() => ['http://cdn.internal.test/a.mp4', 'http://cdn.public.test/b.mp4'], {
      'cdn.internal.test': ['93.184.216.34', '10.0.0.5'],
      'cdn.public.test': ['93.184.216.34'],
    });
    // The first output is refused (one private address is enough); that ends the kept copy, so the
    // second is never asked for here. Its acceptance is shown below.
    expect(requested).toEqual([]);
    const second = await gatewayWithOutputs(() => ['http://cdn.public.test/b.mp4'], { 'cdn.public.test': ['93.184.216.34'] });
    // The guard let it through; the test's fetch (not the network) refused it, and the poller retried.
    expect(second.requested.length).toBeGreaterThanOrEqual(1);
    expect(new Set(second.requested)).toEqual(new Set(['http://cdn.public.test/b.mp4']));
    expect(second.done.keptOutputs).toEqual([]);
  });

  test('a redirect to a private address, or to another local service, is not followed', async () => {
    let otherHits = 0;
    const other = await listen((_req, res) => {
      otherHits++;
      res.end('secret');
    });
    const toMetadata = await gatewayWithOutputs((s) => [`${s}/away?to=${encodeURIComponent('http://169.254.169.254/latest/meta-data')}`]);
    expect(toMetadata.done.keptOutputs).toEqual([]);
    expect(toMetadata.requested.length).toBeGreaterThanOrEqual(1);
    expect(toMetadata.requested.map((u) => new URL(u).hostname)).toEqual(toMetadata.requested.map(() => '127.0.0.1'));
    const toLocal = await gatewayWithOutputs((s) => [`${s}/away?to=${encodeURIComponent(`${other}/admin`)}`]);
    expect(toLocal.done.keptOutputs).toEqual([]);
    expect(otherHits).toBe(0);
  });

  test('at most 3 redirects are followed on the upstream host', async () => {
    const three = await gatewayWithOutputs((s) => [`${s}/r/3`]);
    expect(three.done.keptOutputs).toHaveLength(1);
    expect(three.requested.map((u) => new URL(u).pathname)).toEqual(['/r/3', '/r/2', '/r/1', '/video.mp4']);
    const four = await gatewayWithOutputs((s) => [`${s}/r/4`]);
    expect(four.done.keptOutputs).toEqual([]);
    expect(four.requested.map((u) => new URL(u).pathname)).toEqual(['/r/4', '/r/3', '/r/2', '/r/1']);
    expect(four.logs).toContain('more than 3 redirects');
  });

  test('of 15 outputs listed, only the 10 stored are downloaded', async () => {
    // Each through one redirect to the stub's video: two requests per download.
    const many = await gatewayWithOutputs((s) => Array.from({ length: 15 }, () => `${s}/r/1`));
    expect(many.done.outputs).toHaveLength(10);
    expect(many.requested.map((u) => new URL(u).pathname)).toEqual(Array.from({ length: 10 }, () => ['/r/1', '/video.mp4']).flat());
    expect(many.done.keptOutputs).toHaveLength(10);
  });
});

describe("upstream's words are stored only so long", () => {
  test('a 100,000-character error message from a refused submission is stored capped at 2,000 characters', async () => {
    const stub = await stubUpstream({
      submit: ({ res }) => void res.writeHead(400, { 'content-type': 'application/json' }).end(JSON.stringify({ code: 400, message: `bad prompt: ${'x'.repeat(100_000)}` })),
    });
    const t = await startApp({ WAVESPEED_API_KEY: 'k', WAVESPEED_BASE_URL: stub.url }, { log: capturedLogger().log });
    const { id } = (await t.gql(CREATE, { p: 'refused with a long story' })).body.data.createVideo;
    const done = await waitFor(() => must(t.app.store.findById(id)), (r) => r.status === 'FAILED');
    expect(done.error).toHaveLength(2000);
    expect(done.error).toMatch(/^upstream rejected the submission: upstream answered HTTP 400: bad prompt: x+…$/);
  });
});

describe('upstream bodies are capped at 1 MiB', () => {
  test('an endless body is cut off early, without the process growing', async () => {
    let sent = 0;
    const chunk = Buffer.alloc(1024 * 1024, 0x20);
    const base = await listen((req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      const pump = () => {
        // Up to 400 MB, as fast as the client takes it; stops when the client goes away.
        while (sent < 400 * 1024 * 1024 && !res.destroyed) {
          sent += chunk.length;
          if (!res.write(chunk)) return void res.once('drain', pump);
        }
        res.end();
      };
      req.socket.on('close', () => res.destroy());
      pump();
    });
    const before = process.memoryUsage().rss;
    const err = await new WaveSpeedClient({ baseUrl: base, apiKey: 'k', timeoutMs: 30_000 }).getResult('x').catch((e) => e);
    expect(err).toBeInstanceOf(UpstreamError);
    expect(err).toMatchObject({ kind: 'protocol', message: 'upstream sent a body of over 1048576 bytes; at most 1048576 are read' });
    expect(sent).toBeLessThan(64 * 1024 * 1024);
    expect(process.memoryUsage().rss - before).toBeLessThan(100 * 1024 * 1024);
  });

  test('a declared length over the cap is refused before the body is read', async () => {
    const base = await listen((_req, res) => {
      res.writeHead(503, { 'content-type': 'application/json', 'content-length': String(400 * 1024 * 1024) });
      res.write('{"code":503');
    });
    const err = await new WaveSpeedClient({ baseUrl: base, apiKey: 'k', timeoutMs: 5000 }).getResult('x').catch((e) => e);
    expect(err).toMatchObject({ kind: 'protocol', message: `upstream sent a body of ${400 * 1024 * 1024} bytes; at most 1048576 are read` });
  });
});
