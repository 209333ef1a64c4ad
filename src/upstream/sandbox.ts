import { randomBytes } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import send from 'send';
import { MODEL } from './wavespeed.js';

/** Switchable fault injection. Rates are fractions in [0, 1]. */
export interface SandboxFaults {
  /** Share of new tasks that end `failed`. */
  failureRate: number;
}

export interface SandboxOptions {
  /** How long a task runs, created → processing → completed. */
  taskSeconds: number;
  faults?: Partial<SandboxFaults>;
  /** Injected so tests can move time; defaults to Date.now. */
  now?: () => number;
}

export interface SandboxStats {
  submissions: number;
  /** Result GETs per task id. */
  resultRequests: Map<string, number>;
}

type Fate = 'c' | 'f';

const VIDEO_FILE = join(dirname(fileURLToPath(import.meta.url)), '../../assets/sandbox.mp4');
const RETENTION_MS = 7 * 24 * 3600 * 1000;
const MAX_BODY_BYTES = 32 * 1024 * 1024;

/**
 * The embedded upstream: the WaveSpeed v3 contract on plain HTTP, mounted by the gateway under
 * /sandbox. A task's whole life is derived from its id (creation time, duration, fate), so tasks
 * survive a restart of the process without any storage of their own.
 */
export class SandboxUpstream {
  readonly stats: SandboxStats = { submissions: 0, resultRequests: new Map() };
  private faults: SandboxFaults;
  private readonly now: () => number;

  constructor(private readonly options: SandboxOptions) {
    this.faults = { failureRate: 0, ...options.faults };
    this.now = options.now ?? Date.now;
  }

  setFaults(faults: Partial<SandboxFaults>): SandboxFaults {
    this.faults = { ...this.faults, ...faults };
    return this.faults;
  }

  /** Handles one request; `path` is relative to the mount point (`/api/v3/...`). */
  async handle(req: IncomingMessage, res: ServerResponse, path: string, mountUrl: string): Promise<void> {
    const url = new URL(path, 'http://sandbox');
    if (req.method === 'GET' && url.pathname.startsWith('/media/')) return this.serveMedia(req, res, url.pathname);
    if (!/^Bearer\s+\S+/i.test(req.headers.authorization ?? '')) {
      return reply(res, 401, { code: 401, message: 'Unauthorized: missing or empty Bearer API key', data: null });
    }
    if (req.method === 'POST' && url.pathname === `/api/v3/${MODEL}`) return this.submit(req, res, mountUrl);
    const result = /^\/api\/v3\/predictions\/([^/]+)\/result$/.exec(url.pathname);
    if (req.method === 'GET' && result) return this.result(res, decodeURIComponent(result[1]!), mountUrl);
    return reply(res, 404, { code: 404, message: `no route for ${req.method} ${url.pathname}`, data: null });
  }

  private async submit(req: IncomingMessage, res: ServerResponse, mountUrl: string): Promise<void> {
    let body: unknown;
    try {
      body = JSON.parse((await readBody(req, MAX_BODY_BYTES)).toString('utf8'));
    } catch (err) {
      const tooLarge = (err as Error).message === 'too large';
      return reply(res, tooLarge ? 413 : 400, { code: tooLarge ? 413 : 400, message: tooLarge ? 'request body too large' : 'body is not JSON', data: null });
    }
    const input = body as { prompt?: unknown; image?: unknown };
    if (typeof input?.prompt !== 'string' || input.prompt.trim() === '') {
      return reply(res, 400, { code: 400, message: 'prompt is required', data: null });
    }
    if (input.image !== undefined && typeof input.image !== 'string') {
      return reply(res, 400, { code: 400, message: 'image must be a string', data: null });
    }
    this.stats.submissions++;
    const fate: Fate = Math.random() < this.faults.failureRate ? 'f' : 'c';
    const id = encodeTaskId(this.now(), Math.round(this.options.taskSeconds * 1000), fate);
    return reply(res, 200, { code: 200, message: 'success', data: this.record(id, mountUrl) });
  }

  private result(res: ServerResponse, id: string, mountUrl: string): void {
    const task = decodeTaskId(id);
    if (!task || this.now() - task.createdAt > RETENTION_MS) {
      return reply(res, 404, { code: 404, message: 'prediction not found', data: null });
    }
    this.stats.resultRequests.set(id, (this.stats.resultRequests.get(id) ?? 0) + 1);
    return reply(res, 200, { code: 200, message: 'success', data: this.record(id, mountUrl) });
  }

  private record(id: string, mountUrl: string) {
    const task = decodeTaskId(id)!;
    const elapsed = this.now() - task.createdAt;
    const status =
      elapsed >= task.durationMs ? (task.fate === 'f' ? 'failed' : 'completed') : elapsed >= task.durationMs * 0.2 ? 'processing' : 'created';
    const completed = status === 'completed';
    return {
      id,
      model: MODEL,
      outputs: completed ? [`${mountUrl}/media/${id}.mp4`] : [],
      urls: { get: `${mountUrl}/api/v3/predictions/${id}/result` },
      has_nsfw_contents: completed ? [false] : [],
      status,
      created_at: new Date(task.createdAt).toISOString(),
      error: status === 'failed' ? 'sandbox: injected task failure' : '',
      timings: { inference: completed ? Math.round(task.durationMs * 0.8) : 0 },
    };
  }

  private serveMedia(req: IncomingMessage, res: ServerResponse, pathname: string): void {
    const id = /^\/media\/([^/]+)\.mp4$/.exec(pathname)?.[1];
    const task = id ? decodeTaskId(id) : undefined;
    const elapsed = task ? this.now() - task.createdAt : -1;
    if (!task || task.fate !== 'c' || elapsed < task.durationMs || elapsed > RETENTION_MS) {
      return reply(res, 404, { code: 404, message: 'media not found', data: null });
    }
    // `send` brings Range, conditional GETs and the video/mp4 type that a <video> element needs.
    send(req, VIDEO_FILE, { acceptRanges: true, cacheControl: true, maxAge: '7d' }).pipe(res);
  }
}

export function encodeTaskId(createdAt: number, durationMs: number, fate: Fate): string {
  return `sbx-${createdAt.toString(36)}-${durationMs.toString(36)}-${fate}-${randomBytes(6).toString('hex')}`;
}

export function decodeTaskId(id: string): { createdAt: number; durationMs: number; fate: Fate } | undefined {
  const m = /^sbx-([0-9a-z]+)-([0-9a-z]+)-([cf])-[0-9a-f]{12}$/.exec(id);
  if (!m) return undefined;
  return { createdAt: parseInt(m[1]!, 36), durationMs: parseInt(m[2]!, 36), fate: m[3] as Fate };
}

function reply(res: ServerResponse, status: number, body: unknown): void {
  const payload = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(payload) });
  res.end(payload);
}

function readBody(req: IncomingMessage, limit: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    // Keep reading past the limit (dropping the bytes) so the client still gets its 413.
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size <= limit) chunks.push(chunk);
    });
    req.on('end', () => (size > limit ? reject(new Error('too large')) : resolve(Buffer.concat(chunks))));
    req.on('error', reject);
  });
}
