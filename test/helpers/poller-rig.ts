import type { IncomingMessage, ServerResponse } from 'node:http';
import { join } from 'node:path';
import type { Clock } from '../../src/clock.js';
import { PredictionStore } from '../../src/db/predictions.js';
import { QueueStore } from '../../src/db/queue.js';
import { sqlitePredictions, sqliteQueue, type Predictions, type Queue } from '../../src/db/store.js';
import { Admission, type AdmissionLimits } from '../../src/poller/admission.js';
import type { PollerEvents } from '../../src/poller/events.js';
import { Poller, type PollerOptions } from '../../src/poller/poller.js';
import { createRecorder, type Recorder } from '../../src/poller/record.js';
import { createPredictionPubSub } from '../../src/pubsub.js';
import { ImageStore } from '../../src/storage/images.js';
import { MediaStore } from '../../src/storage/media.js';
import { WaveSpeedClient } from '../../src/upstream/wavespeed.js';
import { freshDb, T0 } from './db.js';
import { onDispose } from './dispose.js';
import { listen } from './listen.js';
import { must } from './must.js';
import { capturedLogger } from './stub-upstream.js';

/**
 * A clock that moves only when the test says so. Timers (the loop's sleeps, the orphan search's
 * gaps) fire when `advance` passes their time; a timer of 0 ms fires on the next turn. Each timer
 * set is recorded with its delay, so a test can see how long the loop chose to sleep.
 */
export class ManualClock implements Clock {
  t: number;
  private timers: { at: number; fn: () => void; live: boolean }[] = [];
  /** Every delay a timer was set for, in order. */
  readonly delays: number[] = [];
  private waiters: ((ms: number) => void)[] = [];

  constructor(start = T0) {
    this.t = start.getTime();
  }

  now(): Date {
    return new Date(this.t);
  }

  setTimeout(fn: () => void, ms: number): { clear(): void } {
    this.delays.push(ms);
    for (const w of this.waiters.splice(0)) w(ms);
    const timer = { at: this.t + ms, fn, live: true };
    if (ms <= 0)
      setImmediate(() => {
        if (!timer.live) return;
        timer.live = false;
        fn();
      });
    else this.timers.push(timer);
    return {
      clear: () => {
        timer.live = false;
      },
    };
  }

  /** Moves time on by `ms` and fires every timer now due. */
  advance(ms: number): void {
    this.t += ms;
    const due = this.timers.filter((x) => x.live && x.at <= this.t);
    this.timers = this.timers.filter((x) => x.live && x.at > this.t);
    for (const x of due) {
      x.live = false;
      x.fn();
    }
  }

  /** The delay of the next timer set (the loop going to sleep). */
  nextTimer(): Promise<number> {
    return new Promise((resolve) => this.waiters.push(resolve));
  }
}

export type Route = 'submit' | 'list' | 'result' | 'upload' | 'delete' | 'output' | 'other';

export interface Request {
  route: Route;
  method: string;
  path: string;
  query: URLSearchParams;
  body: string;
  /** The result route's task id. */
  taskId?: string;
}

export type Answer = (req: Request, res: ServerResponse, up: Upstream) => void;

export interface Task {
  id: string;
  status: string;
  outputs: string[];
  error: string;
  input: { prompt?: unknown; image?: unknown };
  createdAt: string;
}

export interface Upstream {
  url: string;
  requests: Request[];
  tasks: Task[];
  /** Requests on one route. */
  count(route: Route): number;
  /** Answers the next requests of `route` with these, in order; then the route's default again. */
  script(route: Route, ...answers: Answer[]): void;
  /** A request of `route` that is held until the test releases it with an answer. */
  hold(route: Route): Held;
  /** Sets a task's status (what the result route answers for it by default). */
  set(id: string, status: string, more?: Partial<Task>): void;
}

export interface Held {
  /** Resolves once the held request has arrived. */
  reached: Promise<Request>;
  release(answer?: Answer): void;
}

const envelope = (res: ServerResponse, data: unknown) =>
  res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ code: 200, message: 'success', data }));

export const asRecord = (t: Task) => ({
  id: t.id,
  model: 'minimax/video-01',
  status: t.status,
  outputs: t.outputs,
  urls: { get: `https://up.example/api/v3/predictions/${t.id}/result` },
  has_nsfw_contents: t.outputs.map(() => false),
  created_at: t.createdAt,
  error: t.error,
  timings: { inference: 1234 },
  input: t.input,
});

