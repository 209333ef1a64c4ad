import {
  type ExecutionResult,
  GraphQLError,
  GraphQLInt,
  GraphQLObjectType,
  GraphQLSchema,
  parse,
} from 'graphql';
import { createSchema, createYoga } from 'graphql-yoga';
import { describe, expect, test } from 'vitest';
import type { Principal } from '../src/auth/principal.js';
import type { PredictionRow } from '../src/db/schema.js';
import { PubSub, type PredictionPubSub } from '../src/pubsub.js';
import type { Context } from '../src/schema/context.js';
import { markVolatile } from '../src/schema/volatile.js';
import { cacheKey, createResponseCache, onlyReadsPrediction } from '../src/server/response-cache.js';
import type { ServerContext } from '../src/server/yoga.js';
import { waitFor } from './helpers/app.js';
import { must } from './helpers/must.js';
import { sharedSubscribeFn } from './helpers/shared-execution.js';

/**
 * Fast unit tests of server parts that were reached only through real servers: the response cache
 * on a minimal in-process yoga, and the shared subscription execution's edges.
 */

describe('onlyReadsPrediction', () => {
  test.each([
    ['{ prediction(id: "1") { id } }', undefined],
    ['query Q { prediction(id: "1") { id } }', null],
    ['{ a: prediction(id: "1") { id } b: prediction(id: "2") { id } __typename }', undefined],
    ['query A { prediction(id: "1") { id } } mutation B { cancelPrediction(id: "1") { id } }', 'A'],
    ['mutation B { cancelPrediction(id: "1") { id } } query A { prediction(id: "1") { id } }', 'A'],
    ['{ prediction(id: "1") { ...F } } fragment F on Prediction { id }', undefined],
    ['{ prediction(id: "2") { id } } query A { prediction(id: "1") { id } }', 'A'],
  ])('%s (operation %s) only reads prediction(id)', (query, op) => {
    expect(onlyReadsPrediction(query, op)).toBe(true);
  });

  test.each([
    ['{ prediction(id: "1") { id ', undefined, 'a syntax error'],
    ['{ predictions { id } }', undefined, 'the list'],
    ['{ __typename }', undefined, 'no prediction at all'],
    ['{ prediction(id: "1") { id } predictions { id } }', undefined, 'prediction and the list'],
    ['{ predictions { id } prediction(id: "1") { id } }', undefined, 'the list first'],
    ['mutation { prediction(id: "1") { id } }', undefined, 'a mutation'],
    ['subscription { prediction(id: "1") { id } }', undefined, 'a subscription'],
    ['{ ...F } fragment F on Query { prediction(id: "1") { id } }', undefined, 'a root fragment'],
    ['{ ... on Query { prediction(id: "1") { id } } }', undefined, 'a root inline fragment'],
    ['{ prediction(id: "1") { id } ... on Query { predictions { id } } }', undefined, 'prediction and a root inline fragment'],
    ['{ prediction(id: "1") { id } ...prediction } fragment prediction on Query { predictions { id } }', undefined, 'prediction and a root fragment named prediction'],
    ['query A { prediction(id: "1") { id } } query B { prediction(id: "1") { id } }', undefined, 'two operations, none named'],
    ['query A { prediction(id: "1") { id } } mutation B { cancelPrediction(id: "1") { id } }', 'B', 'the named one is a mutation'],
    ['query A { prediction(id: "1") { id } }', 'C', 'the named one is absent'],
  ])('%s (operation %s) is not: %s', (query, op, _why) => {
    expect(onlyReadsPrediction(query, op)).toBe(false);
  });
});

describe('cacheKey', () => {
  test('a short key is the fields themselves; a long one (variables the operation ignores) is a digest, never held in full', () => {
    expect(cacheKey(3, 'owner-1\nhost:4000', 7, { id: 'p1' })).toBe('3\nowner-1\nhost:4000\n7\n{"id":"p1"}');
    expect(cacheKey(3, '\nhost:4000', 7, undefined)).toBe('3\n\nhost:4000\n7\n{}');
    const padded = (pad: string) => cacheKey(3, 'owner-1\nhost:4000', 7, { id: 'p1', pad });
    const long = padded('x'.repeat(5_000_000));
    expect(long).toMatch(/^[\w-]{43}$/); // sha256, base64url: no newline, so never a plain key
    expect(padded('y'.repeat(5_000_000))).not.toBe(long);
    expect(padded('x'.repeat(5_000_000))).toBe(long);
    // Each field counts: the same text split differently is another key.
    expect(new Set([cacheKey(1, 'a\nb', 2, {}), cacheKey(1, 'a\nb', 3, {}), cacheKey(2, 'a\nb', 2, {}), cacheKey(1, 'a\nc', 2, {})]).size).toBe(4);
  });
});

