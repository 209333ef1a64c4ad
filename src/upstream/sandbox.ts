import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import send from 'send';
import { systemClock, type Clock } from '../clock.js';
import { readBody } from '../http-helpers.js';
import { sendJson } from '../server/json.js';
import { invalidFaultSetting, noFaults, type SandboxFaults } from './sandbox-faults.js';
import { RETENTION_MS, decodeTaskId, encodeTaskId, taskRecord, type Fate } from './sandbox-tasks.js';
import { SandboxTaskStore } from './sandbox-store.js';
import { deliverSigned } from './sandbox-webhooks.js';
import { generateSigningSecret } from '../webhooks/secrets.js';
import { MODEL } from './wavespeed.js';

export interface SandboxOptions {
  /** How long a task runs, created → processing → completed. */
  taskSeconds: number;
  faults?: Partial<SandboxFaults>;
  /** Injected so tests and benchmarks can run minutes in seconds. @default systemClock */
  clock?: Clock;
  /** Delivers webhooks; injected by tests. @default fetch */
  fetch?: typeof fetch;
  /** Where task inputs are kept for the list endpoint, so they survive a restart. @default in memory */
  tasksFile?: string;
  /** Where media uploads are kept (`POST /api/v3/media/upload/binary`). @default a temporary directory */
  uploadsDir?: string;
  /**
   * The only webhook target accepted: this gateway's own webhook route (PUBLIC_URL + /webhooks/wavespeed/).
   * Any other `?webhook=` is refused with 400, so the sandbox cannot be made to POST elsewhere.
   * @default undefined (no webhooks accepted)
   */
  webhookPrefix?: string;
  /** First retry of a failed webhook delivery, in the clock's time; later ones double. @default 1000 */
  webhookRetryMs?: number;
}

export interface SandboxStats {
  submissions: number;
  /** List requests (`POST /api/v3/predictions`). */
  listRequests: number;
  /** Media uploads received. */
  uploads: number;
  /** Delete requests, and the task ids they named. */
  deleteRequests: number;
  deleted: Set<string>;
  /** Result GETs per task id. */
  resultRequests: Map<string, number>;
  /** Requests answered with an injected fault, by kind. */
  faults: { serverError: number; rateLimited: number; slow: number; malformed: number; unauthorized: number; acceptedThenStalled: number; acceptedThenFailed: number };
  /** Webhook deliveries answered 2xx, and every attempt (retries included). */
  webhooksDelivered: number;
  webhookAttempts: number;
  /** Requests for the webhook secret (`GET /api/v3/webhook/secret`). */
  secretRequests: number;
}


const ASSETS_DIR = join(dirname(fileURLToPath(import.meta.url)), '../../assets');
const MAX_BODY_BYTES = 32 * 1024 * 1024;

/**
 * The embedded upstream: the WaveSpeed v3 contract on plain HTTP, mounted by the gateway under
 * /sandbox. A task's whole life is derived from its id (creation time, duration, fate), so tasks
 * survive a restart of the process without any storage of their own.
 */
export class SandboxUpstream {
  readonly stats: SandboxStats = {
    submissions: 0,
    listRequests: 0,
    uploads: 0,
    deleteRequests: 0,
    deleted: new Set(),
    resultRequests: new Map(),
    faults: { serverError: 0, rateLimited: 0, slow: 0, malformed: 0, unauthorized: 0, acceptedThenStalled: 0, acceptedThenFailed: 0 },
    webhooksDelivered: 0,
    webhookAttempts: 0,
    secretRequests: 0,
  };
  private secret = generateSigningSecret();
  /** Signs webhook deliveries; served at /api/v3/webhook/secret like the account secret upstream. */
  get webhookSecret(): string {
    return this.secret;
  }

  /** Replaces the webhook secret, as regenerating it in the account does; the new one. */
  rotateWebhookSecret(): string {
    this.secret = generateSigningSecret();
    return this.secret;
  }
  private faults: SandboxFaults;
  private readonly clock: Clock;
  private rateLimitedUntil = 0;
  private unauthorizedUntil = 0;
  private readonly tasks: SandboxTaskStore;
  private readonly uploadsDir: string;
  private readonly timers = new Set<{ clear(): void }>();

