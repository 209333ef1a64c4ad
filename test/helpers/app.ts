import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildApp, type App, type AppOverrides } from '../../src/app.js';
import { loadConfig } from '../../src/config.js';
import { onDispose } from './dispose.js';

/** Quick schedule and short sandbox tasks so a whole lifecycle fits in a couple of seconds. */
export const fastEnv = {
  HOST: '127.0.0.1',
  PORT: '0',
  LOG_LEVEL: 'silent',
  SANDBOX_TASK_SECONDS: '1.5',
  POLL_INITIAL_MS: '50',
  POLL_GROWTH: '0.1',
  POLL_MAX_MS: '250',
  // A submission without a certain answer is looked for upstream this long before it is resent.
  SUBMIT_RECONCILE_GRACE_MS: '500',
};

export function tempDir(prefix = 'cinegraph-test-'): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  onDispose(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

export interface TestApp {
  app: App;
  url: string;
  dataDir: string;
  // biome-ignore lint/suspicious/noExplicitAny: a GraphQL answer's shape is its query's; tests read it loosely and assert the values at run time
  gql: <T = any>(query: string, variables?: Record<string, unknown>) => Promise<{ status: number; body: GqlResult<T> }>;
}

export interface GqlResult<T> {
  data?: T;
  errors?: Array<{ message: string; extensions?: Record<string, unknown>; path?: unknown[] }>;
}

/** The real app (HTTP server, sandbox, poller, SQLite file in a temp dir) on a loopback port. */
export async function startApp(env: Record<string, string> = {}, overrides: AppOverrides = {}): Promise<TestApp> {
  const dataDir = env.DATA_DIR ?? tempDir();
  const app = buildApp(loadConfig({ ...fastEnv, DATA_DIR: dataDir, ...env }), overrides);
  const url = await app.start();
  onDispose(() => app.stop());
  return { app, url, dataDir, gql: (query, variables) => postGraphql(url, query, variables) };
}

// biome-ignore lint/suspicious/noExplicitAny: a GraphQL answer's shape is its query's; tests read it loosely and assert the values at run time
export async function postGraphql<T = any>(
  url: string,
  query: string,
  variables?: Record<string, unknown>,
  headers: Record<string, string> = {},
): Promise<{ status: number; body: GqlResult<T> }> {
  const res = await fetch(`${url}/graphql`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'application/graphql-response+json', ...headers },
    body: JSON.stringify({ query, variables }),
  });
  return { status: res.status, body: (await res.json()) as GqlResult<T> };
}

/** Polls a condition without fixed sleeps; fails with the last value seen. */
export async function waitFor<T>(probe: () => T | Promise<T>, ok: (v: T) => boolean, timeoutMs = 20_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: T = await probe();
  while (!ok(last)) {
    if (Date.now() > deadline) throw new Error(`waitFor timed out; last value: ${JSON.stringify(last)}`);
    await new Promise((r) => setTimeout(r, 25));
    last = await probe();
  }
  return last;
}
