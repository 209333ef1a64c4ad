import { createHash } from 'node:crypto';
import Database from 'better-sqlite3';
import { GraphQLError, graphql } from 'graphql';
import { describe, expect, test } from 'vitest';
import type { PredictionRow } from '../src/db/schema.js';
import { createPredictionPubSub, refreshes } from '../src/pubsub.js';
import {
  checkInFlight,
  fingerprint,
  idempotencyKeyOf,
  MAX_IDEMPOTENCY_KEY_CHARS,
  type RawCreateInput,
  replay,
  takeCreate,
} from '../src/schema/admission.js';
import type { Context } from '../src/schema/context.js';
import { notFound, stored, userError, validated } from '../src/schema/errors.js';
import { buildSchema } from '../src/schema/index.js';
import { isVolatile, markVolatile } from '../src/schema/volatile.js';
import { watchPrediction } from '../src/schema/watch.js';
import { InputError } from '../src/validation/errors.js';

const diskFull = () => new Database.SqliteError('database or disk is full', 'SQLITE_FULL');

/** What a GraphQL error carries, for comparing. */
const shape = (err: unknown) => {
  expect(err).toBeInstanceOf(GraphQLError);
  const e = err as GraphQLError;
  return { message: e.message, extensions: e.extensions, originalError: e.originalError };
};

const caught = async (run: () => unknown) => {
  try {
    await run();
  } catch (err) {
    return err;
  }
  throw new Error('did not throw');
};

describe('errors', () => {
  test('userError carries its code, and its field only when there is one', () => {
    expect(shape(userError('RATE_LIMITED', 'slow down'))).toMatchObject({ message: 'slow down', extensions: { code: 'RATE_LIMITED' } });
    expect(Object.keys(userError('RATE_LIMITED', 'x').extensions)).toEqual(['code']);
    expect(userError('BAD_USER_INPUT', 'x', 'input.prompt').extensions).toEqual({ code: 'BAD_USER_INPUT', field: 'input.prompt' });
    expect(shape(notFound('p1'))).toMatchObject({ message: 'no prediction with id "p1"', extensions: { code: 'NOT_FOUND', field: 'id' } });
  });

  test('validated turns an InputError into the GraphQL error and passes anything else on', async () => {
    expect(await validated(() => 42)).toBe(42);
    expect(await validated(async () => 'a')).toBe('a');
    const err = await caught(() => validated(() => Promise.reject(new InputError('IMAGE_FORMAT', 'not an image', 'input.image'))));
    expect(shape(err)).toMatchObject({ message: 'not an image', extensions: { code: 'IMAGE_FORMAT', field: 'input.image' } });
    const other = new Error('bug');
    expect(
      await caught(() =>
        validated(() => {
          throw other;
        }),
      ),
    ).toBe(other);
  });

  test('stored answers STORAGE_UNAVAILABLE (503) for a storage failure, sync or async, and passes other errors on', async () => {
    expect(stored(() => 7)).toBe(7);
    expect(await stored(async () => 8)).toBe(8);
    const expected = {
      message: 'the gateway cannot store new predictions right now; nothing was created, try again later',
      extensions: { code: 'STORAGE_UNAVAILABLE', http: { status: 503 } },
      originalError: undefined,
    };
    expect(
      shape(
        await caught(() =>
          stored(() => {
            throw diskFull();
          }),
        ),
      ),
    ).toEqual(expected);
    expect(shape(await caught(() => stored(() => Promise.reject(diskFull()))))).toEqual(expected);
    expect(shape(await caught(() => stored(() => Promise.reject(diskFull()), 'no cancel now')))).toEqual({ ...expected, message: 'no cancel now' });
    const bug = new Error('constraint');
    expect(
      await caught(() =>
        stored(() => {
          throw bug;
        }),
      ),
    ).toBe(bug);
    expect(await caught(() => stored(() => Promise.reject(bug)))).toBe(bug);
  });
});

describe('volatile', () => {
  test('only a marked context is volatile', () => {
    const a = {};
    const b = {};
    markVolatile(a);
    expect(isVolatile(a)).toBe(true);
    expect(isVolatile(b)).toBe(false);
  });
});

