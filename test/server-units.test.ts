import type { IncomingMessage, ServerResponse } from 'node:http';
import { buildSchema, GraphQLInt, GraphQLList, GraphQLObjectType, GraphQLSchema, GraphQLString, parse } from 'graphql';
import { createSchema, createYoga, type Plugin } from 'graphql-yoga';
import ipaddr from 'ipaddr.js';
import { describe, expect, test, vi } from 'vitest';
import { useBodyLimit } from '../src/server/body-limit.js';
import { sendJson } from '../src/server/json.js';
import { createOriginPolicy, isLoopbackHost, MAX_REMEMBERED_HOSTS, refuse } from '../src/server/origin.js';
import { MAX_RESULT_COST, ROW_COST, resultCost, useResultCostLimit } from '../src/server/result-cost.js';
import { waitFor } from './helpers/app.js';
import { onDispose } from './helpers/dispose.js';

/** What sendJson wrote: a ServerResponse reduced to the two calls it makes. */
function recordingResponse() {
  const sent: { status?: number; headers?: Record<string, unknown>; body?: string } = {};
  const res = {
    writeHead(status: number, headers: Record<string, unknown>) {
      sent.status = status;
      sent.headers = headers;
      return res;
    },
    end(body: string) {
      sent.body = body;
      return res;
    },
  };
  return { res: res as unknown as ServerResponse, sent };
}

const req = (headers: Record<string, string>) => ({ headers }) as unknown as IncomingMessage;

describe('isLoopbackHost', () => {
  test.each([
    ['localhost'],
    ['LocalHost'],
    ['app.localhost'],
    ['127.0.0.1'],
    ['127.9.8.7'],
    ['::1'],
    ['[::1]'],
    ['::ffff:127.0.0.1'],
  ])('%s is this machine', (host) => expect(isLoopbackHost(host)).toBe(true));

  test.each([['notlocalhost'], ['localhost.example.com'], ['10.0.0.1'], ['128.0.0.1'], ['::2'], ['[::2]'], ['example.com'], [''], ['[::1']])(
    '%s is not',
    (host) => expect(isLoopbackHost(host)).toBe(false),
  );
});

