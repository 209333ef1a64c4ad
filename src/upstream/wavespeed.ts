import { STATUS_CODES } from 'node:http';
import { type Dispatcher, FormData, request as undiciRequest } from 'undici';
import { z } from 'zod';
import { isRetryableStatus, parseRetryAfter } from '../http-helpers.js';

export const MODEL = 'minimax/video-01';

const dataSchema = z.object({
  id: z.string().min(1),
  model: z.string().default(MODEL),
  outputs: z.array(z.string()).nullish().transform((v) => v ?? []),
  urls: z.object({ get: z.string().nullish() }).partial().nullish(),
  has_nsfw_contents: z.array(z.boolean()).nullish().transform((v) => v ?? []),
  status: z.string(),
  created_at: z.string().nullish(),
  error: z.string().nullish(),
  timings: z.object({ inference: z.number().nullish() }).partial().nullish(),
  /** What the task was created with; list records carry it, and reconciliation matches on it. */
  input: z.object({ prompt: z.unknown(), image: z.unknown() }).partial().passthrough().nullish(),
});

const listSchema = z.object({
  page: z.number().nullish(),
  items: z.array(z.unknown()).nullish().transform((v) => v ?? []),
});

const envelopeSchema = z.object({
  code: z.number(),
  message: z.string().nullish(),
  data: z.unknown().optional(),
});

/** An upstream prediction record, in our naming. */
export interface UpstreamPrediction {
  id: string;
  model: string;
  /** As upstream says it: created | processing | completed | failed (or cancelled | timeout | deleted). */
  status: string;
  outputs: string[];
  hasNsfwContents: boolean[];
  urlsGet?: string;
  createdAt?: string;
  error?: string;
  inferenceMs?: number;
  /** The task's input, when upstream reports it (list records do). */
  input?: { prompt?: unknown; image?: unknown };
}

export interface VideoRequest {
  prompt: string;
  image?: string;
  enablePromptExpansion: boolean;
}

export type UpstreamErrorKind = 'network' | 'timeout' | 'http' | 'protocol';

/**
 * Network failures that happen before a request can have left this machine: whatever was being
 * sent cannot have reached upstream, so sending it again cannot create a second task.
 */
const NOT_SENT_CODES = new Set(['ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH', 'ENETUNREACH', 'EADDRNOTAVAIL', 'UND_ERR_CONNECT_TIMEOUT']);

export class UpstreamError extends Error {
  constructor(
    readonly kind: UpstreamErrorKind,
    message: string,
    /** HTTP status, or the envelope's `code` when upstream answered 200 with an error code. */
    readonly status?: number,
    /** From a Retry-After header, when upstream sent one (unbounded: callers cap it). */
    readonly retryAfterMs?: number,
    /** The system error code of a network failure (ECONNREFUSED, ECONNRESET, ...). */
    readonly networkCode?: string,
  ) {
    super(message);
    this.name = 'UpstreamError';
  }

  /** Worth retrying: the same request may well succeed later. A 4xx other than 408/429 will not. */
  get transient(): boolean {
    return this.kind !== 'http' || isRetryableStatus(this.status ?? 0);
  }

  /** The request certainly never reached upstream (or was refused before any work): resending it is safe. */
  get notSent(): boolean {
    return this.kind === 'network' && NOT_SENT_CODES.has(this.networkCode ?? '');
  }
}

/** Largest upstream JSON body read: records are a few KB; a huge body is refused, never buffered. */
export const MAX_UPSTREAM_BODY_BYTES = 1024 * 1024;
/** Shortest timeout of a media upload. */
const UPLOAD_TIMEOUT_MS = 120_000;

export interface WaveSpeedClientOptions {
  /** e.g. `https://api.wavespeed.ai` or `http://127.0.0.1:4000/sandbox`. */
  baseUrl: string | (() => string);
  apiKey: string;
  /** Per-request timeout, covering connect, headers and body. */
  timeoutMs: number;
  /** Injected for tests that fail requests in ways a loopback server cannot; defaults to undici's `request`. */
  request?: UpstreamTransport;
  /** Told of every request once it is done (metrics): which endpoint, how long, and its error if it failed. */
  observe?: (o: UpstreamObservation) => void;
}