  constructor(private readonly options: SandboxOptions) {
    this.clock = options.clock ?? systemClock;
    this.faults = this.setFaults({ ...noFaults, ...options.faults });
    this.tasks = new SandboxTaskStore(options.tasksFile);
    this.uploadsDir = options.uploadsDir ?? join(tmpdir(), 'cinegraph-sandbox-uploads');
  }

  private now(): number {
    return this.clock.now().getTime();
  }

  setFaults(faults: Partial<SandboxFaults>): SandboxFaults {
    this.faults = { ...this.faults, ...faults };
    // A switch, not a rate: setting it starts a period of 401s from now.
    if (faults.unauthorizedSeconds !== undefined) this.unauthorizedUntil = this.now() + faults.unauthorizedSeconds * 1000;
    return this.faults;
  }

  /** Cancels pending webhook deliveries (they are in memory only; the gateway's safety-net polling covers a restart). */
  close(): void {
    for (const t of this.timers) t.clear();
    this.timers.clear();
    this.tasks.close();
  }

  /** Handles one request; `path` is relative to the mount point (`/api/v3/...`). */
  async handle(req: IncomingMessage, res: ServerResponse, path: string, mountUrl: string): Promise<void> {
    const url = new URL(path, 'http://sandbox');
    if (req.method === 'GET' && url.pathname.startsWith('/media/uploads/')) return this.serveUpload(req, res, url.pathname);
    if (req.method === 'GET' && url.pathname.startsWith('/media/')) return this.serveMedia(req, res, url.pathname);
    // Everything but the media answers only this machine: the sandbox stores what it is sent (up to
    // 32 MiB a submission), and a gateway on a public HOST must not be a free disk for strangers.
    if (!isDirectLoopback(req)) {
      return sendJson(res, 403, { code: 403, message: 'the sandbox API answers only direct requests from this machine', data: null });
    }
    if (url.pathname === '/_control/faults') return this.control(req, res);
    if (!/^Bearer\s+\S+/i.test(req.headers.authorization ?? '')) {
      return sendJson(res, 401, { code: 401, message: 'Unauthorized: missing or empty Bearer API key', data: null });
    }
    if (this.now() < this.unauthorizedUntil) {
      this.stats.faults.unauthorized++;
      return sendJson(res, 401, { code: 401, message: 'Unauthorized: invalid or inactive API key (sandbox: injected)', data: null });
    }
    if (await this.injectFault(res)) return;
    if (req.method === 'POST' && url.pathname === `/api/v3/${MODEL}`) return this.submit(req, res, mountUrl, url.searchParams.get('webhook'));
    if (req.method === 'POST' && url.pathname === '/api/v3/predictions') return this.list(req, res, mountUrl);
    if (req.method === 'POST' && url.pathname === '/api/v3/predictions/delete') return this.delete(req, res);
    if (req.method === 'POST' && url.pathname === '/api/v3/media/upload/binary') return this.upload(req, res, mountUrl);
    if (req.method === 'GET' && url.pathname === '/api/v3/webhook/secret') {
      this.stats.secretRequests++;
      return sendJson(res, 200, { code: 200, message: 'success', data: { secret: this.webhookSecret } });
    }
    const resultOf = /^\/api\/v3\/predictions\/([^/]+)\/result$/.exec(url.pathname)?.[1];
    if (req.method === 'GET' && resultOf !== undefined) return this.result(res, decodeURIComponent(resultOf), mountUrl);
    return sendJson(res, 404, { code: 404, message: `no route for ${req.method} ${url.pathname}`, data: null });
  }

  /**
   * GET shows the faults in force; POST merges a JSON object of new values into them. Only from
   * this machine: the gateway may listen on a public address while still running the sandbox.
   */
  private async control(req: IncomingMessage, res: ServerResponse): Promise<void> {
    if (req.method === 'GET') return sendJson(res, 200, this.faults);
    if (req.method !== 'POST') return sendJson(res, 405, { code: 405, message: 'use GET or POST', data: null });
    let patch: Record<string, unknown>;
    try {
      patch = JSON.parse((await readBody(req, 64 * 1024)).toString('utf8'));
    } catch {
      return sendJson(res, 400, { code: 400, message: 'body must be a JSON object of fault settings', data: null });
    }
    const bad = patch && typeof patch === 'object' ? invalidFaultSetting(patch) : '';
    if (bad !== undefined) {
      return sendJson(res, 400, { code: 400, message: `unknown or invalid fault setting ${bad}`.trim(), data: null });
    }
    return sendJson(res, 200, this.setFaults(patch as Partial<SandboxFaults>));
  }