type Row = { id: string; status: string };

/** A yoga with the response cache over a tiny Prediction schema that counts its executions. */
function cacheRig(options: { max?: number; ttlMs?: number } = {}) {
  const pubsub: PredictionPubSub = new PubSub();
  const rows = new Map<string, Row>([
    ['p1', { id: 'p1', status: 'QUEUED' }],
    ['p2', { id: 'p2', status: 'QUEUED' }],
  ]);
  const executions: string[] = [];
  /** Run inside the next `prediction` resolver (a change that overlaps an execution). */
  let during: (() => void) | undefined;
  const cache = createResponseCache({ pubsub, ...options });
  const yoga = createYoga<ServerContext>({
    schema: createSchema<ServerContext>({
      typeDefs: `
        type Prediction { id: ID! status: String! queuePosition: Int oops: Int }
        type Query { prediction(id: ID!): Prediction predictions: [Prediction!]! other: Int broken: Int }
        type Mutation { touch(id: ID!): Prediction }
      `,
      resolvers: {
        Query: {
          prediction: (_: unknown, { id }: { id: string }) => {
            executions.push(id);
            const hook = during;
            during = undefined;
            hook?.();
            const row = rows.get(id);
            return row ? { ...row } : null;
          },
          predictions: () => {
            executions.push('list');
            return [...rows.values()];
          },
          other: () => {
            executions.push('other');
            return 1;
          },
          broken: () => {
            executions.push('broken');
            throw new GraphQLError('broken on purpose');
          },
        },
        Prediction: {
          queuePosition: (_row: Row, _args: unknown, ctx: object) => {
            markVolatile(ctx);
            return 3;
          },
          oops: () => {
            throw new GraphQLError('a nested field failed');
          },
        },
        Mutation: {
          touch: (_: unknown, { id }: { id: string }) => {
            executions.push(`touch ${id}`);
            return rows.get(id) ?? null;
          },
        },
      },
    }),
    plugins: [cache.plugin],
    logging: false,
    maskedErrors: false,
  });

  const alice: Principal = { owner: 'alice' };
  /** POST /graphql as `principal` (null: a request without a caller) to `host`. */
  async function post(query: string, variables: Record<string, unknown> = {}, { principal = alice as Principal | null, host = 'gw.example', operationName = undefined as string | undefined } = {}) {
    const res = await yoga.fetch(
      'http://gw.example/graphql',
      { method: 'POST', headers: { 'content-type': 'application/json', accept: 'application/graphql-response+json' }, body: JSON.stringify({ query, variables, operationName }) },
      { req: { headers: { host } }, principal: principal ?? undefined } as unknown as ServerContext,
    );
    return { status: res.status, headers: res.headers, body: (await res.json()) as ExecutionResult };
  }
  const publish = (id: string) => pubsub.publish('prediction:updated', id, must(rows.get(id)) as unknown as PredictionRow);
  const setDuring = (f: () => void) => {
    during = f;
  };
  return { cache, pubsub, rows, executions, post, publish, setDuring };
}

const GET = 'query Get($id: ID!) { prediction(id: $id) { id status } }';

