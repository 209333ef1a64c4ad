import { describe, expect, it } from 'vitest';
import { createSchema } from 'graphql-yoga';
import { createRequestLogging } from '../src/server/request-id.js';
import { createGraphqlHandler } from '../src/server/yoga.js';
import type { Context } from '../src/schema/context.js';
import { listen } from './helpers/listen.js';
import { startApp } from './helpers/app.js';
import { freePort } from './helpers/net.js';
import { capturedLogger } from './helpers/stub-upstream.js';

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

/** The real app with its log lines kept (pino at debug, so yoga's own lines show too). */
async function withLogs() {
  const { log, lines } = capturedLogger();
  const t = await startApp({}, { log });
  const parsed = () => lines.map((l) => JSON.parse(l) as Record<string, unknown> & { msg?: string; requestId?: string });
  return { t, parsed };
}

const post = (url: string, headers: Record<string, string> = {}) =>
  fetch(`${url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify({ query: '{ __typename }' }) });

describe('request ids', () => {
  it('keep a sane incoming x-request-id, echo it, and put it on every line the request logs', async () => {
    const { t, parsed } = await withLogs();
    const res = await post(t.url, { 'x-request-id': 'trace-42.abc:7' });
    expect(res.status).toBe(200);
    expect(res.headers.get('x-request-id')).toBe('trace-42.abc:7');
    await res.text();
    const mine = parsed().filter((l) => l.requestId === 'trace-42.abc:7');
    // yoga's own lines, logged while it handled the request, and the completion line.
    expect(mine.filter((l) => l.msg === 'yoga').length).toBeGreaterThan(0);
    const completed = mine.find((l) => l.msg === 'request completed');
    expect(completed).toMatchObject({ req: { method: 'POST', path: '/graphql' }, res: { statusCode: 200 }, responseTime: expect.any(Number) });
    // No yoga line of this request went out without its id.
    expect(parsed().filter((l) => l.msg === 'yoga' && l.requestId === undefined)).toEqual([]);
  });

  it('generate a UUID when there is none or the incoming one is not sane, different per request', async () => {
    const { t, parsed } = await withLogs();
    const ids: string[] = [];
    for (const header of [undefined, 'has spaces in it', 'x'.repeat(129), 'quote"d', '']) {
      const res = await post(t.url, header === undefined ? {} : { 'x-request-id': header });
      await res.text();
      const id = res.headers.get('x-request-id') ?? '';
      expect(id).toMatch(UUID);
      expect(parsed().some((l) => l.msg === 'request completed' && l.requestId === id)).toBe(true);
      ids.push(id);
    }
    expect(new Set(ids).size).toBe(ids.length);
    expect(JSON.stringify(parsed())).not.toContain('has spaces in it');
  });

  it('reach the lines of the webhook route', async () => {
    const { log, lines } = capturedLogger();
    const port = await freePort();
    const t = await startApp({ PORT: String(port), PUBLIC_URL: `http://127.0.0.1:${port}` }, { log });
    const res = await fetch(`${t.url}/webhooks/wavespeed/some-id?token=x`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-request-id': 'delivery-7' },
      body: '{}',
    });
    expect(res.status).toBe(401);
    await res.text();
    const refused = lines.map((l) => JSON.parse(l) as { msg?: string; requestId?: string }).filter((l) => l.msg === 'refused an unverified webhook delivery');
    expect(refused).toEqual([expect.objectContaining({ requestId: 'delivery-7' })]);
  });

  it("reach yoga's line for an unexpected error at info level, each concurrent request its own", async () => {
    const { log, lines } = capturedLogger();
    log.level = 'info';
    const schema = createSchema({
      typeDefs: 'type Query { boom(s: String!): String }',
      resolvers: { Query: { boom: async (_: unknown, { s }: { s: string }) => Promise.reject(new Error(`unexpected ${s}`)) } },
    });
    const yoga = createGraphqlHandler(schema as never, (initial) => initial as unknown as Context, log);
    const handle = createRequestLogging(log);
    const url = await listen((req, res) => handle(req, res, () => yoga(req, res, { req, res })));
    const boom = (s: string) =>
      fetch(`${url}/graphql`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'x-request-id': `req-${s}` },
        body: JSON.stringify({ query: 'query($s: String!) { boom(s: $s) }', variables: { s } }),
      }).then((r) => r.json());
    const answers = await Promise.all(['a', 'b', 'c'].map(boom));
    // Masked for the client...
    expect(answers.map((a) => a.errors[0].message)).toEqual(['Unexpected error.', 'Unexpected error.', 'Unexpected error.']);
    // ...and logged by yoga with the original error, on the line of the request it came from.
    const yogaLines = lines.map((l) => JSON.parse(l)).filter((l) => l.msg === 'yoga');
    const byRequest = Object.fromEntries(yogaLines.map((l) => [l.requestId, l.args[0].message]));
    expect(byRequest).toEqual({ 'req-a': 'unexpected a', 'req-b': 'unexpected b', 'req-c': 'unexpected c' });
  });

  it("reach yoga's line for an unexpected error of a subscription over SSE at info level: in an event, and from its source", async () => {
    const { log, lines } = capturedLogger();
    log.level = 'info';
    const schema = createSchema({
      typeDefs: 'type Query { ok: String } type Subscription { event(s: String!): String, source(s: String!): String }',
      resolvers: {
        Subscription: {
          event: {
            subscribe: async function* () {
              yield 1;
            },
            resolve: (_: unknown, { s }: { s: string }) => Promise.reject(new Error(`unexpected in event ${s}`)),
          },
          source: {
            // biome-ignore lint/correctness/useYield: a source that fails before its first event
            subscribe: async function* (_: unknown, { s }: { s: string }) {
              throw new Error(`unexpected from source ${s}`);
            },
          },
        },
      },
    });
    // What the shared subscription execution reads of our context (server/shared-execution.ts).
    const context = (initial: object) => ({ ...initial, principal: { owner: null }, baseUrl: () => 'http://gw' }) as unknown as Context;
    const yoga = createGraphqlHandler(schema as never, context, log);
    const handle = createRequestLogging(log);
    const url = await listen((req, res) => handle(req, res, () => yoga(req, res, { req, res })));
    const sse = (field: string, s: string) =>
      fetch(`${url}/graphql`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', accept: 'text/event-stream', 'x-request-id': `${field}-${s}` },
        body: JSON.stringify({ query: `subscription($s: String!) { ${field}(s: $s) }`, variables: { s } }),
      }).then((r) => r.text()); // the stream ends after its one event or its error
    const streams = await Promise.all([sse('event', 'a'), sse('event', 'b'), sse('source', 'a'), sse('source', 'b')]);
    for (const text of streams) expect(text).toContain('Unexpected error.');
    const yogaLines = lines.map((l) => JSON.parse(l)).filter((l) => l.msg === 'yoga');
    const byRequest = Object.fromEntries(yogaLines.map((l) => [l.requestId, l.args[0].message]));
    // With its stack: a plain Error thrown by the source would otherwise be written as {}.
    for (const l of yogaLines) expect(l.args[0].stack).toMatch(/^Error: unexpected (in event|from source) [ab]\n/);
    expect(byRequest).toEqual({
      'event-a': 'unexpected in event a',
      'event-b': 'unexpected in event b',
      'source-a': 'unexpected from source a',
      'source-b': 'unexpected from source b',
    });
  });

  it('are on every route; completions log the path without its query string; probes are not logged', async () => {
    const { t, parsed } = await withLogs();
    const secret = 'token-that-must-not-be-logged';
    const [graphqlGet, health, missing] = await Promise.all([
      fetch(`${t.url}/graphql?query=${encodeURIComponent('{ __typename }')}&token=${secret}`),
      fetch(`${t.url}/healthz`, { headers: { 'x-request-id': 'probe-1' } }),
      fetch(`${t.url}/nowhere?token=${secret}`),
    ]);
    for (const r of [graphqlGet, health, missing]) await r.text();
    expect(graphqlGet.headers.get('x-request-id')).toMatch(UUID);
    expect(health.headers.get('x-request-id')).toBe('probe-1');
    expect(missing.status).toBe(404);
    const completed = parsed().filter((l) => l.msg === 'request completed');
    expect(completed.find((l) => l.requestId === missing.headers.get('x-request-id'))).toMatchObject({ req: { path: '/nowhere' }, res: { statusCode: 404 } });
    expect(completed.find((l) => l.requestId === graphqlGet.headers.get('x-request-id'))).toMatchObject({ req: { method: 'GET', path: '/graphql' } });
    expect(completed.some((l) => l.requestId === 'probe-1')).toBe(false);
    expect(JSON.stringify(parsed())).not.toContain(secret);
  });
});