describe('admission', () => {
  const input = (over: Partial<RawCreateInput> = {}): RawCreateInput => ({ prompt: 'a cat', ...over });

  test('idempotencyKeyOf: absent is undefined, 1..200 non-blank characters are kept, others refused', () => {
    expect(idempotencyKeyOf(input())).toBeUndefined();
    expect(idempotencyKeyOf(input({ idempotencyKey: null }))).toBeUndefined();
    expect(idempotencyKeyOf(input({ idempotencyKey: ' k ' }))).toBe(' k ');
    const longest = 'k'.repeat(MAX_IDEMPOTENCY_KEY_CHARS);
    expect(idempotencyKeyOf(input({ idempotencyKey: longest }))).toBe(longest);
    for (const bad of ['', '   ', `${longest}k`]) {
      const err = (() => {
        try {
          idempotencyKeyOf(input({ idempotencyKey: bad }));
        } catch (e) {
          return e;
        }
      })();
      expect(shape(err)).toMatchObject({
        message: `idempotencyKey must be 1 to ${MAX_IDEMPOTENCY_KEY_CHARS} characters, not blank`,
        extensions: { code: 'BAD_USER_INPUT', field: 'input.idempotencyKey' },
      });
    }
  });

  test('fingerprint: defaults count as given, every field as sent changes it', () => {
    const base = fingerprint(input());
    // Stored hashes of inputs from before deadlines and webhooks must stay valid: [prompt, image, expansion].
    expect(base).toBe(createHash('sha256').update(JSON.stringify(['a cat', null, true])).digest('hex'));
    expect(fingerprint(input({ image: null, enablePromptExpansion: true, deadlineSeconds: null, webhookUrl: null }))).toBe(base);
    const variants = [
      input({ prompt: 'a dog' }),
      input({ image: 'https://x.example/i.png' }),
      input({ enablePromptExpansion: false }),
      input({ deadlineSeconds: 60 }),
      input({ deadlineSeconds: 61 }),
      input({ webhookUrl: 'https://h.example/' }),
      input({ webhookUrl: 'https://h.example/', webhookEvents: ['COMPLETED'] }),
      input({ webhookUrl: 'https://h.example/', webhookEvents: ['FAILED'] }),
      input({ deadlineSeconds: 60, webhookUrl: 'https://h.example/' }),
    ];
    const all = new Set([base, ...variants.map(fingerprint)]);
    expect(all.size).toBe(variants.length + 1);
    // Events without a URL are not part of it; null and absent events are the same.
    expect(fingerprint(input({ webhookEvents: ['COMPLETED'] }))).toBe(base);
    expect(fingerprint(input({ webhookUrl: 'https://h.example/', webhookEvents: null }))).toBe(fingerprint(input({ webhookUrl: 'https://h.example/' })));
  });

  const row = (over: Partial<PredictionRow> = {}) => ({ id: 'p1', owner: 'alice', status: 'QUEUED', version: 1, ...over }) as PredictionRow;

  function ctxWith(parts: {
    earlier?: { inputHash: string; predictionId: string };
    rows?: PredictionRow[];
    maxInFlight?: number;
    unfinished?: number;
    retryAfter?: number;
  }) {
    const calls: unknown[][] = [];
    const now = new Date('2026-11-29T00:00:00Z');
    const ctx = {
      principal: { owner: 'alice' },
      now: () => now,
      idempotency: {
        find: async (...args: unknown[]) => {
          calls.push(['find', ...args]);
          return parts.earlier;
        },
      },
      store: {
        findById: async (id: string) => parts.rows?.find((r) => r.id === id),
        countUnfinished: async (owner: string | null) => {
          calls.push(['countUnfinished', owner]);
          return parts.unfinished ?? 0;
        },
      },
      quotas: { maxInFlight: () => parts.maxInFlight, takeCreate: async () => parts.retryAfter },
    } as unknown as Context;
    return { ctx, calls, now };
  }

  test('replay: the earlier row for the same input, a conflict for another, nothing for a new key', async () => {
    const { ctx, calls, now } = ctxWith({ earlier: { inputHash: 'h1', predictionId: 'p1' }, rows: [row()] });
    expect(await replay(ctx, 'key', 'h1')).toEqual(row());
    expect(calls).toEqual([['find', 'alice', 'key', now]]);
    const conflict = await caught(() => replay(ctx, 'key', 'h2'));
    expect(shape(conflict)).toMatchObject({
      message: 'this idempotencyKey was used with a different input in the last 24 hours',
      extensions: { code: 'IDEMPOTENCY_CONFLICT', field: 'input.idempotencyKey', http: { status: 409 } },
    });
    expect(await replay(ctxWith({}).ctx, 'key', 'h1')).toBeUndefined();
    // The row is gone, or (never expected) another owner's: nothing to replay.
    expect(await replay(ctxWith({ earlier: { inputHash: 'h1', predictionId: 'p1' }, rows: [] }).ctx, 'key', 'h1')).toBeUndefined();
    expect(await replay(ctxWith({ earlier: { inputHash: 'h1', predictionId: 'p1' }, rows: [row({ owner: 'bob' })] }).ctx, 'key', 'h1')).toBeUndefined();
  });

  test('checkInFlight refuses at the limit, not below it, and not at all without one', async () => {
    await expect(checkInFlight(ctxWith({ maxInFlight: 3, unfinished: 2 }).ctx)).resolves.toBeUndefined();
    const atLimit = ctxWith({ maxInFlight: 3, unfinished: 3 });
    expect(shape(await caught(() => checkInFlight(atLimit.ctx)))).toMatchObject({
      message: 'this key already has 3 unfinished predictions (at most 3); wait for one to complete or fail',
      extensions: { code: 'TOO_MANY_IN_FLIGHT', limit: 3, http: { status: 429 } },
    });
    expect(atLimit.calls).toEqual([['countUnfinished', 'alice']]);
    expect(shape(await caught(() => checkInFlight(ctxWith({ maxInFlight: 3, unfinished: 4 }).ctx))).extensions.code).toBe('TOO_MANY_IN_FLIGHT');
    const unlimited = ctxWith({ unfinished: 1_000 });
    await expect(checkInFlight(unlimited.ctx)).resolves.toBeUndefined();
    expect(unlimited.calls).toEqual([]);
  });

  test('takeCreate refuses with retryAfter and a Retry-After header once the minute is used', async () => {
    await expect(takeCreate(ctxWith({}).ctx)).resolves.toBeUndefined();
    const err = shape(await caught(() => takeCreate(ctxWith({ retryAfter: 17 }).ctx)));
    expect(err.message).toBe('too many createVideo calls for this key; retry in 17 s');
    expect(err.extensions).toEqual({ code: 'RATE_LIMITED', retryAfter: 17, http: { status: 429, headers: { 'retry-after': '17' } } });
    expect(shape(await caught(() => takeCreate(ctxWith({ retryAfter: 0 }).ctx))).extensions.retryAfter).toBe(0);
  });
});