/**
 * How a request goes out: undici's `request` (the same HTTP/1.1 client as Node's fetch, without
 * fetch's Request, Response, Headers and WHATWG streams around it). Per request, fetch cost about
 * as much server CPU as the rest of a createVideo's submission (BENCHMARKS.md, issue 18).
 */
export type UpstreamTransport = typeof undiciRequest;

export type UpstreamEndpoint = 'submit' | 'result' | 'list' | 'upload' | 'delete' | 'webhook_secret' | 'other';

export interface UpstreamObservation {
  endpoint: UpstreamEndpoint;
  durationMs: number;
  error?: unknown;
}

/** A route's name without its ids or query, so it can label a metric. */
export function upstreamEndpoint(path: string): UpstreamEndpoint {
  const p = path.split('?', 1)[0] ?? '';
  if (p === `/api/v3/${MODEL}`) return 'submit';
  if (p === '/api/v3/predictions') return 'list';
  if (p === '/api/v3/predictions/delete') return 'delete';
  if (/^\/api\/v3\/predictions\/[^/]+\/result$/.test(p)) return 'result';
  if (p === '/api/v3/media/upload/binary') return 'upload';
  if (p === '/api/v3/webhook/secret') return 'webhook_secret';
  return 'other';
}

/** HTTP client for the WaveSpeed v3 contract: `{code, message, data}` envelopes, Bearer auth. */
export class WaveSpeedClient {
  /** Late-bound: the embedded sandbox's URL is known only once the server listens. */
  private readonly baseUrl: () => string;

  constructor(private readonly options: WaveSpeedClientOptions) {
    const base = options.baseUrl;
    let memo: string | undefined;
    this.baseUrl = typeof base === 'string' ? () => base.replace(/\/+$/, '') : () => (memo ??= base().replace(/\/+$/, ''));
    const observe = options.observe;
    if (observe) {
      // Every request timed around the whole exchange (body read and envelope checked included).
      const send = this.request.bind(this);
      this.request = async (method, path, ...rest) => {
        const started = performance.now();
        const done = (error?: unknown) => observe({ endpoint: upstreamEndpoint(path), durationMs: performance.now() - started, error });
        try {
          const data = await send(method, path, ...rest);
          done();
          return data;
        } catch (error) {
          done(error);
          throw error;
        }
      };
    }
  }

  submit(input: VideoRequest, opts: { webhook?: string } = {}): Promise<UpstreamPrediction> {
    const query = opts.webhook ? `?webhook=${encodeURIComponent(opts.webhook)}` : '';
    const body: Record<string, unknown> = {
      prompt: input.prompt,
      enable_prompt_expansion: input.enablePromptExpansion,
    };
    if (input.image !== undefined) body.image = input.image;
    return this.request('POST', `/api/v3/${MODEL}${query}`, body).then((d) => toRecord(d, 'POST', `/api/v3/${MODEL}`));
  }

  getResult(upstreamId: string, opts: { signal?: AbortSignal } = {}): Promise<UpstreamPrediction> {
    const path = `/api/v3/predictions/${encodeURIComponent(upstreamId)}/result`;
    return this.request('GET', path, undefined, opts.signal).then((d) => toRecord(d, 'GET', path));
  }

  /**
   * One page of the account's recent predictions, newest first (`POST /api/v3/predictions`).
   * Used to find a task whose submission had no certain answer, and as a free probe of the key.
   */
  async listPredictions(page: number, pageSize: number, opts: { signal?: AbortSignal } = {}): Promise<UpstreamPrediction[]> {
    const path = '/api/v3/predictions';
    const data = listSchema.safeParse(await this.request('POST', path, { page, page_size: pageSize }, opts.signal));
    if (!data.success) throw new UpstreamError('protocol', `upstream answered POST ${path} without a list of predictions`);
    return data.data.items.map((item) => toRecord(item, 'POST', path));
  }

