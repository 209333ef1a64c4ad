import { createWriteStream } from 'node:fs';
import { rename, rm } from 'node:fs/promises';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { ReadableStream as WebReadableStream } from 'node:stream/web';
import { createClient, type Client } from 'graphql-ws';
import WebSocket from 'ws';
import { CliError } from './exit.js';

/** A prediction as the CLI asks for it; also what `--json` prints. */
export interface Prediction {
  id: string;
  status: string;
  createdAt: string;
  updatedAt: string;
  completedAt: string | null;
  error: string | null;
  outputs: string[];
  keptOutputs: string[];
  upstreamId: string | null;
  /** Place in the admission queue (1 is next) while it waits for the account's tier; null once submitted. */
  queuePosition: number | null;
  input: { prompt: string; hasImage: boolean; enablePromptExpansion: boolean };
}

export const PREDICTION_FIELDS = `fragment P on Prediction {
  id status createdAt updatedAt completedAt error outputs keptOutputs upstreamId queuePosition
  input { prompt hasImage enablePromptExpansion }
}`;

/** Requests that get no answer in this long count as an unreachable server. */
const REQUEST_TIMEOUT_MS = 30_000;
/** graphql-ws closes that carry one of our refusals in their reason (see src/server/ws.ts). */
const REFUSAL_CLOSES = new Set([4401, 4403, 4429]);

export interface Gateway {
  /** Base URL, no trailing slash. */
  readonly url: string;
  /** Runs one operation over HTTP; a GraphQL error becomes a `refused` CliError with its code. */
  request<T>(query: string, variables?: Record<string, unknown>): Promise<T>;
  /**
   * Follows a prediction over graphql-ws (`predictionUpdated`) until the server completes the
   * subscription (after a final status); `onEvent` sees each state, the first being the current one.
   * @returns the last state.
   */
  follow(id: string, onEvent: (p: Prediction) => void): Promise<Prediction>;
}

/** The server named by CINEGRAPH_URL (default http://127.0.0.1:4000), with CINEGRAPH_API_KEY if set. */
export function gatewayFromEnv(env: NodeJS.ProcessEnv = process.env): Gateway {
  const raw = env.CINEGRAPH_URL?.trim() || 'http://127.0.0.1:4000';
  let base: URL;
  try {
    base = new URL(raw);
  } catch {
    throw new CliError('usage', `CINEGRAPH_URL "${raw}" is not a URL like http://127.0.0.1:4000`);
  }
  if (base.protocol !== 'http:' && base.protocol !== 'https:') throw new CliError('usage', `CINEGRAPH_URL must be an http(s) URL, not ${base.protocol}`);
  const key = env.CINEGRAPH_API_KEY?.trim() || undefined;
  return createGateway(base.href.replace(/\/+$/, ''), key);
}

export function createGateway(url: string, key?: string): Gateway {
  const unreachable = (why: string) => new CliError('unreachable', `cannot reach the cinegraph server at ${url}: ${why} (is it running? set CINEGRAPH_URL)`);

  return {
    url,
    async request<T>(query: string, variables?: Record<string, unknown>): Promise<T> {
      let res: Response;
      try {
        res = await fetch(`${url}/graphql`, {
          method: 'POST',
          headers: {
            'content-type': 'application/json',
            accept: 'application/graphql-response+json, application/json',
            ...(key ? { authorization: `Bearer ${key}` } : {}),
          },
          body: JSON.stringify({ query, variables }),
          signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
        });
      } catch (err) {
        throw unreachable(networkReason(err));
      }
      let body: { data?: T | null; errors?: Array<{ message: string; extensions?: { code?: string } }> } | undefined;
      try {
        body = (await res.json()) as typeof body;
      } catch {
        body = undefined;
      }
      if (!body || typeof body !== 'object' || (!('data' in body) && !Array.isArray(body.errors))) {
        throw unreachable(`HTTP ${res.status} without a GraphQL answer`);
      }
      const first = body.errors?.[0];
      if (first) throw refusal(first.message, first.extensions?.code);
      return body.data as T;
    },

    follow(id, onEvent) {
      let connected = false;
      const client: Client = createClient({
        url: `${url.replace(/^http/, 'ws')}/graphql`,
        webSocketImpl: WebSocket,
        connectionParams: key ? { authorization: `Bearer ${key}` } : undefined,
        // A dropped connection is re-made and the subscription restarted (it begins with the
        // current state, so nothing is missed); a server that never answered is not retried.
        retryAttempts: 5,
        shouldRetry: (event) => connected && !isRefusalClose(event),
        on: {
          connected: () => {
            connected = true;
          },
        },
      });
      return new Promise<Prediction>((resolve, reject) => {
        let last: Prediction | undefined;
        client.subscribe<{ predictionUpdated: Prediction }>(
          { query: `subscription Follow($id: ID!) { predictionUpdated(id: $id) { ...P } } ${PREDICTION_FIELDS}`, variables: { id } },
          {
            next: (msg) => {
              const first = msg.errors?.[0];
              if (first) return reject(refusal(first.message, (first.extensions as { code?: string } | undefined)?.code));
              if (msg.data?.predictionUpdated) {
                last = msg.data.predictionUpdated;
                onEvent(last);
              }
            },
            error: (err) => reject(socketError(err, unreachable)),
            complete: () => (last ? resolve(last) : reject(unreachable('the subscription ended without an event'))),
          },
        );
      }).finally(() => client.dispose());
    },
  };
}

