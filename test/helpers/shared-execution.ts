import { type ExecutionArgs, type ExecutionResult, GraphQLInt, GraphQLObjectType, GraphQLSchema, GraphQLString } from 'graphql';
import { useSharedSubscriptionExecution } from '../../src/server/shared-execution.js';
import { must } from './must.js';

export type SubscribeFn = (args: ExecutionArgs) => Promise<AsyncIterableIterator<ExecutionResult> | ExecutionResult>;

/** The shared-execution plugin's subscribe function, taken out of a new plugin as envelop would. */
export function sharedSubscribeFn(options?: Parameters<typeof useSharedSubscriptionExecution>[0]): SubscribeFn {
  let fn: SubscribeFn | undefined;
  const plugin = useSharedSubscriptionExecution(options);
  // biome-ignore lint/suspicious/noExplicitAny: only setSubscribeFn of envelop's onSubscribe payload is used
  (plugin.onSubscribe as (payload: any) => void)({ setSubscribeFn: (f: SubscribeFn) => (fn = f) });
  return must(fn, 'subscribe function');
}

/**
 * A schema whose one subscription, `watched(tag: String): Seen`, takes its events from `subscribe`
 * and its result from `resolve`; `Seen` has the given string fields besides `n: Int`.
 */
export function watchedSchema<E>(
  seen: string[],
  subscribe: () => AsyncIterable<E>,
  // biome-ignore lint/suspicious/noExplicitAny: graphql-js passes the context as the caller built it
  resolve: (event: E, args: { tag?: string | null }, ctx: any) => unknown,
): GraphQLSchema {
  const Seen = new GraphQLObjectType({
    name: 'Seen',
    fields: { n: { type: GraphQLInt }, ...Object.fromEntries(seen.map((f) => [f, { type: GraphQLString }])) },
  });
  return new GraphQLSchema({
    query: new GraphQLObjectType({ name: 'Query', fields: { ok: { type: GraphQLInt } } }),
    subscription: new GraphQLObjectType({
      name: 'Subscription',
      fields: { watched: { type: Seen, args: { tag: { type: GraphQLString } }, subscribe, resolve } },
    }),
  });
}
