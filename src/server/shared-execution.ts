import {
  createSourceEventStream,
  execute,
  type DocumentNode,
  type ExecutionArgs,
  type ExecutionResult,
} from 'graphql';
import type { Plugin } from 'graphql-yoga';
import type { Context } from '../schema/context.js';

/**
 * Executes a subscription event once per distinct operation instead of once per subscriber.
 *
 * graphql-js runs the whole selection for every subscriber of every event; with 10,000 subscribers
 * on one prediction that was ~20 µs each, most of a broadcast. Every subscriber receives the same
 * event object from the pubsub, and yoga's parser cache hands identical query texts the same
 * DocumentNode, so a result can be shared by everyone whose (document, operation, variables,
 * baseUrl, owner) match. Nothing else in the context may influence a subscription's result: a new
 * context-dependent field must add what it depends on to `operationKey`.
 */
export function useSharedSubscriptionExecution(): Plugin<Context> {
  const documentIds = new WeakMap<DocumentNode, number>();
  let nextDocumentId = 0;
  const results = new WeakMap<object, Map<string, ExecutionResult>>();

  const operationKey = (args: ExecutionArgs) => {
    let docId = documentIds.get(args.document);
    if (docId === undefined) {
      docId = nextDocumentId++;
      documentIds.set(args.document, docId);
    }
    const ctx = args.contextValue as Context;
    // The owner: today a subscriber only ever sees its own predictions, so no two owners share an
    // event, but a result that came to depend on the caller must never be served to another one.
    return `${docId}|${args.operationName ?? ''}|${JSON.stringify(args.variableValues ?? {})}|${ctx.baseUrl()}|${ctx.principal.owner ?? ''}`;
  };

  const executeShared = (args: ExecutionArgs, key: string, event: unknown) => {
    if (event === null || typeof event !== 'object') return execute({ ...args, rootValue: event });
    let byOperation = results.get(event);
    if (!byOperation) {
      byOperation = new Map();
      results.set(event, byOperation);
    }
    let result = byOperation.get(key);
    if (!result) {
      const executed = execute({ ...args, rootValue: event });
      // Our resolvers are synchronous; an asynchronous result is returned unshared rather than
      // caching a promise that every subscriber would then await.
      if (executed instanceof Promise) return executed;
      result = executed;
      byOperation.set(key, result);
    }
    return result;
  };

  return {
    onSubscribe({ setSubscribeFn }) {
      setSubscribeFn((async (args: ExecutionArgs) => {
        const source = await createSourceEventStream(args);
        if (!(Symbol.asyncIterator in source)) return source;
        const key = operationKey(args);
        const events = source[Symbol.asyncIterator]();
        return {
          next: () =>
            events.next().then((r) => {
              if (r.done) return r;
              const value = executeShared(args, key, r.value);
              return value instanceof Promise ? value.then((v) => ({ done: false, value: v })) : { done: false, value };
            }),
          return: async () => (await events.return?.()) ?? { done: true, value: undefined },
          throw: async (err: unknown) => (await events.throw?.(err)) ?? { done: true, value: undefined },
          [Symbol.asyncIterator]() {
            return this;
          },
        } as AsyncIterableIterator<ExecutionResult>;
      }) as never);
    },
  };
}