describe('origin policy', () => {
  const policy = createOriginPolicy({ corsOrigins: ['https://app.example'], publicUrl: 'https://GW.example.com:8443/base' });

  test('no Origin passes in closed mode whatever the Host', () => {
    expect(policy.check(req({ host: 'anything.example' }), false)).toEqual({ ok: true });
  });

  test('an Origin must be the request host, PUBLIC_URL or a CORS origin', () => {
    expect(policy.check(req({ host: 'LOCALHOST:4000', origin: 'http://localhost:4000' }), false)).toEqual({ ok: true });
    expect(policy.check(req({ host: 'x.example', origin: 'https://app.example' }), false)).toEqual({ ok: true });
    expect(policy.check(req({ host: 'x.example', origin: 'https://gw.example.com:8443' }), false)).toEqual({ ok: true });
    for (const origin of ['https://evil.example', 'null', 'not a url', 'http://localhost:4001', 'https://app.example:1']) {
      expect(policy.check(req({ host: 'localhost:4000', origin }), false)).toEqual({
        ok: false,
        code: 'FORBIDDEN_ORIGIN',
        message: `requests from origin ${origin} are not allowed (see CORS_ORIGINS)`,
      });
    }
    // No Host at all: an Origin cannot be same-origin with it.
    expect(policy.check(req({ origin: 'http://localhost' }), false)).toMatchObject({ ok: false, code: 'FORBIDDEN_ORIGIN' });
  });

  test('open mode answers only a Host that names this machine or PUBLIC_URL', () => {
    for (const host of ['localhost:4000', '127.0.0.1:8080', '[::1]:4000', '[::1]', 'LOCALHOST', 'gw.example.com:8443', 'GW.EXAMPLE.COM:8443']) {
      expect(policy.check(req({ host }), true), host).toEqual({ ok: true });
    }
    for (const host of ['evil.example', 'gw.example.com', '10.0.0.1:4000', '127.0.0.1:80x']) {
      expect(policy.check(req({ host }), true), host).toEqual({
        ok: false,
        code: 'FORBIDDEN_HOST',
        message: `open mode answers only requests addressed to this machine, not to "${host.toLowerCase()}"`,
      });
    }
    expect(policy.check(req({}), true)).toEqual({
      ok: false,
      code: 'FORBIDDEN_HOST',
      message: 'open mode answers only requests addressed to this machine, not to ""',
    });
    // The same Hosts are fine when a key protects the gateway.
    expect(policy.check(req({ host: 'evil.example' }), false)).toEqual({ ok: true });
  });

  test('a foreign Origin is refused before the Host is judged', () => {
    expect(policy.check(req({ host: 'evil.example', origin: 'https://other.example' }), true)).toMatchObject({ code: 'FORBIDDEN_ORIGIN' });
  });

  test("open mode's verdict per Host is remembered: the address is parsed once per distinct Host, and stays right past the memo's bound", () => {
    const policy = createOriginPolicy({ corsOrigins: [] });
    const parsed = vi.spyOn(ipaddr, 'isValid');
    onDispose(() => parsed.mockRestore());
    for (let i = 0; i < 10; i++) {
      expect(policy.check(req({ host: '127.0.0.1:4000' }), true)).toEqual({ ok: true });
      expect(policy.check(req({ host: '10.1.2.3:4000' }), true)).toMatchObject({ ok: false, code: 'FORBIDDEN_HOST' });
    }
    expect(parsed.mock.calls).toEqual([['127.0.0.1'], ['10.1.2.3']]);
    // More distinct Hosts than the memo holds (any client picks its Host): every verdict still right.
    const hosts = Array.from({ length: MAX_REMEMBERED_HOSTS * 2 + 3 }, (_, i) => (i % 2 ? `127.0.${i >> 8}.${i & 255}:1` : `h${i}.example`));
    for (const round of [1, 2]) {
      parsed.mockClear();
      for (const [i, host] of hosts.entries()) {
        expect(policy.check(req({ host }), true).ok, `${host}, round ${round}`).toBe(i % 2 === 1);
      }
      // The memo keeps at most MAX_REMEMBERED_HOSTS, so most Hosts are parsed again the second time.
      expect(parsed.mock.calls.length).toBeGreaterThanOrEqual(hosts.length - (round === 1 ? 0 : MAX_REMEMBERED_HOSTS));
    }
    expect(policy.check(req({ host: '10.1.2.3:4000' }), true)).toMatchObject({ ok: false, code: 'FORBIDDEN_HOST' });
  });

  test('without PUBLIC_URL only loopback Hosts pass in open mode', () => {
    const bare = createOriginPolicy({ corsOrigins: [] });
    expect(bare.check(req({ host: 'localhost:1' }), true)).toEqual({ ok: true });
    expect(bare.check(req({ host: 'gw.example.com' }), true)).toMatchObject({ code: 'FORBIDDEN_HOST' });
    expect(bare.check(req({ host: 'x', origin: 'https://app.example' }), false)).toMatchObject({ code: 'FORBIDDEN_ORIGIN' });
  });
});

describe('sendJson and refuse', () => {
  test('sendJson writes the status, JSON type, byte length and extra headers', () => {
    const { res, sent } = recordingResponse();
    sendJson(res, 201, { word: 'café' }, { 'x-extra': '1' });
    expect(sent.status).toBe(201);
    expect(sent.body).toBe('{"word":"café"}');
    expect(sent.headers).toEqual({ 'content-type': 'application/json; charset=utf-8', 'content-length': 16, 'x-extra': '1' });
  });

  test('extra headers win over the defaults', () => {
    const { res, sent } = recordingResponse();
    sendJson(res, 200, [], { 'content-type': 'text/plain' });
    expect(sent.headers).toEqual({ 'content-type': 'text/plain', 'content-length': 2 });
  });

  test('refuse answers in the shape of a GraphQL error', () => {
    const { res, sent } = recordingResponse();
    refuse(res, 403, 'FORBIDDEN_HOST', 'no', { 'www-authenticate': 'Bearer' });
    expect(sent.status).toBe(403);
    expect(JSON.parse(sent.body ?? '')).toEqual({ errors: [{ message: 'no', extensions: { code: 'FORBIDDEN_HOST' } }] });
    expect(sent.headers?.['www-authenticate']).toBe('Bearer');
    const plain = recordingResponse();
    refuse(plain.res, 401, 'UNAUTHENTICATED', 'key');
    expect(Object.keys(plain.sent.headers ?? {}).sort()).toEqual(['content-length', 'content-type']);
  });
});

