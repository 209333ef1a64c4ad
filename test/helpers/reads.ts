import type { TestApp } from './app.js';

/**
 * Counts how often the `prediction` query's resolver really read this id: a cache hit answers
 * without executing, so it does not read. Reads by anyone else (the poller) are told apart by the
 * files on their stack.
 */
export function countReads(t: TestApp, id: string): () => number {
  const store = t.app.store;
  const findById = store.findById.bind(store);
  let n = 0;
  store.findById = (x: string) => {
    // Anywhere on the stack: the resolver may reach the store through an adapter (db/store.ts).
    if (x === id && new Error().stack?.includes('/src/schema/prediction.ts')) n++;
    return findById(x);
  };
  return () => n;
}
