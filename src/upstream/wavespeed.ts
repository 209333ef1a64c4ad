import { z } from 'zod';

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
}

export interface VideoRequest {
  prompt: string;
  image?: string;
  enablePromptExpansion: boolean;
}

/** HTTP statuses after which the same request may well succeed later. */
export const isRetryableStatus = (status: number) => status >= 500 || status === 429 || status === 408;

export type UpstreamErrorKind = 'network' | 'timeout' | 'http' | 'protocol';

export class UpstreamError extends Error {
  constructor(
    readonly kind: UpstreamErrorKind,
    message: string,
    /** HTTP status, or the envelope's `code` when upstream answered 200 with an error code. */
    readonly status?: number,
    /** From a Retry-After header, when upstream sent one. */
    readonly retryAfterMs?: number,
  ) {
    super(message);
    this.name = 'UpstreamError';
  }

  /** Worth retrying: the same request may well succeed later. A 4xx other than 408/429 will not. */
  get transient(): boolean {
    return this.kind !== 'http' || isRetryableStatus(this.status ?? 0);
  }
}

export interface WaveSpeedClientOptions {
  /** e.g. `https://api.wavespeed.ai` or `http://127.0.0.1:4000/sandbox`. */
  baseUrl: string;
  apiKey: string;
  /** Per-request timeout, covering connect, headers and body. */
  timeoutMs: number;
  /** Injected for tests that count or fail requests; defaults to the global fetch. */
  fetch?: typeof fetch;
}

/** HTTP client for the WaveSpeed v3 contract: `{code, message, data}` envelopes, Bearer auth. */
export class WaveSpeedClient {
  private readonly baseUrl: string;

  constructor(private readonly options: WaveSpeedClientOptions) {
    this.baseUrl = options.baseUrl.replace(/\/+$/, '');
  }

  submit(input: VideoRequest, opts: { webhook?: string } = {}): Promise<UpstreamPrediction> {
    const query = opts.webhook ? `?webhook=${encodeURIComponent(opts.webhook)}` : '';
    const body: Record<string, unknown> = {
      prompt: input.prompt,
      enable_prompt_expansion: input.enablePromptExpansion,
    };
    if (input.image !== undefined) body.image = input.image;
    return this.request('POST', `/api/v3/${MODEL}${query}`, body);
  }

  getResult(upstreamId: string, opts: { signal?: AbortSignal } = {}): Promise<UpstreamPrediction> {
    return this.request('GET', `/api/v3/predictions/${encodeURIComponent(upstreamId)}/result`, undefined, opts.signal);
  }

  /** `signal` cancels early (shutdown); the per-request timeout applies either way. */
  private async request(method: string, path: string, body?: unknown, signal?: AbortSignal): Promise<UpstreamPrediction> {
    const doFetch = this.options.fetch ?? fetch;
    let response: Response;
    let text: string;
    try {
      response = await doFetch(`${this.baseUrl}${path}`, {
        method,
        headers: {
          authorization: `Bearer ${this.options.apiKey}`,
          accept: 'application/json',
          ...(body === undefined ? {} : { 'content-type': 'application/json' }),
        },
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: withTimeout(this.options.timeoutMs, signal),
        // The v3 API does not redirect; following one would turn a POST into a GET elsewhere.
        redirect: 'manual',
      });
      text = await response.text();
    } catch (err) {
      const e = err as Error;
      if (signal?.aborted) throw new UpstreamError('network', `${method} ${path}: cancelled (shutting down)`);
      if (e.name === 'TimeoutError' || e.name === 'AbortError') {
        throw new UpstreamError('timeout', `${method} ${path}: no answer within ${this.options.timeoutMs} ms`);
      }
      throw new UpstreamError('network', `${method} ${path}: ${e.message}`);
    }
    const retryAfterMs = parseRetryAfter(response.headers.get('retry-after'));
    const json = safeJson(text);
    const envelope = envelopeSchema.safeParse(json);
    const upstreamMessage = envelope.success ? envelope.data.message : undefined;
    if (!response.ok) {
      const detail = upstreamMessage || text.slice(0, 200) || response.statusText;
      throw new UpstreamError('http', `upstream answered HTTP ${response.status}: ${detail}`, response.status, retryAfterMs);
    }
    if (!envelope.success) {
      throw new UpstreamError('protocol', `upstream answered ${method} ${path} with a body that is not a v3 envelope`);
    }
    if (envelope.data.code !== 200) {
      const code = envelope.data.code;
      throw new UpstreamError('http', `upstream answered code ${code}: ${upstreamMessage ?? 'no message'}`, code, retryAfterMs);
    }
    const data = dataSchema.safeParse(envelope.data.data);
    if (!data.success) {
      throw new UpstreamError('protocol', `upstream answered ${method} ${path} without a valid prediction record`);
    }
    const d = data.data;
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
    };
  }
}

export function withTimeout(ms: number, signal?: AbortSignal): AbortSignal {
  const timeout = AbortSignal.timeout(ms);
  return signal ? AbortSignal.any([timeout, signal]) : timeout;
}

function safeJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

/** Retry-After is either delta-seconds or an HTTP date. */
export function parseRetryAfter(value: string | null, now = Date.now()): number | undefined {
  if (!value) return undefined;
  const seconds = Number(value);
  if (Number.isFinite(seconds) && seconds >= 0) return Math.round(seconds * 1000);
  const at = Date.parse(value);
  return Number.isNaN(at) ? undefined : Math.max(0, at - now);
}