describe('useBodyLimit', () => {
  const LIMIT = 100;
  let resolved = 0;
  const yoga = createYoga({
    schema: createSchema({
      typeDefs: 'type Query { echo(s: String): String }',
      resolvers: {
        Query: {
          echo: (_: unknown, { s }: { s: string }) => {
            resolved++;
            return s;
          },
        },
      },
    }),
    plugins: [useBodyLimit(LIMIT)],
    logging: false,
    maskedErrors: false,
  });

  /** A body of exactly `size` bytes that echoes its padding. */
  const bodyOf = (size: number) => {
    const base = JSON.stringify({ query: '{ echo(s: "") }' });
    const pad = 'x'.repeat(size - base.length);
    const body = JSON.stringify({ query: `{ echo(s: "${pad}") }` });
    expect(Buffer.byteLength(body)).toBe(size);
    return body;
  };

  const post = (body: string | ReadableStream<Uint8Array>, headers: Record<string, string> = {}) =>
    yoga.fetch('http://localhost/graphql', {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...headers },
      body,
      duplex: 'half',
    } as RequestInit);

  /** A body without Content-Length, in chunks of `chunk` bytes, recording how much was read. */
  const chunked = (text: string, chunk = 30) => {
    const bytes = Buffer.from(text);
    const state = { read: 0, done: false };
    const stream = new ReadableStream<Uint8Array>({
      pull(controller) {
        if (state.read >= bytes.length) {
          state.done = true;
          return controller.close();
        }
        const part = bytes.subarray(state.read, state.read + chunk);
        state.read += part.length;
        controller.enqueue(new Uint8Array(part));
      },
    });
    return { stream, state };
  };

  test('a Content-Length up to the limit is served', async () => {
    const body = bodyOf(LIMIT);
    const res = await post(body, { 'content-length': String(LIMIT) });
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ data: { echo: 'x'.repeat(LIMIT - JSON.stringify({ query: '{ echo(s: "") }' }).length) } });
  });

  test('a Content-Length over the limit is 413 before anything runs', async () => {
    const before = resolved;
    const res = await post(bodyOf(LIMIT + 1), { 'content-length': String(LIMIT + 1) });
    expect(res.status).toBe(413);
    const json = (await res.json()) as { errors: { message: string; extensions: { code: string } }[] };
    expect(json.errors[0]).toMatchObject({ message: 'Request body too large', extensions: { code: 'REQUEST_ENTITY_TOO_LARGE' } });
    expect(resolved).toBe(before);
  });

  test.each([['abc'], ['12a'], ['a12'], ['-1'], ['1.5']])('a malformed Content-Length %j is 400', async (length) => {
    const before = resolved;
    const res = await post(bodyOf(60), { 'content-length': length });
    expect(res.status).toBe(400);
    const json = (await res.json()) as { errors: { message: string; extensions: { code: string } }[] };
    expect(json.errors[0]).toMatchObject({ message: 'Content-Length header is invalid.', extensions: { code: 'BAD_REQUEST' } });
    expect(resolved).toBe(before);
  });

  test('a chunked body up to the limit is served', async () => {
    const { stream, state } = chunked(bodyOf(LIMIT));
    const res = await post(stream);
    expect(res.status).toBe(200);
    expect(((await res.json()) as { data: { echo: string } }).data.echo).toMatch(/^x+$/);
    expect(state.done).toBe(true);
  });

  test('a chunked body over the limit is 413, and the rest of it is still drained', async () => {
    const before = resolved;
    const { stream, state } = chunked(bodyOf(1000));
    const res = await post(stream);
    expect(res.status).toBe(413);
    const json = (await res.json()) as { errors: { extensions: { code: string } }[] };
    expect(json.errors[0]?.extensions.code).toBe('REQUEST_ENTITY_TOO_LARGE');
    expect(resolved).toBe(before);
    // Lingering close: the refused body is read to its end rather than cut off with bytes unread.
    await waitFor(() => state.done, (done) => done, 5_000);
    expect(state.read).toBe(1000);
  });

  test('one byte over the limit, chunked, is refused', async () => {
    const { stream } = chunked(bodyOf(LIMIT + 1), LIMIT + 1);
    expect((await post(stream)).status).toBe(413);
  });

  test('the Content-Length alone decides: a header over the limit is 413 even when fewer bytes follow', async () => {
    // Node's parser never passes more bytes than the header says, so the header bounds the body.
    const res = await post('{"query":"{ echo }"}', { 'content-length': String(LIMIT + 1) });
    expect(res.status).toBe(413);
  });

  test('a chunked body no parser accepts gets yoga\'s own answer', async () => {
    const plain = createYoga({ schema: createSchema({ typeDefs: 'type Query { a: String }' }), logging: false });
    const ask = (y: typeof yoga) =>
      y.fetch('http://localhost/graphql', { method: 'POST', headers: { 'content-type': 'text/x-unknown' }, body: chunked('{ a }').stream, duplex: 'half' } as RequestInit);
    const expected = await ask(plain);
    const res = await ask(yoga);
    expect(res.status).toBe(expected.status);
    expect(res.status).not.toBe(500);
  });

  test('a GET without a body is untouched', async () => {
    const res = await yoga.fetch(`http://localhost/graphql?query=${encodeURIComponent('{ echo(s: "hi") }')}`, { headers: { accept: 'application/json' } });
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ data: { echo: 'hi' } });
  });
});