describe('response cache', () => {
  test('a second identical read is answered from the cache: same body, no execution, no cache headers or metadata', async () => {
    const r = cacheRig();
    const first = await r.post(GET, { id: 'p1' });
    r.rows.set('p1', { id: 'p1', status: 'CHANGED WITHOUT A PUBLISH' });
    const second = await r.post(GET, { id: 'p1' });
    expect(first.status).toBe(200);
    expect(first.body).toEqual({ data: { prediction: { id: 'p1', status: 'QUEUED' } } });
    expect(second.status).toBe(200);
    expect(second.body).toEqual(first.body);
    expect(r.executions).toEqual(['p1']);
    for (const res of [first, second]) {
      expect(res.headers.get('etag')).toBeNull();
      expect(res.headers.get('last-modified')).toBeNull();
    }
  });

  test('the key holds owner, Host, variables and operation: each differing read is executed', async () => {
    const r = cacheRig();
    await r.post(GET, { id: 'p1' });
    await r.post(GET, { id: 'p1' }, { principal: { owner: 'bob' } });
    await r.post(GET, { id: 'p1' }, { principal: { owner: null } });
    await r.post(GET, { id: 'p1' }, { host: 'other.example' });
    await r.post(GET, { id: 'p2' });
    expect(r.executions).toEqual(['p1', 'p1', 'p1', 'p1', 'p2']);
    // Each of them is now cached on its own.
    await r.post(GET, { id: 'p1' }, { principal: { owner: 'bob' } });
    await r.post(GET, { id: 'p1' }, { principal: { owner: null } });
    await r.post(GET, { id: 'p1' }, { host: 'other.example' });
    await r.post(GET, { id: 'p2' });
    await r.post(GET, { id: 'p1' });
    expect(r.executions).toHaveLength(5);

    const two = 'query A { prediction(id: "p1") { id } } query B { prediction(id: "p1") { id status } }';
    const a = await r.post(two, {}, { operationName: 'A' });
    const b = await r.post(two, {}, { operationName: 'B' });
    expect(a.body).toEqual({ data: { prediction: { id: 'p1' } } });
    expect(b.body).toEqual({ data: { prediction: { id: 'p1', status: 'QUEUED' } } });
    expect(r.executions).toHaveLength(7);
  });

  test('a request without a caller is never cached', async () => {
    const r = cacheRig();
    await r.post(GET, { id: 'p1' }, { principal: null });
    await r.post(GET, { id: 'p1' }, { principal: null });
    expect(r.executions).toEqual(['p1', 'p1']);
  });

  test('a publish drops the answers holding that prediction only, at once', async () => {
    const r = cacheRig();
    await r.post(GET, { id: 'p1' });
    await r.post(GET, { id: 'p2' });
    r.rows.set('p1', { id: 'p1', status: 'RUNNING' });
    r.rows.set('p2', { id: 'p2', status: 'RUNNING' });
    r.publish('p1');
    expect((await r.post(GET, { id: 'p1' })).body).toEqual({ data: { prediction: { id: 'p1', status: 'RUNNING' } } });
    expect((await r.post(GET, { id: 'p2' })).body).toEqual({ data: { prediction: { id: 'p2', status: 'QUEUED' } } });
    expect(r.executions).toEqual(['p1', 'p2', 'p1']);
  });

  test('invalidate(id) drops that prediction, clear() every answer; after stop() a publish drops nothing', async () => {
    const r = cacheRig();
    await r.post(GET, { id: 'p1' });
    await r.post(GET, { id: 'p2' });
    r.cache.invalidate('p2');
    await r.post(GET, { id: 'p1' });
    await r.post(GET, { id: 'p2' });
    expect(r.executions).toEqual(['p1', 'p2', 'p2']);
    r.cache.clear();
    await r.post(GET, { id: 'p1' });
    await r.post(GET, { id: 'p2' });
    expect(r.executions).toEqual(['p1', 'p2', 'p2', 'p1', 'p2']);
    // Cached again after the clear.
    await r.post(GET, { id: 'p1' });
    expect(r.executions).toHaveLength(5);
    r.cache.stop();
    r.publish('p1');
    await r.post(GET, { id: 'p1' });
    expect(r.executions).toHaveLength(5);
  });

  test('an answer whose execution overlapped a change is not stored (a publish, a clear, an invalidate)', async () => {
    for (const change of ['publish', 'clear', 'invalidate'] as const) {
      const r = cacheRig();
      r.setDuring(() => (change === 'publish' ? r.publish('p2') : change === 'clear' ? r.cache.clear() : r.cache.invalidate('p2')));
      expect((await r.post(GET, { id: 'p1' })).body).toEqual({ data: { prediction: { id: 'p1', status: 'QUEUED' } } });
      await r.post(GET, { id: 'p1' });
      await r.post(GET, { id: 'p1' });
      expect(r.executions, change).toEqual(['p1', 'p1']);
    }
  });

  test('not stored: a null prediction, an error, a volatile answer, the list, other fields, mutations', async () => {
    const r = cacheRig();
    const runs = async (query: string, variables: Record<string, unknown> = {}) => {
      const before = r.executions.length;
      const first = await r.post(query, variables);
      await r.post(query, variables);
      return { n: r.executions.length - before, first };
    };
    const unknown = await runs(GET, { id: 'nope' });
    expect(unknown.first.body).toEqual({ data: { prediction: null } });
    expect(unknown.n).toBe(2);
    const twoOneNull = await runs('{ a: prediction(id: "p1") { id } b: prediction(id: "nope") { id } }');
    expect(twoOneNull.n).toBe(4);
    const volatile = await runs('{ prediction(id: "p1") { id queuePosition } }');
    expect(volatile.first.body).toEqual({ data: { prediction: { id: 'p1', queuePosition: 3 } } });
    expect(volatile.n).toBe(2);
    expect((await runs('{ predictions { id } }')).n).toBe(2);
    expect((await runs('{ other }')).n).toBe(2);
    expect((await runs('mutation { touch(id: "p1") { id } }')).n).toBe(2);
    expect((await runs('{ prediction(id: "p1") { id } broken }')).n).toBe(4);
    // An error below a prediction that is there: data and errors both.
    const nested = await runs('{ prediction(id: "p1") { id oops } }');
    expect(nested.first.body).toMatchObject({ data: { prediction: { id: 'p1', oops: null } }, errors: [{ message: 'a nested field failed' }] });
    expect(nested.n).toBe(2);
    // The volatile read did not poison the plain one of the same id.
    expect((await runs('{ prediction(id: "p1") { id status } }')).n).toBe(1);
  });

  test('a judgment is per document: a cacheable text judged first does not make the list cacheable', async () => {
    const r = cacheRig();
    await r.post(GET, { id: 'p1' });
    await r.post('{ predictions { id } }');
    await r.post('{ predictions { id } }');
    expect(r.executions).toEqual(['p1', 'list', 'list']);
    // And the other way round: a refused document judged first does not refuse the next.
    const r2 = cacheRig();
    await r2.post('{ predictions { id } }');
    await r2.post(GET, { id: 'p1' });
    await r2.post(GET, { id: 'p1' });
    expect(r2.executions).toEqual(['list', 'p1']);
  });

  test('the same text under another operation name is judged again', async () => {
    const r = cacheRig();
    const doc = 'query A { prediction(id: "p1") { id } } query B { predictions { id } }';
    await r.post(doc, {}, { operationName: 'A' });
    await r.post(doc, {}, { operationName: 'B' });
    await r.post(doc, {}, { operationName: 'B' });
    await r.post(doc, {}, { operationName: 'A' });
    expect(r.executions).toEqual(['p1', 'list', 'list']);
  });

  test('a document of 8192 characters is cached, one of 8193 is not', async () => {
    const r = cacheRig();
    const base = '{ prediction(id: "p1") { id } }';
    const at = (n: number) => base + ' '.repeat(n - base.length);
    expect(at(8192)).toHaveLength(8192);
    await r.post(at(8192));
    await r.post(at(8192));
    expect(r.executions).toEqual(['p1']);
    await r.post(at(8193));
    await r.post(at(8193));
    expect(r.executions).toEqual(['p1', 'p1', 'p1']);
  });

  test('a mutation returning a prediction does not invalidate its cached read', async () => {
    const r = cacheRig();
    await r.post(GET, { id: 'p1' });
    await r.post('mutation { touch(id: "p1") { id status } }');
    await r.post(GET, { id: 'p1' });
    expect(r.executions).toEqual(['p1', 'touch p1']);
  });

  test('max bounds the answers kept; ttlMs how long', async () => {
    const small = cacheRig({ max: 1 });
    await small.post(GET, { id: 'p1' });
    await small.post(GET, { id: 'p2' });
    await small.post(GET, { id: 'p1' });
    expect(small.executions).toEqual(['p1', 'p2', 'p1']);

    const big = cacheRig();
    await big.post(GET, { id: 'p1' });
    await big.post(GET, { id: 'p2' });
    await big.post(GET, { id: 'p1' });
    expect(big.executions).toEqual(['p1', 'p2']);

    const short = cacheRig({ ttlMs: 30 });
    await short.post(GET, { id: 'p1' });
    await waitFor(
      async () => {
        await short.post(GET, { id: 'p1' });
        return short.executions.length;
      },
      (n) => n > 1,
      5000,
    );
    expect(short.executions).toEqual(['p1', 'p1']);
  });
});

