import { GraphQLError } from 'graphql';
import { renderGraphiQL } from '@graphql-yoga/render-graphiql';
import { createSchema, type Plugin } from 'graphql-yoga';
import { describe, expect, test } from 'vitest';
import type { Context } from '../src/schema/context.js';
import { AUTH_HEADER_PLACEHOLDER } from '../src/server/graphiql.js';
import { createGraphqlHandler, operationLimits, type ServerContext } from '../src/server/yoga.js';
import { MAX_REQUEST_BYTES } from '../src/validation/limits.js';
import { capturedLogger } from './helpers/stub-upstream.js';

/**
 * createGraphqlHandler over a small schema, driven with yoga.fetch: statuses and codes of request
 * errors whatever the Accept header, the operation limits at and over each bound, CORS, the
 * browser rules, the body limit, GraphiQL, logging, and where a response cache plugin sits.
 */

const schema = createSchema({
  typeDefs: `
    type Node { id: ID!, child: Node, n(x: Int!): Int }
    type Query { node: Node, echo(s: String!): String, fail: String, boom: String, plain: String }
    type Mutation { touch: Int }
  `,
  resolvers: {
    Query: {
      node: () => ({ id: '1' }),
      echo: (_: unknown, { s }: { s: string }) => s,
      fail: () => {
        throw new GraphQLError('refused on purpose', { extensions: { code: 'NOPE' } });
      },
      boom: () => {
        throw new Error('unexpected failure');
      },
      plain: () => {
        throw new GraphQLError('refused without a code');
      },
    },
    Node: { child: () => ({ id: '1' }), n: (_: unknown, { x }: { x: number }) => x },
    Mutation: { touch: () => 1 },
  },
});

function handler(opts: { apiKeys?: boolean; cache?: Plugin } = {}) {
  const { log, lines } = capturedLogger();
  const contexts: unknown[] = [];
  const yoga = createGraphqlHandler(
    schema as never,
    (initial) => {
      contexts.push(initial);
      return initial as unknown as Context;
    },
    log,
    { apiKeys: opts.apiKeys ?? false },
    opts.cache,
  );
  const serverContext = { req: { headers: {} }, principal: { owner: 'k1' } } as unknown as ServerContext;
  async function post(query: string, variables: Record<string, unknown> = {}, headers: Record<string, string> = {}) {
    const res = await yoga.fetch(
      'http://gw.example/graphql',
      { method: 'POST', headers: { 'content-type': 'application/json', accept: 'application/json', ...headers }, body: JSON.stringify({ query, variables }) },
      serverContext,
    );
    // biome-ignore lint/suspicious/noExplicitAny: a GraphQL answer's shape is its query's; asserted at run time
    return { status: res.status, headers: res.headers, body: (await res.json()) as any };
  }
  const codes = (body: { errors?: { extensions?: { code?: string } }[] }) => body.errors?.map((e) => e.extensions?.code);
  return { yoga, post, codes, lines, contexts, serverContext };
}

/** A selection `depth` levels deep: node { child { child … { id } } }. */
const deep = (depth: number) => `{ node { ${'child { '.repeat(depth - 2)}id${' }'.repeat(depth - 2)} } }`;