/** Answers. */
export const answer = {
  /** HTTP `status` with a v3 error envelope, and optional headers. */
  http:
    (status: number, message = `status ${status}`, headers: Record<string, string> = {}): Answer =>
    (_q, res) =>
      res.writeHead(status, { 'content-type': 'application/json', ...headers }).end(JSON.stringify({ code: status, message, data: null })),
  /** 200 with a body that is not JSON. */
  malformed: (): Answer => (_q, res) => res.writeHead(200, { 'content-type': 'application/json' }).end('{"code": 200, "data": {'),
  /** A record of this task (created if unknown). */
  record:
    (status: string, more: Partial<Task> = {}): Answer =>
    (q, res, up) => {
      const id = more.id ?? q.taskId ?? 'task-x';
      up.set(id, status, more);
      envelope(res, asRecord(must(up.tasks.find((t) => t.id === id))));
    },
  /** A list of these records. */
  list:
    (items: object[]): Answer =>
    (_q, res) =>
      envelope(res, { page: 1, items }),
  /** Never answers (the client's timeout or a shutdown ends it). */
  stall: (): Answer => () => {},
};

/**
 * A loopback WaveSpeed v3 stand-in that records every request, answers each as the test scripts it,
 * and otherwise behaves like upstream: a submission creates a `created` task, the list shows tasks
 * newest first, a result reads the task's status, uploads give a URL, outputs are served from /out/.
 */
export async function scriptedUpstream(now: () => Date): Promise<Upstream> {
  const scripts = new Map<Route, Answer[]>();
  const up: Upstream = {
    url: '',
    requests: [],
    tasks: [],
    count: (route) => up.requests.filter((r) => r.route === route).length,
    script(route, ...answers) {
      scripts.set(route, [...(scripts.get(route) ?? []), ...answers]);
    },
    hold(route) {
      let arrived!: (q: Request) => void;
      const reached = new Promise<Request>((r) => (arrived = r));
      let pending: { q: Request; res: ServerResponse } | undefined;
      let release: Answer | undefined;
      up.script(route, (q, res) => {
        arrived(q);
        if (release) release(q, res, up);
        else pending = { q, res };
      });
      return {
        reached,
        release(a = defaults[route]) {
          release = a;
          if (pending) a(pending.q, pending.res, up);
        },
      };
    },
    set(id, status, more = {}) {
      let task = up.tasks.find((t) => t.id === id);
      if (!task) {
        task = { id, status, outputs: [], error: '', input: {}, createdAt: now().toISOString() };
        up.tasks.push(task);
      }
      Object.assign(task, { status }, more);
    },
  };
  const defaults: Record<Route, Answer> = {
    submit: (q, res) => {
      const input = JSON.parse(q.body) as { prompt?: unknown; image?: unknown };
      const task: Task = { id: `task-${up.tasks.length + 1}`, status: 'created', outputs: [], error: '', input: { prompt: input.prompt, image: input.image }, createdAt: now().toISOString() };
      up.tasks.push(task);
      envelope(res, asRecord(task));
    },
    list: (_q, res) => envelope(res, { page: 1, items: [...up.tasks].reverse().map(asRecord) }),
    result: (q, res) => {
      const task = up.tasks.find((t) => t.id === q.taskId);
      if (!task) return answer.http(404, 'no such task')(q, res, up);
      envelope(res, asRecord(task));
    },
    upload: (_q, res) => envelope(res, { download_url: `https://up.example/uploads/${up.count('upload')}.jpg` }),
    delete: (_q, res) => envelope(res, null),
    output: (q, res) => res.writeHead(200, { 'content-type': 'video/mp4' }).end(`video bytes of ${q.path}`),
    other: (_q, res) => res.writeHead(404).end('{"code":404,"message":"no route","data":null}'),
  };
  up.url = await listen((req: IncomingMessage, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (d: Buffer) => chunks.push(d));
    req.on('end', () => {
      const url = new URL(req.url ?? '/', 'http://x');
      const path = url.pathname;
      const taskId = /^\/api\/v3\/predictions\/([^/]+)\/result$/.exec(path)?.[1];
      const route: Route =
        req.method === 'POST' && path === '/api/v3/minimax/video-01'
          ? 'submit'
          : req.method === 'POST' && path === '/api/v3/predictions'
            ? 'list'
            : req.method === 'POST' && path === '/api/v3/predictions/delete'
              ? 'delete'
              : req.method === 'POST' && path === '/api/v3/media/upload/binary'
                ? 'upload'
                : req.method === 'GET' && taskId
                  ? 'result'
                  : req.method === 'GET' && path.startsWith('/out/')
                    ? 'output'
                    : 'other';
      const q: Request = { route, method: req.method ?? '', path, query: url.searchParams, body: Buffer.concat(chunks).toString('latin1'), taskId };
      up.requests.push(q);
      const next = scripts.get(route)?.shift();
      (next ?? defaults[route])(q, res, up);
    });
  });
  return up;
}