  /** Answers the request with an injected fault, or returns false to let it through. */
  private async injectFault(res: ServerResponse): Promise<boolean> {
    const f = this.faults;
    const now = this.now();
    if (now >= this.rateLimitedUntil && Math.random() < f.rateLimitRate) this.rateLimitedUntil = now + f.rateLimitSeconds * 1000;
    if (now < this.rateLimitedUntil) {
      this.stats.faults.rateLimited++;
      res.setHeader('retry-after', String(Math.max(1, Math.ceil((this.rateLimitedUntil - now) / 1000))));
      sendJson(res, 429, { code: 429, message: 'sandbox: injected rate limit', data: null });
      return true;
    }
    if (Math.random() < f.serverErrorRate) {
      this.stats.faults.serverError++;
      sendJson(res, 500, { code: 500, message: 'sandbox: injected server error', data: null });
      return true;
    }
    if (Math.random() < f.slowRate) {
      this.stats.faults.slow++;
      await new Promise((r) => setTimeout(r, f.slowMs));
      // By now the client has usually given up; answering anyway keeps the socket tidy.
      if (res.destroyed) return true;
    }
    if (Math.random() < f.malformedRate) {
      this.stats.faults.malformed++;
      res.writeHead(200, { 'content-type': 'application/json' }).end('{"code":200,"data":{"id":');
      return true;
    }
    return false;
  }

  private async submit(req: IncomingMessage, res: ServerResponse, mountUrl: string, webhook: string | null): Promise<void> {
    let body: unknown;
    try {
      body = JSON.parse((await readBody(req, MAX_BODY_BYTES)).toString('utf8'));
    } catch (err) {
      const tooLarge = (err as Error).message === 'too large';
      return sendJson(res, tooLarge ? 413 : 400, { code: tooLarge ? 413 : 400, message: tooLarge ? 'request body too large' : 'body is not JSON', data: null });
    }
    const input = body as { prompt?: unknown; image?: unknown; enable_prompt_expansion?: unknown };
    if (typeof input?.prompt !== 'string' || input.prompt.trim() === '') {
      return sendJson(res, 400, { code: 400, message: 'prompt is required', data: null });
    }
    if (input.image !== undefined && typeof input.image !== 'string') {
      return sendJson(res, 400, { code: 400, message: 'image must be a string', data: null });
    }
    if (webhook !== null && !this.webhookAllowed(webhook)) {
      return sendJson(res, 400, { code: 400, message: "webhook must be this gateway's own webhook route", data: null });
    }
    this.stats.submissions++;
    const draw = Math.random();
    const fate: Fate = draw < this.faults.failureRate ? 'f' : draw < this.faults.failureRate + this.faults.hangRate ? 'h' : 'c';
    const createdAt = this.now();
    const id = encodeTaskId(createdAt, Math.round(this.options.taskSeconds * 1000), fate);
    this.tasks.add(id, createdAt, {
      prompt: input.prompt,
      ...(typeof input.image === 'string' ? { image: input.image } : {}),
      ...(typeof input.enable_prompt_expansion === 'boolean' ? { enable_prompt_expansion: input.enable_prompt_expansion } : {}),
    });
    if (webhook) this.scheduleWebhooks(id, webhook, mountUrl);
    // The task exists (and would be billed) whatever the client hears next: the ambiguous outcomes.
    if (Math.random() < this.faults.acceptThenErrorRate) {
      this.stats.faults.acceptedThenFailed++;
      return sendJson(res, 502, { code: 502, message: 'sandbox: injected bad gateway after the task was created', data: null });
    }
    if (Math.random() < this.faults.acceptThenStallRate) {
      this.stats.faults.acceptedThenStalled++;
      await new Promise((r) => setTimeout(r, this.faults.slowMs));
      if (res.destroyed) return;
    }
    return sendJson(res, 200, { code: 200, message: 'success', data: taskRecord(id, this.now(), mountUrl) });
  }