function refusal(message: string, code = 'ERROR'): CliError {
  return new CliError('refused', `refused (${code}): ${message}`, code);
}

function isRefusalClose(event: unknown): event is { code: number; reason: string } {
  const e = event as { code?: unknown; reason?: unknown } | undefined;
  return typeof e?.code === 'number' && REFUSAL_CLOSES.has(e.code) && typeof e.reason === 'string';
}

/** What graphql-ws hands a sink's error: GraphQL errors, a close event, or a socket error. */
function socketError(err: unknown, unreachable: (why: string) => CliError): CliError {
  if (Array.isArray(err)) {
    const first = err[0] as { message?: string; extensions?: { code?: string } } | undefined;
    return refusal(first?.message ?? 'subscription refused', first?.extensions?.code);
  }
  if (isRefusalClose(err)) return refusal(`the server closed the socket (${err.code})`, err.reason || undefined);
  const e = err as { code?: unknown; reason?: unknown; message?: unknown; error?: unknown };
  if (typeof e?.code === 'number') return unreachable(`the socket closed (${e.code}${e.reason ? ` ${String(e.reason)}` : ''})`);
  return unreachable(networkReason(e?.error ?? err));
}

/** ECONNREFUSED, a DNS failure, a timeout: the short reason fetch or ws buries in `cause`. */
function networkReason(err: unknown): string {
  const e = err as { name?: string; message?: string; code?: string; cause?: { code?: string; message?: string } } | undefined;
  if (e?.name === 'TimeoutError') return `no answer within ${REQUEST_TIMEOUT_MS / 1000} s`;
  return e?.cause?.code ?? e?.code ?? e?.cause?.message ?? e?.message ?? String(err);
}

/**
 * Downloads `url` to `out`, through a temporary file beside it that is renamed once complete, so
 * `out` is never a half-written video. No Authorization header is sent: kept media needs none,
 * and an upstream URL must not receive the gateway's key.
 * @returns the number of bytes written.
 */
export async function download(url: string, out: string): Promise<number> {
  let res: Response;
  try {
    res = await fetch(url, { signal: AbortSignal.timeout(10 * 60_000) });
  } catch (err) {
    throw new CliError('download', `could not download ${url}: ${networkReason(err)}`);
  }
  if (!res.ok || !res.body) {
    await res.body?.cancel();
    throw new CliError('download', `could not download ${url}: HTTP ${res.status}`);
  }
  const part = `${out}.${process.pid}.part`;
  let bytes = 0;
  try {
    const body = Readable.fromWeb(res.body as WebReadableStream<Uint8Array>);
    body.on('data', (chunk: Buffer) => (bytes += chunk.length));
    await pipeline(body, createWriteStream(part));
    await rename(part, out);
  } catch (err) {
    await rm(part, { force: true });
    throw new CliError('download', `could not save the video to ${out}: ${(err as Error).message}`);
  }
  return bytes;
}
