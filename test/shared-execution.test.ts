import { type ExecutionResult, parse } from 'graphql';
import { describe, expect, test } from 'vitest';
import type { Context } from '../src/schema/context.js';
import { sharedSubscribeFn, watchedSchema } from './helpers/shared-execution.js';
import { must } from './helpers/must.js';

/**
 * The plugin's subscribe function, run directly: every subscriber's source stream yields the very
 * same event object (as the pubsub hands it to all of them), so the plugin shares one execution
 * among subscribers whose operation key matches. The resolver reads what a result may depend on
 * besides the event: the caller's owner, the base URL of links, and a variable.
 */
function rig(options?: Parameters<typeof sharedSubscribeFn>[0]) {
  let executions = 0;
  const sources: Array<(event: object) => void> = [];
  const schema = watchedSchema<{ n: number }>(
    ['owner', 'base', 'tag'],
    () => {
      // One event per subscriber, pushed by `publish`.
      let push: (event: { n: number }) => void = () => {};
      const next = new Promise<{ n: number }>((resolve) => (push = resolve));
      sources.push((event) => push(event as { n: number }));
      return (async function* () {
        yield await next;
      })();
    },
    (event, args, ctx: Context) => {
      executions++;
      return { n: event.n, owner: ctx.principal.owner, base: ctx.baseUrl(), tag: args.tag ?? null };
    },
  );
  const run = sharedSubscribeFn(options);

  const context = (owner: string | null, base = 'http://gw.example') => ({ principal: { owner }, baseUrl: () => base }) as unknown as Context;

  /** Subscribes once per entry, then publishes one event object to all; each subscriber's first result. */
  async function deliverOnce(subscribers: Array<{ context: Context; variables?: Record<string, unknown>; document?: ReturnType<typeof parse>; operationName?: string }>, document: ReturnType<typeof parse>) {
    const streams = [] as AsyncIterableIterator<ExecutionResult>[];
    for (const s of subscribers) {
      const stream = await run({ schema, document: s.document ?? document, contextValue: s.context, variableValues: s.variables ?? {}, operationName: s.operationName });
      if (!(Symbol.asyncIterator in stream)) throw new Error(`not a stream: ${JSON.stringify(stream)}`);
      streams.push(stream);
    }
    expect(sources).toHaveLength(subscribers.length);
    const event = { n: 7 };
    for (const push of sources.splice(0)) push(event);
    const results = await Promise.all(streams.map(async (s) => (await s.next()).value as ExecutionResult));
    await Promise.all(streams.map((s) => s.return?.()));
    return results;
  }
  return { deliverOnce, context, executions: () => executions };
}

/** The `watched` field of a result. */
const watched = (x: ExecutionResult) => (x.data?.watched ?? {}) as Record<string, unknown>;

const DOC = parse('subscription W($tag: String) { watched(tag: $tag) { n owner base tag } }');