  /**
   * `POST /api/v3/media/upload/binary`, multipart with a `file` part: keeps the file (by content
   * hash) and answers where it can be downloaded, as upstream's media upload does.
   */
  private async upload(req: IncomingMessage, res: ServerResponse, mountUrl: string): Promise<void> {
    const type = req.headers['content-type'] ?? '';
    if (!/^multipart\/form-data/i.test(type)) {
      sendJson(res, 400, { code: 400, message: 'send the file as multipart/form-data with a part named file', data: null });
      return;
    }
    let file: FormDataEntryValue | null;
    try {
      const body = await readBody(req, MAX_BODY_BYTES);
      file = (await new Response(new Uint8Array(body), { headers: { 'content-type': type } }).formData()).get('file');
    } catch (err) {
      const tooLarge = (err as Error).message === 'too large';
      sendJson(res, tooLarge ? 413 : 400, { code: tooLarge ? 413 : 400, message: tooLarge ? 'file too large' : 'not a readable multipart body', data: null });
      return;
    }
    if (!file || typeof file === 'string') {
      sendJson(res, 400, { code: 400, message: 'a part named file is required', data: null });
      return;
    }
    const bytes = Buffer.from(await file.arrayBuffer());
    const ext = file.type === 'image/png' ? 'png' : file.type === 'image/jpeg' ? 'jpg' : 'bin';
    const name = `${createHash('sha256').update(bytes).digest('hex')}.${ext}`;
    mkdirSync(this.uploadsDir, { recursive: true });
    writeFileSync(join(this.uploadsDir, name), bytes);
    this.stats.uploads++;
    sendJson(res, 200, { code: 200, message: 'success', data: { type: file.type, download_url: `${mountUrl}/media/uploads/${name}`, filename: file.name, size: bytes.length } });
  }

  private serveUpload(req: IncomingMessage, res: ServerResponse, pathname: string): void {
    const name = pathname.slice('/media/uploads/'.length);
    if (!/^[0-9a-f]{64}\.(png|jpg|bin)$/.test(name) || !existsSync(join(this.uploadsDir, name))) {
      sendJson(res, 404, { code: 404, message: 'media not found', data: null });
      return;
    }
    send(req, name, { root: this.uploadsDir }).pipe(res);
  }

  /** `POST /api/v3/predictions/delete` with `{"ids": [...]}`: the tasks stop and read as not found from then on. */
  private async delete(req: IncomingMessage, res: ServerResponse): Promise<void> {
    let body: { ids?: unknown };
    try {
      body = JSON.parse((await readBody(req, 64 * 1024)).toString('utf8') || '{}');
    } catch {
      sendJson(res, 400, { code: 400, message: 'body is not JSON', data: null });
      return;
    }
    const ids = body?.ids;
    if (!Array.isArray(ids) || ids.length === 0 || ids.length > 100 || !ids.every((id) => typeof id === 'string')) {
      sendJson(res, 400, { code: 400, message: 'ids must be an array of 1 to 100 prediction ids', data: null });
      return;
    }
    this.stats.deleteRequests++;
    for (const id of ids as string[]) this.stats.deleted.add(id);
    this.tasks.delete(ids as string[], this.now());
    sendJson(res, 200, { code: 200, message: 'success', data: null });
  }

  /** `POST /api/v3/predictions` with `{page, page_size}`: the account's tasks, newest first, with their input. */
  private async list(req: IncomingMessage, res: ServerResponse, mountUrl: string): Promise<void> {
    let body: { page?: unknown; page_size?: unknown };
    try {
      body = JSON.parse((await readBody(req, 64 * 1024)).toString('utf8') || '{}');
    } catch {
      return sendJson(res, 400, { code: 400, message: 'body is not JSON', data: null });
    }
    const page = body?.page ?? 1;
    const pageSize = body?.page_size ?? 20;
    if (!Number.isInteger(page) || (page as number) < 1 || !Number.isInteger(pageSize) || (pageSize as number) < 1 || (pageSize as number) > 100) {
      return sendJson(res, 400, { code: 400, message: 'page must be an integer >= 1 and page_size an integer from 1 to 100', data: null });
    }
    this.stats.listRequests++;
    const now = this.now();
    const items = this.tasks
      .page(page as number, pageSize as number, now - RETENTION_MS)
      .map((t) => ({ ...taskRecord(t.id, now, mountUrl), input: t.input }));
    return sendJson(res, 200, { code: 200, message: 'success', data: { page, items } });
  }

