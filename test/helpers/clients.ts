import { createClient as createSseClient } from 'graphql-sse';
import { createClient as createWsClient, type Client } from 'graphql-ws';
import WebSocket from 'ws';
import { onDispose } from './dispose.js';

export interface Collected<T> {
  values: T[];
  /** Resolves with every value when the server completes the subscription. */
  done: Promise<T[]>;
  errors: unknown[];
}

export function wsClient(url: string, connectionParams?: Record<string, unknown>): Client {
  const client = createWsClient({
    url: `${url.replace(/^http/, 'ws')}/graphql`,
    webSocketImpl: WebSocket,
    connectionParams,
    retryAttempts: 0,
    lazy: false,
    // Connection errors reach each subscription's sink; don't also print them.
    onNonLazyError: () => {},
  });
  onDispose(() => client.dispose());
  return client;
}

/** Subscribes over graphql-ws and queues every message, so none is missed between awaits. */
// biome-ignore lint/suspicious/noExplicitAny: a GraphQL answer's shape is its query's; tests read it loosely and assert the values at run time
export function wsSubscribe<T = any>(client: Client, query: string, variables?: Record<string, unknown>): Collected<T> {
  const values: T[] = [];
  const errors: unknown[] = [];
  const done = new Promise<T[]>((resolve, reject) => {
    client.subscribe<T>(
      { query, variables },
      {
        next: (msg) => (msg.errors ? errors.push(...msg.errors) : values.push(msg.data as T)),
        error: (err) => {
          errors.push(err);
          reject(err);
        },
        complete: () => resolve(values),
      },
    );
  });
  done.catch(() => {});
  return { values, done, errors };
}

/** Subscribes through the graphql-sse client (yoga's distinct-connections mode). */
// biome-ignore lint/suspicious/noExplicitAny: a GraphQL answer's shape is its query's; tests read it loosely and assert the values at run time
export function sseSubscribe<T = any>(url: string, query: string, variables?: Record<string, unknown>, headers?: Record<string, string>): Collected<T> {
  const client = createSseClient({ url: `${url}/graphql`, retryAttempts: 0, headers });
  onDispose(() => client.dispose());
  const values: T[] = [];
  const errors: unknown[] = [];
  const done = (async () => {
    for await (const msg of client.iterate<T>({ query, variables })) {
      if (msg.errors) errors.push(...msg.errors);
      else values.push(msg.data as T);
    }
    return values;
  })();
  done.catch((err) => errors.push(err));
  return { values, done, errors };
}

/** Collapses repeats, so [A, A, B, B, C] reads as [A, B, C]. */
export function distinct<T>(xs: T[]): T[] {
  return xs.filter((x, i) => i === 0 || xs[i - 1] !== x);
}