type Seen = { [K in keyof PollerEvents]: { name: K; args: PollerEvents[K] } }[keyof PollerEvents];

export interface Rig {
  poller: Poller;
  store: PredictionStore;
  predictions: Predictions;
  queue: Queue;
  recorder: Recorder;
  clock: ManualClock;
  up: Upstream;
  images: ImageStore;
  /** Every event the poller emitted, in order. */
  events: Seen[];
  /** The payloads of one event. */
  seen<K extends keyof PollerEvents>(name: K): PollerEvents[K][0][];
  /** Log lines, parsed. */
  logs(): { level: number; msg: string; [k: string]: unknown }[];
}

export interface RigOptions {
  options?: Partial<PollerOptions>;
  limits?: AdmissionLimits;
  /** Keep completed outputs (a MediaStore trusting the stub's host). */
  media?: boolean;
  /** No image store. */
  noImages?: boolean;
  clientTimeoutMs?: number;
  /** Wraps the predictions the poller sees (a test that makes one method lie or fail). */
  wrapPredictions?: (p: Predictions) => Predictions;
  wrapRecorder?: (r: Recorder) => Recorder;
}

export const SCHEDULE = { initialMs: 1000, growth: 0.2, maxMs: 8000 };

/** A real Poller on a real SQLite file, a scripted loopback upstream and a manual clock. Stopped after the test. */
export async function pollerRig(o: RigOptions = {}): Promise<Rig> {
  const { db, dir } = freshDb();
  const store = new PredictionStore(db);
  const clock = new ManualClock();
  const pubsub = createPredictionPubSub();
  const baseRecorder = createRecorder(store, pubsub, () => clock.now());
  const recorder = o.wrapRecorder ? o.wrapRecorder(baseRecorder) : baseRecorder;
  const up = await scriptedUpstream(() => clock.now());
  const { log, lines } = capturedLogger();
  const client = new WaveSpeedClient({ baseUrl: up.url, apiKey: 'test-key-0123456789', timeoutMs: o.clientTimeoutMs ?? 5000 });
  const queue = sqliteQueue(new QueueStore(db));
  const predictions = o.wrapPredictions ? o.wrapPredictions(sqlitePredictions(store)) : sqlitePredictions(store);
  const images = new ImageStore(join(dir, 'images'));
  const media = o.media
    ? new MediaStore({ dir: join(dir, 'media'), maxBytes: 1 << 20, timeoutMs: 5000, resolveHost: async () => ['127.0.0.1'], trustedHosts: () => [new URL(up.url).host] })
    : undefined;
  const poller = new Poller({
    store: predictions,
    queue,
    admission: new Admission(queue, o.limits ?? {}),
    client,
    recorder,
    log,
    clock,
    media,
    images: o.noImages ? undefined : images,
    schedule: SCHEDULE,
    concurrency: 4,
    maxAgeMs: 600_000,
    webhookFallbackMs: 60_000,
    retryAfterMaxMs: 30_000,
    maxSubmissions: 2,
    reconcileGraceMs: 2000,
    idleMs: 5000,
    ...o.options,
  });
  const events: Seen[] = [];
  const names: (keyof PollerEvents)[] = ['submitted', 'uncertain', 'polled', 'uploaded', 'recorded', 'failed', 'paused', 'resumed', 'queueMoved', 'deletedUpstream'];
  for (const name of names) poller.on(name, ((...args: never[]) => events.push({ name, args } as never)) as never);
  onDispose(() => poller.stop());
  return {
    poller,
    store,
    predictions,
    queue,
    recorder,
    clock,
    up,
    images,
    events,
    seen: (name) => events.filter((e) => e.name === name).map((e) => e.args[0]) as never,
    logs: () => lines.map((l) => JSON.parse(l)),
  };
}