describe('resultCost', () => {
  const Item: GraphQLObjectType = new GraphQLObjectType({
    name: 'Item',
    fields: () => ({
      a: { type: GraphQLString },
      heavy: { type: GraphQLString, extensions: { cost: 7 } },
      odd: { type: GraphQLString, extensions: { cost: 'many' } },
      sub: { type: new GraphQLList(Item), args: { first: { type: GraphQLInt } } },
      all: { type: new GraphQLList(Item), args: { last: { type: GraphQLInt } } },
    }),
  });
  const Query = new GraphQLObjectType({
    name: 'Query',
    fields: {
      a: { type: GraphQLString },
      huge: { type: GraphQLString, extensions: { cost: MAX_RESULT_COST } },
      item: { type: Item },
      items: { type: new GraphQLList(Item), args: { first: { type: GraphQLInt, defaultValue: 20 } } },
      raw: { type: new GraphQLList(Item), args: { first: { type: GraphQLString } } },
    },
  });
  const schema = new GraphQLSchema({
    query: Query,
    subscription: new GraphQLObjectType({ name: 'Subscription', fields: { items: { type: new GraphQLList(Item), args: { first: { type: GraphQLInt } } } } }),
  });
  const cost = (query: string, variables?: Record<string, unknown>, operationName?: string) => resultCost(schema, parse(query), operationName, variables);

  test('a field costs its cost extension, 1 by default, and nothing for __typename', () => {
    expect(cost('{ a }')).toBe(1);
    expect(cost('{ a __typename }')).toBe(1);
    expect(cost('{ item { heavy } }')).toBe(1 + 7);
    expect(cost('{ item { odd } }')).toBe(1 + 1);
  });

  test('a list with `first` costs ROW_COST per row and multiplies its children', () => {
    expect(cost('{ items(first: 10) { a } }')).toBe(1 + 10 * ROW_COST + 10);
    expect(cost('{ items { a } }')).toBe(1 + 20 * ROW_COST + 20); // the argument's default
    expect(cost('query ($f: Int) { items(first: $f) { a heavy } }', { f: 4 })).toBe(1 + 4 * ROW_COST + 4 * 8);
    expect(cost('{ items(first: 2) { sub(first: 3) { a } } }')).toBe(1 + 2 * ROW_COST + 2 + 6 * ROW_COST + 6);
    // A list without `first` passes its parent's rows on, with no row cost of its own.
    expect(cost('{ items(first: 2) { all(last: 9) { a } } }')).toBe(1 + 2 * ROW_COST + 2 + 2);
  });

  test('`first` is clamped to 0..100, and one that is not a number counts as 0', () => {
    expect(cost('{ items(first: 1000) { a } }')).toBe(1 + 100 * ROW_COST + 100);
    expect(cost('{ items(first: -5) { a } }')).toBe(1);
    expect(cost('query ($f: Int) { items(first: $f) { a } }', { f: null })).toBe(1);
    expect(cost('{ raw(first: "10") { a } }')).toBe(1);
    // An argument that does not coerce (a literal of the wrong type) counts as 0 too.
    expect(cost('{ items(first: "x") { a } }')).toBe(1);
  });

  test('fragments, inline or named, count as if written in place', () => {
    expect(cost('{ items(first: 3) { ...F } } fragment F on Item { a heavy }')).toBe(1 + 3 * ROW_COST + 3 * 8);
    expect(cost('{ items(first: 3) { ... on Item { a } ... { heavy } } }')).toBe(1 + 3 * ROW_COST + 3 + 3 * 7);
    expect(cost('{ ... on Query { item { heavy } } }')).toBe(8);
    expect(cost('{ a ...Missing }')).toBe(1);
    // An object field selected without a selection set (refused by validation later) is not walked into.
    expect(cost('{ item }')).toBe(1);
  });

  test('the walk stops once past the limit', () => {
    expect(cost('{ huge a }')).toBe(MAX_RESULT_COST + 1);
    expect(cost('{ huge a a2: a }')).toBe(MAX_RESULT_COST + 1);
    expect(cost('{ items(first: 100) { sub(first: 100) { a } } a }')).toBe(1 + 100 * ROW_COST + 100 + 10_000 * ROW_COST);
  });

  test('picks the named operation; undefined without one or with variables that do not coerce', () => {
    const doc = 'query A { a } query B { item { heavy } }';
    expect(cost(doc, undefined, 'A')).toBe(1);
    expect(cost(doc, undefined, 'B')).toBe(8);
    expect(cost(doc, undefined, 'C')).toBeUndefined();
    expect(cost('query ($f: Int!) { items(first: $f) { a } }', {})).toBeUndefined();
    expect(cost('query ($f: Int) { items(first: $f) { a } }', { f: 'x' })).toBeUndefined();
    expect(cost('mutation { a }')).toBeUndefined();
    expect(cost('subscription { items(first: 2) { a } }')).toBe(1 + 2 * ROW_COST + 2);
    expect(resultCost(schema, parse('{ a }'), null, null)).toBe(1);
  });

  test('a parsed document is walked once when its cost cannot depend on variables, and only then', () => {
    // Yoga hands the same document object for the same text: these reuse one, as it does.
    const twoOps = parse('query A($x: Int) { a } query B { item { heavy } }');
    expect(resultCost(schema, twoOps, 'A', { x: 1 })).toBe(1);
    expect(resultCost(schema, twoOps, 'B', {})).toBe(8); // per operation, not per document
    expect(resultCost(schema, twoOps, 'A', { x: 'not an int' })).toBe(1); // execution reports those variables
    expect(resultCost(schema, twoOps, 'C', {})).toBeUndefined();

    const paged = parse('query ($f: Int) { items(first: $f) { a } }');
    expect(resultCost(schema, paged, undefined, { f: 1 })).toBe(1 + ROW_COST + 1);
    expect(resultCost(schema, paged, undefined, { f: 100 })).toBe(1 + 100 * ROW_COST + 100);
    expect(resultCost(schema, paged, undefined, { f: 'x' })).toBeUndefined();

    // Over the limit: never kept, so variables that do not coerce still go to execution's error.
    const tooBig = parse('query ($x: Int) { huge a }');
    expect(resultCost(schema, tooBig, undefined, { x: 'bad' })).toBeUndefined();
    expect(resultCost(schema, tooBig, undefined, { x: 1 })).toBe(MAX_RESULT_COST + 1);
    expect(resultCost(schema, tooBig, undefined, { x: 'bad' })).toBeUndefined();

    // Another schema prices the same document its own way.
    const cheap = new GraphQLSchema({ query: new GraphQLObjectType({ name: 'Query', fields: { a: { type: GraphQLString }, item: { type: new GraphQLObjectType({ name: 'Item', fields: { heavy: { type: GraphQLString } } }) } } }) });
    expect(resultCost(cheap, twoOps, 'B', {})).toBe(2);
    expect(resultCost(schema, twoOps, 'B', {})).toBe(8);
  });
});