describe('shared subscription execution', () => {
  test('subscribers with the same operation, variables, base URL and owner share one execution (the same result object)', async () => {
    const r = rig();
    const [a, b, c] = await r.deliverOnce([{ context: r.context('alice') }, { context: r.context('alice') }, { context: r.context('alice') }], DOC);
    expect(a?.data).toEqual({ watched: { n: 7, owner: 'alice', base: 'http://gw.example', tag: null } });
    expect(b).toBe(a);
    expect(c).toBe(a);
    expect(r.executions()).toBe(1);
  });

  test('contexts that differ only in principal.owner get each their own result', async () => {
    const r = rig();
    const results = await r.deliverOnce([{ context: r.context('alice') }, { context: r.context('bob') }, { context: r.context(null) }, { context: r.context('alice') }], DOC);
    expect(results.map((x) => watched(x).owner)).toEqual(['alice', 'bob', null, 'alice']);
    expect(r.executions()).toBe(3);
  });

  test('contexts that differ only in baseUrl get each their own result', async () => {
    const r = rig();
    const results = await r.deliverOnce([{ context: r.context('alice', 'http://a.example') }, { context: r.context('alice', 'https://b.example') }], DOC);
    expect(results.map((x) => watched(x).base)).toEqual(['http://a.example', 'https://b.example']);
    expect(r.executions()).toBe(2);
  });

  test('subscribers that differ only in variables get each their own result', async () => {
    const r = rig();
    const alice = r.context('alice');
    const results = await r.deliverOnce([{ context: alice, variables: { tag: 'x' } }, { context: alice, variables: { tag: 'y' } }, { context: alice }, { context: alice, variables: { tag: 'x' } }], DOC);
    expect(results.map((x) => watched(x).tag)).toEqual(['x', 'y', null, 'x']);
    expect(results[3]).toBe(results[0]);
    expect(r.executions()).toBe(3);
  });

  test('another document or another operation of one document is executed on its own', async () => {
    const r = rig();
    const two = parse('subscription A { watched(tag: "a") { tag } } subscription B { watched(tag: "b") { tag } }');
    const alice = r.context('alice');
    const results = await r.deliverOnce(
      [
        { context: alice, document: two, operationName: 'A' },
        { context: alice, document: two, operationName: 'B' },
        { context: alice, document: parse('subscription W($tag: String) { watched(tag: $tag) { n owner base tag } }') },
        { context: alice },
      ],
      DOC,
    );
    expect(results.map((x) => x.data?.watched)).toEqual([{ tag: 'a' }, { tag: 'b' }, { n: 7, owner: 'alice', base: 'http://gw.example', tag: null }, { n: 7, owner: 'alice', base: 'http://gw.example', tag: null }]);
    expect(results[3]).not.toBe(results[2]);
    expect(r.executions()).toBe(4);
  });

  test('keys handed out before the table of distinct keys started over still share with the same key handed out after', async () => {
    // maxKeys 2: the third distinct key (tag y) empties the table, and the fifth (tag x again) a
    // second time. The fourth and fifth subscribers' keys are strings of their own, equal to the
    // first's and the second's: they must share all the same. (Whether a key is the very string
    // kept cannot be seen from here; this guards that keys stay equal strings, not identities.)
    const r = rig({ maxKeys: 2 });
    const alice = r.context('alice');
    const results = await r.deliverOnce([{ context: alice }, { context: alice, variables: { tag: 'x' } }, { context: alice, variables: { tag: 'y' } }, { context: alice }, { context: alice, variables: { tag: 'x' } }], DOC);
    expect(results.map((x) => watched(x).tag)).toEqual([null, 'x', 'y', null, 'x']);
    expect(results[3]).toBe(results[0]);
    expect(results[4]).toBe(results[1]);
    expect(r.executions()).toBe(3);
  });

  test('subscribers whose key is too long to be kept for sharing still share one execution', async () => {
    const r = rig({ maxKeys: 2 });
    const alice = r.context('alice');
    const tag = 'x'.repeat(600);
    const results = await r.deliverOnce([{ context: alice, variables: { tag } }, { context: alice, variables: { tag } }, { context: alice }], DOC);
    expect(watched(must(results[0])).tag).toBe(tag);
    expect(results[1]).toBe(results[0]);
    expect(r.executions()).toBe(2);
  });

  test('an event that is not an object (nothing to key a shared result on) is executed for each subscriber', async () => {
    const schema = watchedSchema<number>(
      [],
      () =>
        (async function* () {
          yield 7;
          yield 8;
        })(),
      (event) => ({ n: event }),
    );
    const contextValue = { principal: { owner: 'alice' }, baseUrl: () => 'http://gw.example' } as unknown as Context;
    const stream = await sharedSubscribeFn()({ schema, document: parse('subscription { watched { n } }'), contextValue, variableValues: {} });
    if (!(Symbol.asyncIterator in stream)) throw new Error('not a stream');
    const values: unknown[] = [];
    for await (const v of stream) values.push(v.data);
    expect(values).toEqual([{ watched: { n: 7 } }, { watched: { n: 8 } }]);
  });
});
