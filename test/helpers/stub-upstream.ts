import type { IncomingMessage, ServerResponse } from 'node:http';
import { pino, type Logger } from 'pino';
import { listen } from './listen.js';
import { must } from './must.js';

export type Route = 'submit' | 'list' | 'result' | 'other';

export interface StubTask {
  id: string;
  input: { prompt?: unknown; image?: unknown };
  createdAt: string;
}

export interface StubContext {
  req: IncomingMessage;
  res: ServerResponse;
  body: string;
  /** How many requests this route has had, this one included. */
  n: number;
  stub: StubUpstream;
}

export interface StubUpstream {
  /** Base URL, for WAVESPEED_BASE_URL. */
  url: string;
  /** Requests per route: every one counted, whatever was answered. */
  counts: Record<Route, number>;
  /** Tasks created, newest last; what the list endpoint shows. */
  tasks: StubTask[];
  /** Creates a task from a submission body (what a real upstream does before it answers). */
  create(body: string): StubTask;
  /** Answers with a v3 envelope around `data`. */
  ok(res: ServerResponse, data: unknown): void;
}

export const record = (task: Pick<StubTask, 'id'> & Partial<StubTask>, status = 'created', outputs: string[] = []) => ({
  id: task.id,
  model: 'minimax/video-01',
  status,
  outputs,
  urls: { get: `http://stub/api/v3/predictions/${task.id}/result` },
  has_nsfw_contents: outputs.map(() => false),
  created_at: task.createdAt ?? new Date().toISOString(),
  error: '',
  timings: { inference: 0 },
  ...(task.input ? { input: task.input } : {}),
});

/**
 * A loopback WaveSpeed v3 stand-in that counts every request by route, so tests can prove how many
 * submissions (each a paid video upstream) the gateway sent. Each route's behaviour can be replaced;
 * by default submissions create a task, the list shows tasks newest first with their input, and
 * results are `completed` with no outputs.
 */
export async function stubUpstream(handlers: Partial<Record<Route, (ctx: StubContext) => void | Promise<void>>> = {}): Promise<StubUpstream> {
  const stub: StubUpstream = {
    url: '',
    counts: { submit: 0, list: 0, result: 0, other: 0 },
    tasks: [],
    create(body) {
      const input = JSON.parse(body) as StubTask['input'];
      const task = { id: `stub-${stub.tasks.length + 1}`, input: { prompt: input.prompt, image: input.image }, createdAt: new Date().toISOString() };
      stub.tasks.push(task);
      return task;
    },
    ok(res, data) {
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ code: 200, message: 'success', data }));
    },
  };
  const defaults: Record<Route, (ctx: StubContext) => void> = {
    submit: ({ res, body }) => stub.ok(res, record(stub.create(body))),
    list: ({ res }) => stub.ok(res, { page: 1, items: [...stub.tasks].reverse().map((t) => record(t)) }),
    result: ({ req, res }) => stub.ok(res, record({ id: /predictions\/([^/]+)\/result/.exec(req.url ?? '')?.[1] ?? '?' }, 'completed')),
    other: ({ res }) => res.writeHead(404).end('{"code":404,"message":"no route","data":null}'),
  };
  stub.url = await listen((req, res) => {
    let body = '';
    req.on('data', (d) => (body += d));
    req.on('end', () => {
      const path = must((req.url ?? '').split('?', 1)[0]);
      const route: Route =
        req.method === 'POST' && path === '/api/v3/minimax/video-01'
          ? 'submit'
          : req.method === 'POST' && path === '/api/v3/predictions'
            ? 'list'
            : req.method === 'GET' && /^\/api\/v3\/predictions\/[^/]+\/result$/.test(path)
              ? 'result'
              : 'other';
      const n = ++stub.counts[route];
      void (handlers[route] ?? defaults[route])({ req, res, body, n, stub });
    });
  });
  return stub;
}

/** A logger whose lines are kept, to check what reaches the logs. */
export function capturedLogger(): { log: Logger; lines: string[] } {
  const lines: string[] = [];
  return { log: pino({ level: 'debug' }, { write: (line: string) => void lines.push(line) }), lines };
}