describe('useResultCostLimit', () => {
  let resolved = 0;
  const plugins: Plugin[] = [useResultCostLimit()];
  const yoga = createYoga({
    schema: createSchema({
      typeDefs: buildSchema(`
        type Item { a: String sub(first: Int): [Item] }
        type Query { items(first: Int): [Item] }
        type Subscription { items(first: Int): [Item] }
      `),
      resolvers: {
        Query: {
          items: (_: unknown, { first }: { first: number }) => {
            resolved++;
            return Array.from({ length: first }, () => ({ a: 'x' }));
          },
        },
        Subscription: {
          items: {
            subscribe: async function* (_: unknown, { first }: { first: number }) {
              resolved++;
              yield { items: Array.from({ length: first }, () => ({ a: 'x' })) };
            },
          },
        },
      },
    }),
    plugins,
    logging: false,
  });
  const gql = (query: string, variables: Record<string, unknown>, accept = 'application/json') =>
    yoga.fetch('http://localhost/graphql', {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept },
      body: JSON.stringify({ query, variables }),
    });

  // items(first: f) { a } costs 1 + 4f (ROW_COST and `a` per row): 13 of them with f = 100 cost 5213.
  const QUERY = 'query ($f: Int) { x: items(first: $f) { a } y: items(first: $f) { a } }';

  test('an operation within the limit runs', async () => {
    const before = resolved;
    const res = await gql(QUERY, { f: 25 });
    expect(res.status).toBe(200);
    const json = (await res.json()) as { data: { x: unknown[] } };
    expect(json.data.x).toHaveLength(25);
    expect(resolved).toBe(before + 2);
  });

  test('an operation over the limit with its variables is refused before any resolver', async () => {
    const aliases = Array.from({ length: 13 }, (_, i) => `i${i}: items(first: $f) { a }`).join(' ');
    expect(13 * (1 + 100 * ROW_COST + 100)).toBeGreaterThan(MAX_RESULT_COST);
    const before = resolved;
    const res = await gql(`query ($f: Int) { ${aliases} }`, { f: 100 });
    expect(res.status).toBe(400);
    const json = (await res.json()) as { data?: unknown; errors: { message: string; extensions: { code: string } }[] };
    expect(json.data).toBeUndefined();
    expect(json.errors[0]?.extensions.code).toBe('QUERY_TOO_COMPLEX');
    expect(json.errors[0]?.message).toMatch(new RegExp(`^operation cost \\d+ exceeds ${MAX_RESULT_COST} with these variables`));
    expect(resolved).toBe(before);
  });

  test('an operation costing exactly MAX_RESULT_COST runs; one more is refused', async () => {
    // 16 fields of 1 + 4 × first each: 16 + 4 × (12 × 100 + 46) = 5000.
    const firsts = [...Array(12).fill(100), 46, 0, 0, 0] as number[];
    const query = (extra: string) => `{ ${firsts.map((f, i) => `i${i}: items(first: ${f}) { a }`).join(' ')} ${extra} }`;
    const exact = (await (await gql(query(''), {})).json()) as { data?: unknown; errors?: unknown[] };
    expect(exact.errors).toBeUndefined();
    const over = (await (await gql(query('z: items(first: 0) { a }'), {})).json()) as { errors: { extensions: { code: string }; message: string }[] };
    expect(over.errors[0]?.extensions.code).toBe('QUERY_TOO_COMPLEX');
    expect(over.errors[0]?.message).toBe(`operation cost 5001 exceeds ${MAX_RESULT_COST} with these variables: ask for fewer rows or fields`);
  });

  test('a subscription over the limit is refused too; one within it runs', async () => {
    const before = resolved;
    // 1 + 100 × (ROW_COST + 1) + 10,000 × ROW_COST: 30,401.
    const refused = await (await gql('subscription ($f: Int) { items(first: $f) { sub(first: $f) { a } } }', { f: 100 }, 'text/event-stream')).text();
    expect(refused).toContain('QUERY_TOO_COMPLEX');
    expect(resolved).toBe(before);
    const ok = await (await gql('subscription ($f: Int) { items(first: $f) { a } }', { f: 2 }, 'text/event-stream')).text();
    expect(ok).not.toContain('QUERY_TOO_COMPLEX');
    expect(ok).toContain('"items":[{"a":"x"},{"a":"x"}]');
    expect(resolved).toBe(before + 1);
  });
});