const ctx = { principal: { owner: 'alice' }, baseUrl: () => 'http://gw.example' } as unknown as Context;

/** A subscription field over a hand-made source; the resolver (sync or async) counts executions. */
function subscriptionSchema(source: () => AsyncIterator<unknown> | AsyncIterable<unknown>, resolve: (event: unknown) => unknown) {
  return new GraphQLSchema({
    query: new GraphQLObjectType({ name: 'Query', fields: { ok: { type: GraphQLInt } } }),
    subscription: new GraphQLObjectType({
      name: 'Subscription',
      fields: {
        n: {
          type: GraphQLInt,
          subscribe: () => source() as AsyncIterable<unknown>,
          resolve: (event) => resolve(event),
        },
      },
    }),
  });
}

const SUB = parse('subscription { n }');

async function stream(schema: GraphQLSchema, subscribe = sharedSubscribeFn()) {
  const out = await subscribe({ schema, document: SUB, contextValue: ctx, variableValues: {} });
  if (!(Symbol.asyncIterator in out)) throw new Error(`not a stream: ${JSON.stringify(out)}`);
  return out;
}

describe('shared subscription execution, edges', () => {
  test('an asynchronous result is delivered, and not shared', async () => {
    const event = { n: 5 };
    let executions = 0;
    const schema = subscriptionSchema(
      async function* () {
        yield event;
        yield event;
      },
      async (e) => {
        executions++;
        return (e as { n: number }).n;
      },
    );
    const s = await stream(schema);
    expect(s[Symbol.asyncIterator]()).toBe(s);
    const one = await s.next();
    const two = await s.next();
    expect(one).toEqual({ done: false, value: { data: { n: 5 } } });
    expect(two).toEqual({ done: false, value: { data: { n: 5 } } });
    expect(two.value).not.toBe(one.value);
    expect(executions).toBe(2);
    expect(await s.next()).toEqual({ done: true, value: undefined });
  });

  test('a synchronous result of one event object is shared between two streams; events that are not objects are executed each time', async () => {
    const event = { n: 8 };
    let executions = 0;
    const schema = subscriptionSchema(
      async function* () {
        yield event;
        yield 4;
        yield null;
      },
      (e) => {
        executions++;
        return typeof e === 'number' ? e : e === null ? -1 : (e as { n: number }).n;
      },
    );
    const subscribe = sharedSubscribeFn();
    const a = await stream(schema, subscribe);
    const b = await stream(schema, subscribe);
    const a1 = await a.next();
    const b1 = await b.next();
    expect(a1).toEqual({ done: false, value: { data: { n: 8 } } });
    expect(b1.value).toBe(a1.value);
    expect(executions).toBe(1);
    expect(await a.next()).toEqual({ done: false, value: { data: { n: 4 } } });
    expect(await b.next()).toEqual({ done: false, value: { data: { n: 4 } } });
    expect(executions).toBe(3);
    expect(await a.next()).toEqual({ done: false, value: { data: { n: -1 } } });
    expect(await b.next()).toEqual({ done: false, value: { data: { n: -1 } } });
    expect(executions).toBe(5);
  });

  test('a subscribe that fails is answered with its errors, not a stream', async () => {
    const schema = subscriptionSchema(
      () => {
        throw new GraphQLError('no such prediction', { extensions: { code: 'NOT_FOUND' } });
      },
      () => 1,
    );
    const out = (await sharedSubscribeFn()({ schema, document: parse('subscription { n }'), contextValue: ctx, variableValues: {} })) as ExecutionResult;
    expect(Symbol.asyncIterator in out).toBe(false);
    expect(out.errors?.map((e) => [e.message, e.extensions.code])).toEqual([['no such prediction', 'NOT_FOUND']]);
  });

  test('return() and throw() reach the source; without them the stream just ends', async () => {
    const calls: string[] = [];
    const source = (withEnds: boolean) => () => {
      const it: AsyncIterator<unknown> & { [Symbol.asyncIterator](): AsyncIterator<unknown> } = {
        next: async () => ({ done: false, value: { n: 1 } }),
        [Symbol.asyncIterator]() {
          return this;
        },
      };
      if (withEnds) {
        it.return = async () => {
          calls.push('return');
          return { done: true, value: 'returned' };
        };
        it.throw = async (err: unknown) => {
          calls.push(`throw ${(err as Error).message}`);
          return { done: true, value: 'thrown' };
        };
      }
      return it;
    };
    const withEnds = await stream(subscriptionSchema(source(true), () => 1));
    expect(await withEnds.return?.()).toEqual({ done: true, value: 'returned' });
    expect(await withEnds.throw?.(new Error('boom'))).toEqual({ done: true, value: 'thrown' });
    expect(calls).toEqual(['return', 'throw boom']);
    const bare = await stream(subscriptionSchema(source(false), () => 1));
    expect(await bare.next()).toEqual({ done: false, value: { data: { n: 1 } } });
    expect(await bare.return?.()).toEqual({ done: true, value: undefined });
    expect(await bare.throw?.(new Error('boom'))).toEqual({ done: true, value: undefined });
  });
});