describe('watchPrediction', () => {
  const row = (version: number, status = 'QUEUED', owner: string | null = 'alice') => ({ id: 'p1', owner, status, version }) as PredictionRow;

  function setup(find: (id: string) => Promise<PredictionRow | undefined>) {
    const pubsub = createPredictionPubSub();
    const ctx = { principal: { owner: 'alice' }, pubsub, store: { findById: find } } as unknown as Context;
    const publish = (r: PredictionRow) => pubsub.publish('prediction:updated', 'p1', r);
    return { pubsub, ctx, publish };
  }

  test('an unknown id, another owner\'s or a failed read is no stream, and leaves no subscription', async () => {
    const unknown = setup(async () => undefined);
    expect(await watchPrediction(unknown.ctx, 'p1')).toBeUndefined();
    expect(unknown.pubsub.count()).toBe(0);
    const foreign = setup(async () => row(1, 'QUEUED', 'bob'));
    expect(await watchPrediction(foreign.ctx, 'p1')).toBeUndefined();
    expect(foreign.pubsub.count()).toBe(0);
    const boom = new Error('read failed');
    const failing = setup(() => Promise.reject(boom));
    await expect(watchPrediction(failing.ctx, 'p1')).rejects.toBe(boom);
    expect(failing.pubsub.count()).toBe(0);
  });

  test('the current row, then each newer version, the terminal one last; stale and repeated versions are dropped', async () => {
    const { ctx, pubsub, publish } = setup(async () => row(1));
    const stream = await watchPrediction(ctx, 'p1');
    if (!stream) throw new Error('no stream');
    expect(stream[Symbol.asyncIterator]()).toBe(stream);
    expect(pubsub.count()).toBe(1);
    expect(await stream.next()).toEqual({ value: row(1), done: false });

    // Waiting first, then the event.
    const pending = stream.next();
    publish(row(2, 'PROCESSING'));
    expect(await pending).toEqual({ value: row(2, 'PROCESSING'), done: false });

    publish(row(1)); // stale
    publish(row(2, 'PROCESSING')); // repeated
    const refresh = row(2, 'PROCESSING');
    refreshes.add(refresh); // same version, republished for its queue place: let through
    publish(refresh);
    publish(row(3, 'PROCESSING'));
    expect((await stream.next()).value).toBe(refresh);
    expect(await stream.next()).toEqual({ value: row(3, 'PROCESSING'), done: false });

    publish(row(4, 'COMPLETED'));
    expect(pubsub.count()).toBe(1);
    expect(await stream.next()).toEqual({ value: row(4, 'COMPLETED'), done: false });
    expect(pubsub.count()).toBe(0); // unsubscribed once the terminal row is handed over
    publish(row(5, 'COMPLETED'));
    expect(await stream.next()).toEqual({ value: undefined, done: true });
    expect(await stream.next()).toEqual({ value: undefined, done: true });
  });

  test('a terminal current row is delivered, then the stream ends', async () => {
    const { ctx, pubsub } = setup(async () => row(3, 'FAILED'));
    const stream = await watchPrediction(ctx, 'p1');
    if (!stream) throw new Error('no stream');
    expect(await stream.next()).toEqual({ value: row(3, 'FAILED'), done: false });
    expect(pubsub.count()).toBe(0);
    expect(await stream.next()).toEqual({ value: undefined, done: true });
  });

  test('a change published while the row is read is not lost, and the older read is dropped', async () => {
    let publishDuringRead: () => void = () => {};
    const { ctx, publish } = setup(async () => {
      publishDuringRead();
      return row(1);
    });
    publishDuringRead = () => publish(row(2, 'PROCESSING'));
    const stream = await watchPrediction(ctx, 'p1');
    if (!stream) throw new Error('no stream');
    expect(await stream.next()).toEqual({ value: row(2, 'PROCESSING'), done: false });
    const pending = stream.next();
    publish(row(3, 'CANCELED'));
    expect(await pending).toEqual({ value: row(3, 'CANCELED'), done: false });
  });

  test('return() ends the stream: a waiting next() resolves done, queued rows are dropped, the subscription is gone', async () => {
    const { ctx, pubsub, publish } = setup(async () => row(1));
    const stream = await watchPrediction(ctx, 'p1');
    if (!stream) throw new Error('no stream');
    await stream.next();
    const pending = stream.next();
    expect(await stream.return?.()).toEqual({ value: undefined, done: true });
    expect(await pending).toEqual({ value: undefined, done: true });
    expect(pubsub.count()).toBe(0);
    publish(row(2));
    expect(await stream.next()).toEqual({ value: undefined, done: true });

    const queued = setup(async () => row(1));
    const second = await watchPrediction(queued.ctx, 'p1');
    if (!second) throw new Error('no stream');
    queued.publish(row(2));
    await second.return?.();
    expect(await second.next()).toEqual({ value: undefined, done: true });
  });
});