  /** Only a URL under this gateway's own webhook route, compared as parsed URLs (no tricks with `@` or `..`). */
  private webhookAllowed(webhook: string): boolean {
    const prefix = this.options.webhookPrefix;
    if (!prefix) return false;
    try {
      const url = new URL(webhook);
      const allowed = new URL(prefix);
      return url.origin === allowed.origin && url.pathname.startsWith(allowed.pathname) && !url.username && !url.password;
    } catch {
      return false;
    }
  }

  /**
   * POSTs the record to `webhook` once the task ends (completed or failed), signed with the secret
   * served at /api/v3/webhook/secret and retried with backoff, as WaveSpeed does. A task that hangs
   * never ends, so it sends nothing.
   */
  private scheduleWebhooks(id: string, webhook: string, mountUrl: string): void {
    const task = decodeTaskId(id);
    if (!task || task.fate === 'h') return;
    const timer = this.clock.setTimeout(() => {
      this.timers.delete(timer);
      deliverSigned({
        url: webhook,
        secret: this.webhookSecret,
        body: () => JSON.stringify(taskRecord(id, this.now(), mountUrl)),
        clock: this.clock,
        fetch: this.options.fetch ?? fetch,
        retryMs: this.options.webhookRetryMs ?? 1000,
        timers: this.timers,
        cancelled: () => this.tasks.isDeleted(id), // a deleted task has nothing more to say
        onAttempt: (ok) => {
          this.stats.webhookAttempts++;
          if (ok) this.stats.webhooksDelivered++;
        },
      });
    }, Math.max(0, task.createdAt + task.durationMs - this.now()) + 1);
    this.timers.add(timer);
  }

  private result(res: ServerResponse, id: string, mountUrl: string): void {
    const task = decodeTaskId(id);
    if (!task || this.now() - task.createdAt > RETENTION_MS || this.tasks.isDeleted(id)) {
      sendJson(res, 404, { code: 404, message: 'prediction not found', data: null });
      return;
    }
    this.stats.resultRequests.set(id, (this.stats.resultRequests.get(id) ?? 0) + 1);
    sendJson(res, 200, { code: 200, message: 'success', data: taskRecord(id, this.now(), mountUrl) });
  }

  private serveMedia(req: IncomingMessage, res: ServerResponse, pathname: string): void {
    const id = /^\/media\/([^/]+)\.mp4$/.exec(pathname)?.[1];
    const task = id ? decodeTaskId(id) : undefined;
    const elapsed = task ? this.now() - task.createdAt : -1;
    if (id === undefined || task?.fate !== 'c' || elapsed < task.durationMs || elapsed > RETENTION_MS || this.tasks.isDeleted(id)) {
      sendJson(res, 404, { code: 404, message: 'media not found', data: null });
      return;
    }
    // `send` brings Range, conditional GETs and the video/mp4 type that a <video> element needs.
    // Relative to `root`, so a checkout under a dot directory (~/.local/...) still serves it.
    send(req, 'sandbox.mp4', { root: ASSETS_DIR, acceptRanges: true, cacheControl: true, maxAge: '7d' }).pipe(res);
  }
}

/** Headers a reverse proxy adds; a request carrying any of them came from elsewhere. */
/**
 * A request from this machine that no proxy relayed: a reverse proxy on this machine connects from
 * loopback too, but what it forwards carries its marks.
 */
function isDirectLoopback(req: IncomingMessage): boolean {
  const from = req.socket.remoteAddress ?? '';
  return ['127.0.0.1', '::1', '::ffff:127.0.0.1'].includes(from) && !FORWARDING_HEADERS.some((h) => req.headers[h] !== undefined);
}

const FORWARDING_HEADERS = ['forwarded', 'x-forwarded-for', 'x-forwarded-host', 'x-forwarded-proto', 'x-real-ip', 'via', 'x-client-ip', 'true-client-ip', 'cf-connecting-ip'];