describe('createGraphqlHandler', () => {
  test('the endpoint is /graphql, without a landing page', async () => {
    const h = handler();
    expect(h.yoga.graphqlEndpoint).toBe('/graphql');
    const res = await h.yoga.fetch('http://gw.example/', { headers: { accept: 'text/html' } }, h.serverContext);
    expect(res.status).toBe(404);
    expect(await res.text()).toBe('');
  });

  test('a request error is 400 under plain application/json too; graphql-js errors without a code become BAD_USER_INPUT', async () => {
    const h = handler();
    const syntax = await h.post('{ echo(s: "x") ');
    expect(syntax.status).toBe(400);
    expect(h.codes(syntax.body)).toEqual(['GRAPHQL_PARSE_FAILED']);
    expect(syntax.body.data).toBeUndefined();
    const invalid = await h.post('{ nope }');
    expect(invalid.status).toBe(400);
    expect(h.codes(invalid.body)).toEqual(['GRAPHQL_VALIDATION_FAILED']);
    const variables = await h.post('query($s: String!) { echo(s: $s) }', { s: 5 });
    expect(variables.status).toBe(400);
    expect(variables.body.errors).toEqual([
      { message: 'Variable "$s" got invalid value 5; String cannot represent a non string value: 5', locations: [{ line: 1, column: 7 }], extensions: { code: 'BAD_USER_INPUT' } },
    ]);
    const missing = await h.post('query($s: String!) { echo(s: $s) }', {});
    expect([missing.status, h.codes(missing.body)]).toEqual([400, ['BAD_USER_INPUT']]);
    // Under application/graphql-response+json the same.
    const strict = await h.post('query($s: String!) { echo(s: $s) }', { s: 5 }, { accept: 'application/graphql-response+json' });
    expect([strict.status, h.codes(strict.body)]).toEqual([400, ['BAD_USER_INPUT']]);
  });

  test('an execution error keeps 200, its data and its own code (or none)', async () => {
    const h = handler();
    const failed = await h.post('{ fail echo(s: "a") }');
    expect(failed.status).toBe(200);
    expect(failed.body).toEqual({ data: { fail: null, echo: 'a' }, errors: [{ message: 'refused on purpose', locations: [{ line: 1, column: 3 }], path: ['fail'], extensions: { code: 'NOPE' } }] });
    // An execution error without a code is left without one (only request errors become BAD_USER_INPUT).
    const plain = await h.post('{ plain }');
    expect([plain.status, plain.body]).toEqual([200, { data: { plain: null }, errors: [{ message: 'refused without a code', locations: [{ line: 1, column: 3 }], path: ['plain'] }] }]);
    const masked = await h.post('{ boom }');
    expect(masked.status).toBe(200);
    expect(masked.body).toEqual({
      data: { boom: null },
      errors: [{ message: 'Unexpected error.', locations: [{ line: 1, column: 3 }], path: ['boom'], extensions: { code: 'INTERNAL_SERVER_ERROR' } }],
    });
    // Yoga's log of the unexpected error goes through the given logger.
    const line = h.lines.map((l) => JSON.parse(l) as { msg: string; level: number; args?: unknown[] }).find((l) => l.msg === 'yoga' && l.level === 50);
    expect(line?.args).toBeDefined();
    expect(JSON.stringify(line?.args)).toContain('unexpected failure');
  });

  test.each([
    ['depth', deep(operationLimits.maxDepth), deep(operationLimits.maxDepth + 1)],
    [
      'aliases',
      `{ ${Array.from({ length: operationLimits.maxAliases }, (_, i) => `a${i}: echo(s: "x")`).join(' ')} }`,
      `{ ${Array.from({ length: operationLimits.maxAliases + 1 }, (_, i) => `a${i}: echo(s: "x")`).join(' ')} }`,
    ],
  ])('%s: at the limit runs, one over is 400 QUERY_TOO_COMPLEX', async (what, ok, over) => {
    const message = what === 'depth' ? 'Syntax Error: Query depth limit of 10 exceeded, found 11.' : 'Syntax Error: Aliases limit of 20 exceeded, found 21.';
    const h = handler();
    const fine = await h.post(ok);
    expect(fine.status).toBe(200);
    expect(fine.body.errors).toBeUndefined();
    const refused = await h.post(over);
    expect(refused.status).toBe(400);
    expect(h.codes(refused.body)).toEqual(['QUERY_TOO_COMPLEX']);
    expect(refused.body.errors[0].message).toMatch(message);
    expect(refused.body.data).toBeUndefined();
  });

  test('limits: the bounds; tokens over theirs are 400 QUERY_TOO_COMPLEX with the limit told', async () => {
    expect(operationLimits).toEqual({ maxDepth: 10, maxAliases: 20, maxCost: 5000, maxTokens: 2000 });
    const h = handler();
    const tokens = await h.post(`{ ${'__typename '.repeat(2100)}}`);
    expect(tokens.status).toBe(400);
    expect(h.codes(tokens.body)).toEqual(['QUERY_TOO_COMPLEX']);
    expect(tokens.body.errors[0].message).toBe('Syntax Error: Token limit of 2000 exceeded.');
  });

  test('CORS: an Origin that reached yoga is echoed with the allowed headers, without credentials; none without an Origin', async () => {
    const h = handler();
    const pre = await h.yoga.fetch(
      'http://gw.example/graphql',
      { method: 'OPTIONS', headers: { origin: 'https://app.example', 'access-control-request-method': 'POST', 'access-control-request-headers': 'authorization' } },
      h.serverContext,
    );
    expect(pre.headers.get('access-control-allow-origin')).toBe('https://app.example');
    expect(pre.headers.get('access-control-allow-headers')).toBe('authorization, content-type, accept, x-graphql-yoga-csrf');
    expect(pre.headers.get('access-control-allow-credentials')).toBeNull();
    const plain = await h.post('{ echo(s: "a") }', {}, { origin: 'https://app.example' });
    expect(plain.headers.get('access-control-allow-origin')).toBe('https://app.example');
    const none = await h.post('{ echo(s: "a") }');
    expect(none.headers.get('access-control-allow-origin')).toBeNull();
  });

  test('browser rules: a form body is 415, a simple content type without the CSRF header is 403', async () => {
    const h = handler();
    const form = await h.yoga.fetch(
      'http://gw.example/graphql',
      { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded', 'x-graphql-yoga-csrf': '1' }, body: 'query=%7B__typename%7D' },
      h.serverContext,
    );
    expect(form.status).toBe(415);
    const text = await h.yoga.fetch('http://gw.example/graphql', { method: 'POST', headers: { 'content-type': 'text/plain' }, body: '{"query":"{__typename}"}' }, h.serverContext);
    expect(text.status).toBe(403);
  });

  test('a body over MAX_REQUEST_BYTES is 413 before it is read', async () => {
    const h = handler();
    const res = await h.yoga.fetch(
      'http://gw.example/graphql',
      { method: 'POST', headers: { 'content-type': 'application/json', 'content-length': String(MAX_REQUEST_BYTES + 1) }, body: '{}' },
      h.serverContext,
    );
    expect(res.status).toBe(413);
  });

  test('the context factory gets the server context (principal included); a response cache plugin runs after the checks', async () => {
    const seen: string[] = [];
    const cache: Plugin = {
      onParams({ params }) {
        seen.push(params.query ?? '');
      },
    };
    const h = handler({ cache });
    await h.post('{ echo(s: "a") }');
    expect(seen).toEqual(['{ echo(s: "a") }']);
    expect(h.contexts).toHaveLength(1);
    expect(h.contexts[0]).toMatchObject({ principal: { owner: 'k1' } });
    // A refused form body never reaches it.
    await h.yoga.fetch('http://gw.example/graphql', { method: 'POST', headers: { 'content-type': 'multipart/form-data; boundary=x', 'x-graphql-yoga-csrf': '1' }, body: '--x--' }, h.serverContext);
    expect(seen).toHaveLength(1);
  });

  test('GraphiQL is served at the endpoint to a browser, with the key placeholder when keys are on', async () => {
    for (const apiKeys of [true, false]) {
      const h = handler({ apiKeys });
      const res = await h.yoga.fetch('http://gw.example/graphql', { headers: { accept: 'text/html' } }, h.serverContext);
      expect(res.status).toBe(200);
      expect(res.headers.get('content-type')).toContain('text/html');
      const html = await res.text();
      expect(html).toContain('<title>cinegraph</title>');
      expect(html.includes(JSON.stringify(AUTH_HEADER_PLACEHOLDER))).toBe(apiKeys);
    }
  });
});

describe('browser rules', () => {
  const send = (h: ReturnType<typeof handler>, method: string, headers: Record<string, string>, body?: string, path = '/graphql') =>
    h.yoga.fetch(`http://gw.example${path}`, { method, headers, body }, h.serverContext);

  test('a POST with a simple content type needs the CSRF header: 403 CSRF_HEADER_REQUIRED without it', async () => {
    const h = handler();
    const res = await send(h, 'POST', { 'content-type': 'text/plain', accept: 'application/json' }, '{"query":"{ echo(s: \\"a\\") }"}');
    expect(res.status).toBe(403);
    const body = (await res.json()) as { errors: { message: string; extensions: { code: string } }[] };
    expect(body.errors.map((e) => e.extensions.code)).toEqual(['CSRF_HEADER_REQUIRED']);
    expect(body.errors[0]?.message).toBe('Required CSRF header(s) not present');
  });

  test('JSON needs no CSRF header; GET and HEAD are never checked', async () => {
    const h = handler();
    const json = await send(h, 'POST', { 'content-type': 'application/json', accept: 'application/json' }, '{"query":"{ echo(s: \\"a\\") }"}');
    expect([json.status, await json.json()]).toEqual([200, { data: { echo: 'a' } }]);
    const get = await send(h, 'GET', { 'content-type': 'text/plain', accept: 'application/json' }, undefined, '/graphql?query=%7B%20echo(s%3A%20%22g%22)%20%7D');
    expect([get.status, await get.json()]).toEqual([200, { data: { echo: 'g' } }]);
    const form = await send(h, 'GET', { 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json' }, undefined, '/graphql?query=%7B%20echo(s%3A%20%22f%22)%20%7D');
    expect([form.status, await form.json()]).toEqual([200, { data: { echo: 'f' } }]);
    const head = await send(h, 'HEAD', { 'content-type': 'text/plain', accept: 'application/json' }, undefined, '/graphql?query=%7B__typename%7D');
    expect(head.status).not.toBe(403);
  });

  test.each([['application/x-www-form-urlencoded'], ['multipart/form-data; boundary=x'], ['Application/X-WWW-Form-Urlencoded; charset=utf-8'], ['MULTIPART/FORM-DATA; boundary=x']])(
    'a %s body is 415 UNSUPPORTED_MEDIA_TYPE even with the CSRF header',
    async (type) => {
      const h = handler();
      const res = await send(h, 'POST', { 'content-type': type, 'x-graphql-yoga-csrf': '1', accept: 'application/json' }, 'query=%7B__typename%7D');
      expect(res.status).toBe(415);
      expect(await res.json()).toEqual({ errors: [{ message: 'form-encoded and multipart bodies are not accepted: send application/json', extensions: { code: 'UNSUPPORTED_MEDIA_TYPE' } }] });
    },
  );

  test('text/plain with the CSRF header passes these rules (yoga then has no parser for it)', async () => {
    const h = handler();
    const res = await send(h, 'POST', { 'content-type': 'text/plain', 'x-graphql-yoga-csrf': '1', accept: 'application/json' }, '{"query":"{ echo(s: \\"a\\") }"}');
    const text = await res.text();
    expect(text).not.toContain('CSRF');
    expect(text).not.toContain('UNSUPPORTED_MEDIA_TYPE');
  });
});

describe('GraphiQL page', () => {
  test('options: title, graphql-ws, three runnable tabs; no header keys at all without API keys', async () => {
    const { graphiqlOptions } = await import('../src/server/graphiql.js');
    const off = graphiqlOptions({ apiKeys: false });
    expect(Object.keys(off).sort()).toEqual(['defaultTabs', 'subscriptionsProtocol', 'title', 'variables']);
    expect(off.title).toBe('cinegraph');
    expect(off.subscriptionsProtocol).toBe('WS');
    const tabs = off.defaultTabs ?? [];
    expect(tabs.map((t) => /^(mutation|subscription|query) (\w+)/m.exec(t.query ?? '')?.slice(1, 3).join(' '))).toEqual(['mutation Create', 'subscription Follow', 'query Recent']);
    expect(tabs.map((t) => JSON.parse(t.variables ?? 'null'))).toEqual([
      { input: { prompt: 'A paper boat drifting down a rainy street, cinematic' } },
      { id: 'paste-an-id' },
      { after: null },
    ]);
    expect(tabs[0]?.variables).toBe(JSON.stringify({ input: { prompt: 'A paper boat drifting down a rainy street, cinematic' } }, null, 2));
    expect(off.variables).toBe(tabs[0]?.variables);
    expect(tabs[0]?.query).toContain('createVideo(input: $input)');
    expect(tabs[1]?.query).toContain('predictionUpdated(id: $id)');
    expect(tabs[2]?.query).toContain('predictions(first: 10, after: $after)');
    const on = graphiqlOptions({ apiKeys: () => true });
    expect(on).toMatchObject({ headers: AUTH_HEADER_PLACEHOLDER, defaultHeaders: AUTH_HEADER_PLACEHOLDER, defaultEditorToolsVisibility: 'headers' });
    expect(on.defaultTabs?.map((t) => t.headers)).toEqual([AUTH_HEADER_PLACEHOLDER, AUTH_HEADER_PLACEHOLDER, AUTH_HEADER_PLACEHOLDER]);
  });

  test('the page starts GraphiQL with a live connectionParams object, defined in a script right after <body>', async () => {
    const { graphiqlOptions, renderLocalGraphiQL } = await import('../src/server/graphiql.js');
    const options = graphiqlOptions({ apiKeys: true });
    const html = renderLocalGraphiQL(options);
    const json = JSON.stringify(options);
    expect(html).toContain(`Object.assign(${json}, { connectionParams: window.__cinegraphConnectionParams })`);
    const body = html.indexOf('<body');
    const after = html.slice(html.indexOf('>', body) + 1);
    expect(after.startsWith("<script>\n  window.__cinegraphConnectionParams = Object.defineProperty({}, 'authorization', {")).toBe(true);
    expect(after).toContain("JSON.parse(localStorage.getItem('graphiql:headers') || '{}')");
    expect(after).toContain("!value.includes('<your key>')) return value;");
    // The script is there once, and the options' JSON appears patched, not also bare, at its last place.
    expect(html.split('window.__cinegraphConnectionParams = ').length).toBe(2);
    // Apart from those two insertions the page is render-graphiql's own.
    const start = html.indexOf('<script>\n  window.__cinegraphConnectionParams');
    const end = html.indexOf('</script>', start) + '</script>'.length;
    const unpatched = (html.slice(0, start) + html.slice(end)).replace(`Object.assign(${json}, { connectionParams: window.__cinegraphConnectionParams })`, json);
    expect(unpatched).toBe(renderGraphiQL(options));
    expect(html.lastIndexOf(json)).toBe(html.indexOf(`Object.assign(${json}`) + 'Object.assign('.length);
    // Rendered once per distinct options.
    expect(renderLocalGraphiQL(graphiqlOptions({ apiKeys: true }))).toBe(html);
    expect(renderLocalGraphiQL(graphiqlOptions({ apiKeys: false }))).not.toBe(html);
  });
});