describe('predictions connection and cancelPrediction (the real schema, a context of fakes)', () => {
  const schema = buildSchema();
  const rowsOf = (n: number, owner: string | null = 'alice') =>
    Array.from({ length: n }, (_, i) => ({ id: `p${n - i}`, seq: n - i, owner, status: 'QUEUED', version: 1 }) as unknown as PredictionRow);

  function ctxFor(parts: { rows?: PredictionRow[]; cancelled?: PredictionRow | undefined; storeFails?: boolean }) {
    const lists: unknown[] = [];
    const cancels: string[] = [];
    const ctx = {
      principal: { owner: 'alice' },
      store: {
        list: async (q: { first: number; beforeSeq?: number; status?: string; owner: string | null }) => {
          lists.push(q);
          return (parts.rows ?? [])
            .filter((r) => q.beforeSeq === undefined || r.seq < q.beforeSeq)
            .filter((r) => q.status === undefined || r.status === q.status)
            .slice(0, q.first);
        },
        findById: async (id: string) => parts.rows?.find((r) => r.id === id),
      },
      lifecycle: {
        cancel: async (id: string) => {
          cancels.push(id);
          if (parts.storeFails) throw diskFull();
          return parts.cancelled;
        },
      },
    } as unknown as Context;
    return { ctx, lists, cancels };
  }

  const run = async (ctx: Context, source: string, variableValues?: Record<string, unknown>) =>
    (await graphql({ schema, source, contextValue: ctx, variableValues })) as {
      data?: Record<string, never> | null;
      errors?: readonly GraphQLError[];
    };

  const PAGE = 'query ($first: Int, $after: String, $status: PredictionStatus) { predictions(first: $first, after: $after, status: $status) { edges { cursor node { id } } nodes { id } pageInfo { hasNextPage endCursor } } }';
  type Page = { edges: { cursor: string; node: { id: string } }[]; nodes: { id: string }[]; pageInfo: { hasNextPage: boolean; endCursor: string | null } };

  test('pages of `first`, asking the store for one more; the cursors lead to the next page', async () => {
    const { ctx, lists } = ctxFor({ rows: rowsOf(5) });
    const one = (await run(ctx, PAGE, { first: 2 })).data?.predictions as unknown as Page;
    expect(one.nodes.map((n) => n.id)).toEqual(['p5', 'p4']);
    expect(one.edges.map((e) => e.node.id)).toEqual(['p5', 'p4']);
    expect(one.pageInfo).toEqual({ hasNextPage: true, endCursor: one.edges[1]?.cursor });
    expect(Buffer.from(one.pageInfo.endCursor ?? '', 'base64url').toString()).toBe('seq:4');
    expect(lists[0]).toEqual({ first: 3, beforeSeq: undefined, status: undefined, owner: 'alice' });

    const two = (await run(ctx, PAGE, { first: 3, after: one.pageInfo.endCursor })).data?.predictions as unknown as Page;
    expect(two.nodes.map((n) => n.id)).toEqual(['p3', 'p2', 'p1']);
    expect(two.pageInfo.hasNextPage).toBe(false);
    expect(two.pageInfo.endCursor).toBe(two.edges[2]?.cursor);
    expect(Buffer.from(two.pageInfo.endCursor ?? '', 'base64url').toString()).toBe('seq:1');
    expect(lists[1]).toMatchObject({ first: 4, beforeSeq: 4 });

    const empty = (await run(ctxFor({}).ctx, PAGE, {})).data?.predictions as unknown as Page;
    expect(empty).toEqual({ edges: [], nodes: [], pageInfo: { hasNextPage: false, endCursor: null } });
  });

  test('first defaults to 20 and must be 1 to 100; the status filter is passed on', async () => {
    const { ctx, lists } = ctxFor({ rows: rowsOf(30) });
    const page = (await run(ctx, PAGE, {})).data?.predictions as unknown as Page;
    expect(page.nodes).toHaveLength(20);
    expect(page.pageInfo.hasNextPage).toBe(true);
    expect((await run(ctx, PAGE, { first: 30 })).data?.predictions).toMatchObject({ pageInfo: { hasNextPage: false } });
    expect((await run(ctx, PAGE, { first: 1 })).data?.predictions).toMatchObject({ nodes: [{ id: 'p30' }] });
    expect((await run(ctx, PAGE, { first: 100 })).errors).toBeUndefined();
    for (const first of [0, 101, -1]) {
      const { errors } = await run(ctx, PAGE, { first });
      expect(errors?.[0]?.message).toBe('first must be between 1 and 100');
      expect(errors?.[0]?.extensions).toEqual({ code: 'BAD_USER_INPUT', field: 'first' });
    }
    await run(ctx, PAGE, { status: 'FAILED' });
    expect(lists.at(-1)).toMatchObject({ status: 'FAILED' });
  });

  test('a cursor this API did not return is BAD_USER_INPUT', async () => {
    const { ctx, lists } = ctxFor({ rows: rowsOf(2) });
    const enc = (s: string) => Buffer.from(s).toString('base64url');
    for (const after of ['garbage', enc('seq:'), enc('seq:x1'), enc('xseq:1'), enc('seq:1x'), enc(`seq:${'9'.repeat(16)}`)]) {
      const { errors } = await run(ctx, PAGE, { after });
      expect(errors?.[0]?.message, after).toBe('after: not a cursor this API returned');
      expect(errors?.[0]?.extensions).toEqual({ code: 'BAD_USER_INPUT', field: 'after' });
    }
    expect(lists).toEqual([]);
    await run(ctx, PAGE, { after: enc(`seq:${'9'.repeat(15)}`) });
    expect(lists).toEqual([{ first: 21, beforeSeq: 999_999_999_999_999, status: undefined, owner: 'alice' }]);
  });

  const CANCEL = 'mutation ($id: ID!) { cancelPrediction(id: $id) { id status } }';

  test('cancelPrediction: a live own prediction ends CANCELED', async () => {
    const live = rowsOf(1)[0] as PredictionRow;
    const { ctx, cancels } = ctxFor({ rows: [live], cancelled: { ...live, status: 'CANCELED' } as PredictionRow });
    const res = await run(ctx, CANCEL, { id: 'p1' });
    expect(res.errors).toBeUndefined();
    expect(res.data?.cancelPrediction).toEqual({ id: 'p1', status: 'CANCELED' });
    expect(cancels).toEqual(['p1']);
  });

  test('cancelPrediction: unknown or foreign is NOT_FOUND, final is ALREADY_FINAL, nothing cancelled', async () => {
    for (const [rows, code, message] of [
      [[], 'NOT_FOUND', 'no prediction with id "p1"'],
      [rowsOf(1, 'bob'), 'NOT_FOUND', 'no prediction with id "p1"'],
      [[{ ...rowsOf(1)[0], status: 'COMPLETED' }], 'ALREADY_FINAL', 'prediction "p1" is already COMPLETED'],
    ] as [PredictionRow[], string, string][]) {
      const { ctx, cancels } = ctxFor({ rows });
      const { errors } = await run(ctx, CANCEL, { id: 'p1' });
      expect(errors?.[0]?.message).toBe(message);
      expect(errors?.[0]?.extensions).toEqual({ code, field: 'id' });
      expect(cancels).toEqual([]);
    }
  });

  test('cancelPrediction: a row that ended otherwise meanwhile, vanished, or a store that fails', async () => {
    const live = rowsOf(1)[0] as PredictionRow;
    const raced = await run(ctxFor({ rows: [live], cancelled: { ...live, status: 'FAILED' } as PredictionRow }).ctx, CANCEL, { id: 'p1' });
    expect(raced.errors?.[0]?.message).toBe('prediction "p1" is already FAILED');
    expect(raced.errors?.[0]?.extensions).toEqual({ code: 'ALREADY_FINAL', field: 'id' });
    const gone = await run(ctxFor({ rows: [live], cancelled: undefined }).ctx, CANCEL, { id: 'p1' });
    expect(gone.errors?.[0]?.extensions).toEqual({ code: 'NOT_FOUND', field: 'id' });
    const failing = await run(ctxFor({ rows: [live], storeFails: true }).ctx, CANCEL, { id: 'p1' });
    expect(failing.errors?.[0]?.message).toBe('the gateway cannot store the cancel right now; the prediction goes on, try again later');
    expect(failing.errors?.[0]?.extensions).toEqual({ code: 'STORAGE_UNAVAILABLE', http: { status: 503 } });
  });
});