  /**
   * Uploads a file through upstream's media upload (`POST /api/v3/media/upload/binary`, multipart
   * `file`) and returns the URL upstream keeps it at, which a submission can carry instead of the
   * bytes. Given at least two minutes: a 20 MiB image on a slow uplink is no timeout.
   */
  async uploadMedia(bytes: Uint8Array, filename: string, contentType: string, opts: { signal?: AbortSignal } = {}): Promise<string> {
    const path = '/api/v3/media/upload/binary';
    const form = new FormData();
    form.append('file', new Blob([new Uint8Array(bytes)], { type: contentType }), filename);
    const data = await this.request('POST', path, form, opts.signal, Math.max(this.options.timeoutMs, UPLOAD_TIMEOUT_MS));
    const url = (data as { download_url?: unknown } | null)?.download_url;
    if (typeof url !== 'string' || !URL.canParse(url)) throw new UpstreamError('protocol', `upstream answered POST ${path} without a download_url`);
    return url;
  }

  /** Deletes tasks and their outputs upstream (`POST /api/v3/predictions/delete`); used when a prediction is canceled. */
  async deletePredictions(upstreamIds: string[], opts: { signal?: AbortSignal } = {}): Promise<void> {
    await this.request('POST', '/api/v3/predictions/delete', { ids: upstreamIds }, opts.signal);
  }

  /** The account's webhook signing secret (`GET /api/v3/webhook/secret`), `whsec_` prefix included. */
  async getWebhookSecret(opts: { signal?: AbortSignal } = {}): Promise<string> {
    const path = '/api/v3/webhook/secret';
    const data = await this.request('GET', path, undefined, opts.signal);
    const secret = typeof data === 'string' ? data : (data as { secret?: unknown } | null)?.secret;
    if (typeof secret !== 'string' || secret.length < 8) throw new UpstreamError('protocol', `upstream answered GET ${path} without a secret`);
    return secret;
  }

  /**
   * Sends one request and returns the envelope's `data`. `signal` cancels early (shutdown); the
   * per-request timeout applies either way. Messages name the route without its query string,
   * which may carry a webhook token.
   */
  private async request(method: string, path: string, body?: unknown, signal?: AbortSignal, timeoutMs = this.options.timeoutMs): Promise<unknown> {
    const send = this.options.request ?? undiciRequest;
    // A form (a media upload) sets its own multipart content type and boundary. It must be the undici
    // package's FormData: Node's global one is another copy of undici, whose internals this one cannot read.
    const form = body instanceof FormData;
    const route = `${method} ${path.split('?', 1)[0]}`;
    // One deadline over the whole exchange (connect, headers and body): undici's own headers and body
    // timeouts each cover one phase, and a body trickled a byte at a time would pass both.
    const deadline = new AbortController();
    const onDeadline = () => deadline.abort();
    const timer = setTimeout(onDeadline, timeoutMs);
    // Shutdown cancels too; a signal aborted already sends nothing.
    const cancel = () => deadline.abort();
    signal?.addEventListener('abort', cancel);
    if (signal?.aborted) cancel();
    let statusCode: number;
    let retryAfter: string | undefined;
    let text: string;
    try {
      const response = await send(`${this.baseUrl()}${path}`, {
        method: method as 'GET' | 'POST',
        headers: {
          authorization: `Bearer ${this.options.apiKey}`,
          accept: 'application/json',
          ...(body === undefined || form ? {} : { 'content-type': 'application/json' }),
        },
        body: body === undefined ? undefined : form ? body : JSON.stringify(body),
        signal: deadline.signal,
        // undici's request never follows a redirect (the v3 API does not redirect; following one
        // would turn a POST into a GET elsewhere): a 3xx is answered as the HTTP error it is here.
      });
      statusCode = response.statusCode;
      const header = response.headers['retry-after'];
      retryAfter = Array.isArray(header) ? header[0] : header;
      text = await readCapped(response, MAX_UPSTREAM_BODY_BYTES);
      // An upstream that echoes the key (in an error message, say) must not hand it to our clients.
      if (this.options.apiKey.length >= 8) text = text.replaceAll(this.options.apiKey, '[redacted]');
    } catch (err) {
      if (err instanceof UpstreamError) throw err;
      if (signal?.aborted) throw new UpstreamError('network', `${route}: cancelled (shutting down)`);
      const e = err as Error & { cause?: { code?: string } };
      // Not shutdown, so the deadline (or, from an injected transport, any abort): a timeout.
      if (e.name === 'AbortError') {
        throw new UpstreamError('timeout', `${route}: no answer within ${timeoutMs} ms`);
      }
      const code = e.cause?.code ?? (e as { code?: string }).code;
      throw new UpstreamError('network', `${route}: ${e.message}${code && !e.message.includes(code) ? ` (${code})` : ''}`, undefined, undefined, code);
    } finally {
      clearTimeout(timer);
      signal?.removeEventListener('abort', cancel);
    }
    const retryAfterMs = parseRetryAfter(retryAfter ?? null);
    const json = safeJson(text);
    const envelope = envelopeSchema.safeParse(json);
    const upstreamMessage = envelope.success ? envelope.data.message : undefined;
    if (statusCode < 200 || statusCode > 299) {
      const detail = upstreamMessage || text.slice(0, 200) || STATUS_CODES[statusCode] || '';
      throw new UpstreamError('http', `upstream answered HTTP ${statusCode}: ${detail}`, statusCode, retryAfterMs);
    }
    if (!envelope.success) {
      throw new UpstreamError('protocol', `upstream answered ${route} with a body that is not a v3 envelope`);
    }
    if (envelope.data.code !== 200) {
      const code = envelope.data.code;
      throw new UpstreamError('http', `upstream answered code ${code}: ${upstreamMessage ?? 'no message'}`, code, retryAfterMs);
    }
    return envelope.data.data;
  }
}

function toRecord(data: unknown, method: string, path: string): UpstreamPrediction {
  const parsed = dataSchema.safeParse(data);
  if (!parsed.success) {
    throw new UpstreamError('protocol', `upstream answered ${method} ${path} without a valid prediction record`);
  }
  const d = parsed.data;
  return {
    id: d.id,
    model: d.model,
    status: d.status,
    outputs: d.outputs,
    hasNsfwContents: d.has_nsfw_contents,
    urlsGet: d.urls?.get ?? undefined,
    createdAt: d.created_at ?? undefined,
    error: d.error || undefined,
    inferenceMs: d.timings?.inference ?? undefined,
    input: d.input ?? undefined,
  };
}

/**
 * Reads a response body of at most `maxBytes`: a declared length over it is refused before a byte
 * is read, and an undeclared one is cut off as soon as it passes it, so a hostile or broken
 * upstream cannot make the process buffer hundreds of megabytes. Either way the connection is
 * destroyed rather than drained.
 */
async function readCapped(response: Dispatcher.ResponseData, maxBytes: number): Promise<string> {
  const tooLarge = (size: string) =>
    new UpstreamError('protocol', `upstream sent a body of ${size} bytes; at most ${maxBytes} are read`, response.statusCode);
  const declared = Number(response.headers['content-length'] ?? 0);
  if (declared > maxBytes) {
    response.body.destroy();
    throw tooLarge(String(declared));
  }
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of response.body as AsyncIterable<Buffer>) {
    size += chunk.byteLength;
    if (size > maxBytes) {
      response.body.destroy();
      throw tooLarge(`over ${maxBytes}`);
    }
    chunks.push(chunk);
  }
  return chunks.length === 1 ? (chunks[0] as Buffer).toString('utf8') : Buffer.concat(chunks).toString('utf8');
}

function safeJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}
