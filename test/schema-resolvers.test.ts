import { readFileSync } from 'node:fs';
import Database from 'better-sqlite3';
import { type ExecutionResult, type GraphQLError, type GraphQLObjectType, type GraphQLScalarType, graphql, parse, subscribe } from 'graphql';
import { describe, expect, test } from 'vitest';
import type { CreateOutcome, CreateRequest } from '../src/db/store.js';
import type { PredictionRow, WebhookAttemptRow } from '../src/db/schema.js';
import { createPredictionPubSub } from '../src/pubsub.js';
import { fingerprint } from '../src/schema/admission.js';
import type { Context } from '../src/schema/context.js';
import { buildSchema, printSdl } from '../src/schema/index.js';
import { isVolatile } from '../src/schema/volatile.js';
import { DEFAULT_WEBHOOK_EVENTS } from '../src/schema/webhooks.js';
import { dataUri, png } from './helpers/images.js';

/**
 * createVideo, prediction, predictionUpdated, Prediction's fields, webhookDeliveries and
 * redeliverWebhook executed on the real schema with a context of fakes that record what they were
 * asked to store or send. No server, no database: about a second.
 */

const schema = buildSchema();
const NOW = new Date('2026-11-29T10:00:00.000Z');
const diskFull = () => new Database.SqliteError('database or disk is full', 'SQLITE_FULL');
const TX = Symbol('tx');

/** A complete row as the store returns it. */
function rowOf(over: Partial<PredictionRow> = {}): PredictionRow {
  return {
    seq: 1,
    id: 'p1',
    upstreamId: null,
    model: 'minimax/video-01',
    status: 'CREATED',
    prompt: 'a cat',
    image: null,
    imageFile: null,
    imageUploadUrl: null,
    hasImage: false,
    enablePromptExpansion: true,
    outputs: [],
    hasNsfwContents: [],
    urlsGet: null,
    keptOutputs: [],
    webhookToken: null,
    error: null,
    inferenceMs: null,
    version: 1,
    createdAt: NOW,
    updatedAt: NOW,
    submittedAt: null,
    completedAt: null,
    nextPollAt: NOW,
    pollCount: 0,
    attempts: 0,
    submitAttempts: 0,
    submitStartedAt: null,
    owner: 'alice',
    deadlineAt: null,
    queueTurn: null,
    ...over,
  } as PredictionRow;
}

type Attempt = WebhookAttemptRow & { event: PredictionRow['status']; url: string; webhookId: string };
const attemptOf = (over: Partial<Attempt> = {}): Attempt => ({
  id: 'a1',
  messageId: 'msg_1',
  predictionId: 'p1',
  attemptedAt: NOW,
  statusCode: 200,
  latencyMs: 12,
  error: null,
  manual: false,
  event: 'COMPLETED',
  url: 'https://hooks.example/in',
  webhookId: 'msg_1',
  ...over,
});

interface Parts {
  owner?: string | null;
  rows?: PredictionRow[];
  earlier?: { inputHash: string; predictionId: string };
  maxInFlight?: number;
  unfinished?: number;
  retryAfter?: number;
  outcome?: (req: CreateRequest) => CreateOutcome;
  creatorFails?: boolean;
  imagesFail?: boolean;
  /** Owners (null: open mode) that have a webhook signing secret. */
  secrets?: (string | null)[];
  unavailable?: string;
  allowPrivate?: boolean;
  attempts?: Attempt[];
  redelivered?: WebhookAttemptRow;
  estimate?: { queuePosition: number | null; estimatedStartAt: Date | null; estimatedCompletionAt: Date | null };
}

/** Public and private names for the image and webhook URL guards; nothing leaves the machine. */
const hosts: Record<string, string[]> = {
  'img.example': ['93.184.216.34'],
  'hooks.example': ['93.184.216.35'],
  'inside.example': ['10.0.0.7'],
};

function setup(parts: Parts = {}) {
  const log: unknown[][] = [];
  const creates: CreateRequest[] = [];
  const subscribed: unknown[][] = [];
  const puts: string[] = [];
  const estimates: PredictionRow[] = [];
  const redelivers: string[] = [];
  const deliveryQueries: unknown[][] = [];
  const attemptQueries: string[] = [];
  let wakes = 0;
  let ids = 0;
  const pubsub = createPredictionPubSub();
  const ctx = {
    principal: { owner: parts.owner === undefined ? 'alice' : parts.owner },
    now: () => NOW,
    newId: () => `new${++ids}`,
    baseUrl: () => 'https://gw.example',
    resolveHost: async (host: string) => {
      const found = hosts[host];
      if (!found) throw new Error(`no such host ${host}`);
      return found;
    },
    wakePoller: () => {
      wakes++;
    },
    pubsub,
    store: {
      findById: async (id: string) => parts.rows?.find((r) => r.id === id),
      countUnfinished: async (owner: string | null) => {
        log.push(['countUnfinished', owner]);
        return parts.unfinished ?? 0;
      },
    },
    idempotency: {
      find: async (owner: string | null, key: string, now: Date) => {
        log.push(['find', owner, key, now]);
        return parts.earlier;
      },
    },
    quotas: {
      maxInFlight: () => parts.maxInFlight,
      takeCreate: async () => {
        log.push(['takeCreate']);
        return parts.retryAfter;
      },
    },
    images: {
      put: (uri: string) => {
        puts.push(uri);
        if (parts.imagesFail) throw diskFull();
        return { name: 'f00d.png', contentType: 'image/png' };
      },
    },
    creator: {
      create: async (req: CreateRequest, now: Date) => {
        expect(now).toBe(NOW);
        creates.push(req);
        if (parts.creatorFails) throw diskFull();
        const outcome = parts.outcome?.(req) ?? { kind: 'created', row: rowOf(req.row as Partial<PredictionRow>) };
        if (outcome.kind === 'created' && req.withRow) await req.withRow(outcome.row, TX);
        return outcome;
      },
    },
    lifecycle: {
      estimate: async (row: PredictionRow) => {
        estimates.push(row);
        return parts.estimate ?? { queuePosition: null, estimatedStartAt: null, estimatedCompletionAt: null };
      },
    },
    webhooks: {
      allowPrivate: parts.allowPrivate ?? false,
      unavailable: parts.unavailable,
      hasSecret: (owner: string | null) => (parts.secrets ?? ['alice', null]).includes(owner),
      subscribe: (...args: unknown[]) => {
        subscribed.push(args);
      },
      deliveries: async (predictionId: string, limit: number) => {
        deliveryQueries.push([predictionId, limit]);
        return (parts.attempts ?? []).filter((a) => a.predictionId === predictionId).slice(0, limit);
      },
      attempt: async (id: string) => {
        attemptQueries.push(id);
        return parts.attempts?.find((a) => a.id === id);
      },
      redeliver: async (id: string) => {
        redelivers.push(id);
        return parts.redelivered;
      },
    },
  } as unknown as Context;
  return {
    ctx,
    log,
    creates,
    subscribed,
    puts,
    estimates,
    redelivers,
    deliveryQueries,
    attemptQueries,
    pubsub,
    wakes: () => wakes,
    /** Nothing was stored, queued or sent. */
    nothingDone: () => {
      expect(creates).toEqual([]);
      expect(puts).toEqual([]);
      expect(subscribed).toEqual([]);
      expect(redelivers).toEqual([]);
      expect(wakes).toBe(0);
    },
  };
}

type Result = { data?: Record<string, unknown> | null; errors?: readonly GraphQLError[] };
const run = async (ctx: Context, source: string, variableValues?: Record<string, unknown>) =>
  (await graphql({ schema, source, contextValue: ctx, variableValues })) as Result;

/** The one error of a failed operation, as clients see it. */
const errorOf = (res: Result) => {
  expect(res.errors).toHaveLength(1);
  const e = res.errors?.[0] as GraphQLError;
  return { message: e.message, extensions: e.extensions, path: e.path };
};

const CREATE = 'mutation ($input: CreateVideoInput!) { createVideo(input: $input) { id status model createdAt deadlineAt input { prompt hasImage enablePromptExpansion } } }';

describe('createVideo', () => {
  test('a text-to-video request: one row inserted with every column, the poller woken once, the row returned', async () => {
    const s = setup({ maxInFlight: 7 });
    const res = await run(s.ctx, CREATE, { input: { prompt: '  a cat on a skateboard  ' } });
    expect(res.errors).toBeUndefined();
    expect(res.data?.createVideo).toEqual({
      id: 'new1',
      status: 'CREATED',
      model: 'minimax/video-01',
      createdAt: NOW.toISOString(),
      deadlineAt: null,
      input: { prompt: 'a cat on a skateboard', hasImage: false, enablePromptExpansion: true },
    });
    expect(s.creates).toEqual([
      {
        row: {
          id: 'new1',
          model: 'minimax/video-01',
          status: 'CREATED',
          prompt: 'a cat on a skateboard',
          image: null,
          imageFile: null,
          hasImage: false,
          enablePromptExpansion: true,
          createdAt: NOW,
          updatedAt: NOW,
          nextPollAt: NOW,
          owner: 'alice',
          deadlineAt: null,
        },
        idempotency: undefined,
        maxInFlight: 7,
        withRow: undefined,
      },
    ]);
    expect(s.log).toEqual([['countUnfinished', 'alice'], ['takeCreate']]);
    expect(s.wakes()).toBe(1);
    expect(s.puts).toEqual([]);
  });

  test('enablePromptExpansion false is kept; open mode stores the row under owner null', async () => {
    const s = setup({ owner: null });
    const res = await run(s.ctx, CREATE, { input: { prompt: 'x', enablePromptExpansion: false } });
    expect(res.data?.createVideo).toMatchObject({ input: { enablePromptExpansion: false } });
    expect(s.creates[0]?.row).toMatchObject({ enablePromptExpansion: false, owner: null });
    expect(s.creates[0]?.maxInFlight).toBeUndefined();
    // Left out and given as null are both the default, true.
    const nulled = setup();
    await run(nulled.ctx, CREATE, { input: { prompt: 'x', enablePromptExpansion: null } });
    expect(nulled.creates[0]?.row.enablePromptExpansion).toBe(true);
  });

  test('a blank or too long prompt is BAD_USER_INPUT on input.prompt and stores nothing', async () => {
    for (const [prompt, message] of [
      ['   ', 'prompt must not be blank'],
      ['x'.repeat(2001), 'prompt is 2001 characters long; the limit is 2000'],
    ]) {
      const s = setup();
      expect(errorOf(await run(s.ctx, CREATE, { input: { prompt } }))).toEqual({
        message,
        extensions: { code: 'BAD_USER_INPUT', field: 'input.prompt' },
        path: ['createVideo'],
      });
      s.nothingDone();
    }
  });

  test('deadlineSeconds: 1 and 86400 are kept as an instant, 0, 86401 and negatives refused before anything is stored', async () => {
    for (const seconds of [1, 86_400]) {
      const s = setup();
      const res = await run(s.ctx, CREATE, { input: { prompt: 'x', deadlineSeconds: seconds } });
      const at = new Date(NOW.getTime() + seconds * 1000);
      expect(res.data?.createVideo).toMatchObject({ deadlineAt: at.toISOString() });
      expect(s.creates[0]?.row.deadlineAt).toEqual(at);
    }
    for (const seconds of [0, 86_401, -5]) {
      const s = setup();
      expect(errorOf(await run(s.ctx, CREATE, { input: { prompt: 'x', deadlineSeconds: seconds } }))).toEqual({
        message: 'deadlineSeconds must be between 1 and 86400 (24 h)',
        extensions: { code: 'BAD_USER_INPUT', field: 'input.deadlineSeconds' },
        path: ['createVideo'],
      });
      s.nothingDone();
    }
    const nulled = setup();
    await run(nulled.ctx, CREATE, { input: { prompt: 'x', deadlineSeconds: null } });
    expect(nulled.creates[0]?.row.deadlineAt).toBeNull();
  });

  test('an image URL is kept in the row; a data URI becomes a file the row names, never stored in the row', async () => {
    const url = setup();
    const res = await run(url.ctx, CREATE, { input: { prompt: 'x', image: ' https://img.example/a.png ' } });
    expect(res.data?.createVideo).toMatchObject({ input: { hasImage: true } });
    expect(url.creates[0]?.row).toMatchObject({ image: 'https://img.example/a.png', imageFile: null, hasImage: true });
    expect(url.puts).toEqual([]);

    const uri = dataUri(png(400, 400));
    const file = setup();
    const res2 = await run(file.ctx, CREATE, { input: { prompt: 'x', image: uri } });
    expect(res2.errors).toBeUndefined();
    expect(file.puts).toEqual([uri]);
    expect(file.creates[0]?.row).toMatchObject({ image: null, imageFile: 'f00d.png', hasImage: true });

    const none = setup();
    await run(none.ctx, CREATE, { input: { prompt: 'x', image: null } });
    expect(none.creates[0]?.row).toMatchObject({ image: null, imageFile: null, hasImage: false });
  });

  test('a refused image (format, private address, empty) is its own code on input.image and stores nothing', async () => {
    for (const [image, code, message] of [
      [dataUri(png(100, 100)), 'IMAGE_TOO_SMALL', undefined],
      ['https://inside.example/a.png', 'IMAGE_URL_FORBIDDEN', undefined],
      ['   ', 'BAD_USER_INPUT', 'image must not be empty; leave it out for text-to-video'],
    ] as [string, string, string | undefined][]) {
      const s = setup();
      const err = errorOf(await run(s.ctx, CREATE, { input: { prompt: 'x', image } }));
      expect(err.extensions).toEqual({ code, field: 'input.image' });
      if (message) expect(err.message).toBe(message);
      s.nothingDone();
    }
  });

  test('a store that cannot write, for the image file or the row, is STORAGE_UNAVAILABLE; nothing is woken', async () => {
    const expected = {
      message: 'the gateway cannot store new predictions right now; nothing was created, try again later',
      extensions: { code: 'STORAGE_UNAVAILABLE', http: { status: 503 } },
      path: ['createVideo'],
    };
    const files = setup({ imagesFail: true });
    expect(errorOf(await run(files.ctx, CREATE, { input: { prompt: 'x', image: dataUri(png(400, 400)) } }))).toEqual(expected);
    expect(files.creates).toEqual([]);
    expect(files.wakes()).toBe(0);
    const rows = setup({ creatorFails: true });
    expect(errorOf(await run(rows.ctx, CREATE, { input: { prompt: 'x' } }))).toEqual(expected);
    expect(rows.creates).toHaveLength(1);
    expect(rows.wakes()).toBe(0);
  });

  test('quotas: TOO_MANY_IN_FLIGHT and RATE_LIMITED refuse before anything is stored', async () => {
    const full = setup({ maxInFlight: 2, unfinished: 2 });
    expect(errorOf(await run(full.ctx, CREATE, { input: { prompt: 'x' } }))).toEqual({
      message: 'this key already has 2 unfinished predictions (at most 2); wait for one to complete or fail',
      extensions: { code: 'TOO_MANY_IN_FLIGHT', limit: 2, http: { status: 429 } },
      path: ['createVideo'],
    });
    full.nothingDone();
    const limited = setup({ retryAfter: 9 });
    expect(errorOf(await run(limited.ctx, CREATE, { input: { prompt: 'x' } }))).toMatchObject({
      message: 'too many createVideo calls for this key; retry in 9 s',
      extensions: { code: 'RATE_LIMITED', retryAfter: 9 },
    });
    limited.nothingDone();
  });

  test('the store\'s own outcomes: a conflict, the in-flight limit reached meanwhile, a replayed twin', async () => {
    const conflict = setup({ outcome: () => ({ kind: 'conflict' }) });
    expect(errorOf(await run(conflict.ctx, CREATE, { input: { prompt: 'x', idempotencyKey: 'k' } }))).toEqual({
      message: 'this idempotencyKey was used with a different input in the last 24 hours',
      extensions: { code: 'IDEMPOTENCY_CONFLICT', field: 'input.idempotencyKey', http: { status: 409 } },
      path: ['createVideo'],
    });
    expect(conflict.wakes()).toBe(0);
    const busy = setup({ outcome: () => ({ kind: 'tooManyInFlight', unfinished: 5, max: 4 }) });
    expect(errorOf(await run(busy.ctx, CREATE, { input: { prompt: 'x' } }))).toEqual({
      message: 'this key already has 5 unfinished predictions (at most 4); wait for one to complete or fail',
      extensions: { code: 'TOO_MANY_IN_FLIGHT', limit: 4, http: { status: 429 } },
      path: ['createVideo'],
    });
    expect(busy.wakes()).toBe(0);
    const twin = rowOf({ id: 'twin', status: 'PROCESSING' });
    const replayed = setup({ outcome: () => ({ kind: 'replayed', row: twin }) });
    const res = await run(replayed.ctx, CREATE, { input: { prompt: 'x', idempotencyKey: 'k' } });
    expect(res.data?.createVideo).toMatchObject({ id: 'twin', status: 'PROCESSING' });
    expect(replayed.wakes()).toBe(0);
  });

  test('idempotencyKey: passed to the store with the input\'s fingerprint; a replay is answered before any quota and creates nothing', async () => {
    const input = { prompt: 'x', idempotencyKey: 'key-1', deadlineSeconds: 60 };
    const s = setup();
    await run(s.ctx, CREATE, { input });
    expect(s.creates[0]?.idempotency).toEqual({ key: 'key-1', inputHash: fingerprint(input) });
    expect(s.log[0]).toEqual(['find', 'alice', 'key-1', NOW]);

    const earlierRow = rowOf({ id: 'old', status: 'COMPLETED' });
    const again = setup({ earlier: { inputHash: fingerprint(input), predictionId: 'old' }, rows: [earlierRow], retryAfter: 30, maxInFlight: 1, unfinished: 1 });
    const res = await run(again.ctx, CREATE, { input });
    expect(res.errors).toBeUndefined();
    expect(res.data?.createVideo).toMatchObject({ id: 'old', status: 'COMPLETED' });
    expect(again.log).toEqual([['find', 'alice', 'key-1', NOW]]);
    again.nothingDone();

    const other = setup({ earlier: { inputHash: fingerprint(input), predictionId: 'old' }, rows: [earlierRow] });
    expect(errorOf(await run(other.ctx, CREATE, { input: { ...input, prompt: 'y' } })).extensions).toMatchObject({ code: 'IDEMPOTENCY_CONFLICT' });
    other.nothingDone();

    const blank = setup();
    expect(errorOf(await run(blank.ctx, CREATE, { input: { prompt: 'x', idempotencyKey: ' ' } })).extensions).toEqual({
      code: 'BAD_USER_INPUT',
      field: 'input.idempotencyKey',
    });
    blank.nothingDone();
    expect(blank.log).toEqual([]);
  });

  test('webhookUrl: subscribed in the insert\'s transaction with the final events by default, URL normalised', async () => {
    const s = setup();
    const res = await run(s.ctx, CREATE, { input: { prompt: 'x', webhookUrl: 'https://HOOKS.example' } });
    expect(res.errors).toBeUndefined();
    expect(s.subscribed).toHaveLength(1);
    const [row, url, events, tx] = s.subscribed[0] as [PredictionRow, string, string[], unknown];
    expect(row.id).toBe('new1');
    expect(url).toBe('https://hooks.example/');
    expect(events).toEqual(['COMPLETED', 'FAILED', 'CANCELED']);
    expect(DEFAULT_WEBHOOK_EVENTS).toEqual(['COMPLETED', 'FAILED', 'CANCELED']);
    expect(tx).toBe(TX);
    expect(s.wakes()).toBe(1);
  });

  test('webhookEvents are kept in status order without repeats', async () => {
    const s = setup();
    await run(s.ctx, CREATE, {
      input: { prompt: 'x', webhookUrl: 'https://hooks.example/in', webhookEvents: ['FAILED', 'CREATED', 'FAILED', 'PROCESSING'] },
    });
    expect(s.subscribed[0]?.[2]).toEqual(['CREATED', 'PROCESSING', 'FAILED']);
  });

  test('a private webhookUrl is allowed only with WEBHOOK_ALLOW_PRIVATE', async () => {
    const input = { prompt: 'x', webhookUrl: 'http://inside.example/hook' };
    const refused = setup();
    const err = errorOf(await run(refused.ctx, CREATE, { input }));
    expect(err.extensions).toEqual({ code: 'WEBHOOK_URL_FORBIDDEN', field: 'input.webhookUrl' });
    refused.nothingDone();
    const allowed = setup({ allowPrivate: true });
    expect((await run(allowed.ctx, CREATE, { input })).errors).toBeUndefined();
    expect(allowed.subscribed[0]?.[1]).toBe('http://inside.example/hook');
  });

  test('webhook refusals: events without a URL, no events, webhooks unavailable, no signing secret; nothing stored, no image file written', async () => {
    const image = dataUri(png(400, 400));
    const cases: [Parts, Record<string, unknown>, string, string, string][] = [
      [{}, { webhookEvents: ['COMPLETED'] }, 'BAD_USER_INPUT', 'webhookEvents needs a webhookUrl', 'input.webhookEvents'],
      [{}, { webhookEvents: [] }, 'BAD_USER_INPUT', 'webhookEvents needs a webhookUrl', 'input.webhookEvents'],
      [
        {},
        { webhookUrl: 'https://hooks.example/', webhookEvents: [] },
        'BAD_USER_INPUT',
        'webhookEvents must name at least one status (or be left out for the final ones)',
        'input.webhookEvents',
      ],
      [{ unavailable: 'webhooks are off here' }, { webhookUrl: 'https://hooks.example/' }, 'BAD_USER_INPUT', 'webhooks are off here', 'input.webhookUrl'],
      [{}, { webhookUrl: 'ftp://hooks.example/' }, 'WEBHOOK_URL_INVALID', 'webhookUrl scheme ftp: is not allowed; use http or https', 'input.webhookUrl'],
      [
        { secrets: ['alice'] },
        { webhookUrl: 'https://hooks.example/' },
        'WEBHOOK_SECRET_MISSING',
        'open mode with DATABASE_URL signs webhooks with WEBHOOK_SIGNING_SECRET, which is not set; give every instance the same one',
        'input.webhookUrl',
      ],
      [
        { secrets: [null] },
        { webhookUrl: 'https://hooks.example/' },
        'WEBHOOK_SECRET_MISSING',
        'this API key has no webhook signing secret (it predates webhooks); run `cinegraph keys rotate-webhook-secret NAME` to make one',
        'input.webhookUrl',
      ],
    ];
    for (const [parts, extra, code, message, field] of cases) {
      // The open-mode case runs as open mode, the key case as a key.
      const owner = message.startsWith('open mode') ? null : 'alice';
      const s = setup({ ...parts, owner });
      expect(errorOf(await run(s.ctx, CREATE, { input: { prompt: 'x', image, ...extra } })), message).toEqual({
        message,
        extensions: { code, field },
        path: ['createVideo'],
      });
      s.nothingDone();
    }
  });

  test('a key with a secret is not refused for open mode\'s missing one, and open mode with its secret is accepted', async () => {
    const key = setup({ secrets: ['alice'] });
    expect((await run(key.ctx, CREATE, { input: { prompt: 'x', webhookUrl: 'https://hooks.example/' } })).errors).toBeUndefined();
    expect(key.subscribed).toHaveLength(1);
    const open = setup({ owner: null, secrets: [null] });
    expect((await run(open.ctx, CREATE, { input: { prompt: 'x', webhookUrl: 'https://hooks.example/' } })).errors).toBeUndefined();
    expect(open.subscribed).toHaveLength(1);
  });
});

const FULL = `query ($id: ID!) { prediction(id: $id) {
  id upstreamId model status input { prompt hasImage enablePromptExpansion } outputs keptOutputs urls { get }
  hasNsfwContents error timings { inference } createdAt updatedAt completedAt deadlineAt
  queuePosition estimatedStartAt estimatedCompletionAt } }`;

describe('Prediction, as resolved', () => {
  test('every field of a completed prediction', async () => {
    const done = rowOf({
      upstreamId: 'up-1',
      status: 'COMPLETED',
      prompt: 'a dog',
      hasImage: true,
      enablePromptExpansion: false,
      outputs: ['https://cdn.example/v.mp4'],
      keptOutputs: ['/media/abc.mp4', '/media/def.mp4'],
      urlsGet: 'https://api.example/result/up-1',
      hasNsfwContents: [false, true],
      error: 'late warning',
      inferenceMs: 61234,
      createdAt: new Date('2026-11-29T09:00:00.000Z'),
      updatedAt: new Date('2026-11-29T09:05:00.000Z'),
      completedAt: new Date('2026-11-29T09:04:00.000Z'),
      deadlineAt: new Date('2026-11-29T11:00:00.000Z'),
    });
    const s = setup({ rows: [done] });
    const res = await run(s.ctx, FULL, { id: 'p1' });
    expect(res.errors).toBeUndefined();
    expect(res.data?.prediction).toEqual({
      id: 'p1',
      upstreamId: 'up-1',
      model: 'minimax/video-01',
      status: 'COMPLETED',
      input: { prompt: 'a dog', hasImage: true, enablePromptExpansion: false },
      outputs: ['https://cdn.example/v.mp4'],
      keptOutputs: ['https://gw.example/media/abc.mp4', 'https://gw.example/media/def.mp4'],
      urls: { get: 'https://api.example/result/up-1' },
      hasNsfwContents: [false, true],
      error: 'late warning',
      timings: { inference: 61234 },
      createdAt: '2026-11-29T09:00:00.000Z',
      updatedAt: '2026-11-29T09:05:00.000Z',
      completedAt: '2026-11-29T09:04:00.000Z',
      deadlineAt: '2026-11-29T11:00:00.000Z',
      queuePosition: null,
      estimatedStartAt: null,
      estimatedCompletionAt: null,
    });
    // A final prediction's answer may be cached.
    expect(isVolatile(s.ctx)).toBe(false);
  });

  test('a queued prediction: its place and estimates, one estimate shared by the three fields; the answer is volatile', async () => {
    const queued = rowOf();
    const s = setup({
      rows: [queued],
      estimate: { queuePosition: 3, estimatedStartAt: new Date('2026-11-29T10:01:00.000Z'), estimatedCompletionAt: new Date('2026-11-29T10:06:00.000Z') },
    });
    const res = await run(s.ctx, FULL, { id: 'p1' });
    expect(res.data?.prediction).toMatchObject({
      upstreamId: null,
      status: 'CREATED',
      outputs: [],
      keptOutputs: [],
      urls: { get: null },
      hasNsfwContents: [],
      error: null,
      timings: { inference: null },
      completedAt: null,
      deadlineAt: null,
      queuePosition: 3,
      estimatedStartAt: '2026-11-29T10:01:00.000Z',
      estimatedCompletionAt: '2026-11-29T10:06:00.000Z',
    });
    expect(s.estimates).toEqual([queued]);
    expect(isVolatile(s.ctx)).toBe(true);
  });

  test('each status resolves to its own name; only live ones are volatile', async () => {
    for (const status of ['CREATED', 'PROCESSING', 'COMPLETED', 'FAILED', 'CANCELED'] as const) {
      const s = setup({ rows: [rowOf({ status })] });
      const res = await run(s.ctx, 'query { prediction(id: "p1") { status queuePosition } }');
      expect(res.data?.prediction).toEqual({ status, queuePosition: null });
      expect(isVolatile(s.ctx), status).toBe(status === 'CREATED' || status === 'PROCESSING');
    }
  });

  test('an unknown id and another owner\'s are both null; open mode sees its own', async () => {
    const s = setup({ rows: [rowOf({ owner: 'bob' })] });
    expect((await run(s.ctx, FULL, { id: 'p1' })).data).toEqual({ prediction: null });
    expect((await run(s.ctx, FULL, { id: 'nope' })).data).toEqual({ prediction: null });
    expect(s.estimates).toEqual([]);
    const openOwn = setup({ owner: null, rows: [rowOf({ owner: null })] });
    expect((await run(openOwn.ctx, 'query { prediction(id: "p1") { id } }')).data).toEqual({ prediction: { id: 'p1' } });
    // Open mode's null owner is not a key's.
    const openForeign = setup({ owner: null, rows: [rowOf({ owner: 'alice' })] });
    expect((await run(openForeign.ctx, 'query { prediction(id: "p1") { id } }')).data).toEqual({ prediction: null });
  });

  test('predictionUpdated: the current row, then a terminal change, then the end; unknown and foreign are NOT_FOUND', async () => {
    const s = setup({ rows: [rowOf({ status: 'PROCESSING', version: 2 })] });
    const document = parse('subscription ($id: ID!) { predictionUpdated(id: $id) { id status } }');
    const stream = (await subscribe({ schema, document, contextValue: s.ctx, variableValues: { id: 'p1' } })) as AsyncGenerator<ExecutionResult>;
    expect(Symbol.asyncIterator in stream).toBe(true);
    expect((await stream.next()).value).toEqual({ data: { predictionUpdated: { id: 'p1', status: 'PROCESSING' } } });
    const next = stream.next();
    s.pubsub.publish('prediction:updated', 'p1', rowOf({ status: 'COMPLETED', version: 3 }));
    expect((await next).value).toEqual({ data: { predictionUpdated: { id: 'p1', status: 'COMPLETED' } } });
    expect((await stream.next()).done).toBe(true);

    for (const rows of [[], [rowOf({ owner: 'bob' })]]) {
      const t = setup({ rows });
      const res = (await subscribe({ schema, document, contextValue: t.ctx, variableValues: { id: 'p1' } })) as ExecutionResult;
      expect(res.errors?.map((e) => [e.message, e.extensions])).toEqual([['no prediction with id "p1"', { code: 'NOT_FOUND', field: 'id' }]]);
      expect(t.pubsub.count()).toBe(0);
    }
  });
});

const DELIVERIES = 'query ($first: Int) { prediction(id: "p1") { webhookDeliveries(first: $first) { id webhookId event url attemptedAt statusCode latencyMs error succeeded redelivery } } }';

describe('webhookDeliveries and redeliverWebhook', () => {
  test('every field of an attempt; succeeded only for 2xx', async () => {
    const attempts = [
      attemptOf({ id: 'a1', statusCode: 200 }),
      attemptOf({ id: 'a2', statusCode: 299, manual: true, event: 'FAILED' }),
      attemptOf({ id: 'a3', statusCode: 300, error: 'HTTP 300' }),
      attemptOf({ id: 'a4', statusCode: 199, error: 'HTTP 199' }),
      attemptOf({ id: 'a5', statusCode: null, error: 'connect ECONNREFUSED', latencyMs: 0 }),
    ];
    const s = setup({ rows: [rowOf({ status: 'COMPLETED' })], attempts });
    const res = await run(s.ctx, DELIVERIES, {});
    expect(res.errors).toBeUndefined();
    const got = (res.data?.prediction as { webhookDeliveries: Record<string, unknown>[] } | undefined)?.webhookDeliveries ?? [];
    expect(got[0]).toEqual({
      id: 'a1',
      webhookId: 'msg_1',
      event: 'COMPLETED',
      url: 'https://hooks.example/in',
      attemptedAt: NOW.toISOString(),
      statusCode: 200,
      latencyMs: 12,
      error: null,
      succeeded: true,
      redelivery: false,
    });
    expect(got.map((d) => [d.id, d.succeeded, d.redelivery, d.event])).toEqual([
      ['a1', true, false, 'COMPLETED'],
      ['a2', true, true, 'FAILED'],
      ['a3', false, false, 'COMPLETED'],
      ['a4', false, false, 'COMPLETED'],
      ['a5', false, false, 'COMPLETED'],
    ]);
    expect(got[4]).toMatchObject({ statusCode: null, error: 'connect ECONNREFUSED', latencyMs: 0 });
    expect(s.deliveryQueries).toEqual([['p1', 20]]);
    // Attempts are logged without a change of the prediction: never cached, even for a final one.
    expect(isVolatile(s.ctx)).toBe(true);
  });

  test('first is 1 to 100, passed on; outside it BAD_USER_INPUT on first', async () => {
    for (const first of [1, 100]) {
      const s = setup({ rows: [rowOf()] });
      expect((await run(s.ctx, DELIVERIES, { first })).errors).toBeUndefined();
      expect(s.deliveryQueries).toEqual([['p1', first]]);
    }
    const nulled = setup({ rows: [rowOf()] });
    await run(nulled.ctx, DELIVERIES, { first: null });
    expect(nulled.deliveryQueries).toEqual([['p1', 20]]);
    for (const first of [0, 101]) {
      const s = setup({ rows: [rowOf()] });
      const res = await run(s.ctx, DELIVERIES, { first });
      expect(res.errors?.map((e) => [e.message, e.extensions, e.path])).toEqual([
        ['first must be between 1 and 100', { code: 'BAD_USER_INPUT', field: 'first' }, ['prediction', 'webhookDeliveries']],
      ]);
      expect(s.deliveryQueries).toEqual([]);
    }
  });

  const REDELIVER = 'mutation ($id: ID!) { redeliverWebhook(deliveryId: $id) { id redelivery statusCode succeeded } }';

  test('redeliverWebhook sends the attempt again and returns the new attempt (not another one)', async () => {
    const attempts = [attemptOf({ id: 'a9', statusCode: 204, manual: true }), attemptOf({ id: 'a1', statusCode: 500 })];
    const s = setup({ rows: [rowOf()], attempts, redelivered: attemptOf({ id: 'a9' }) });
    const res = await run(s.ctx, REDELIVER, { id: 'a1' });
    expect(res.errors).toBeUndefined();
    expect(res.data?.redeliverWebhook).toEqual({ id: 'a9', redelivery: true, statusCode: 204, succeeded: true });
    expect(s.redelivers).toEqual(['a1']);
    expect(s.deliveryQueries).toEqual([['p1', 100]]);
    const second = setup({ rows: [rowOf()], attempts: [attemptOf({ id: 'a1' }), attemptOf({ id: 'a9', manual: true })], redelivered: attemptOf({ id: 'a9' }) });
    expect((await run(second.ctx, REDELIVER, { id: 'a1' })).data?.redeliverWebhook).toMatchObject({ id: 'a9', redelivery: true });
  });

  test('an unknown delivery, another owner\'s, or a huge id is NOT_FOUND and sends nothing', async () => {
    const attempts = [attemptOf({ id: 'a1', predictionId: 'p1' }), attemptOf({ id: 'b1', predictionId: 'pb' })];
    const rows = [rowOf(), rowOf({ id: 'pb', owner: 'bob' })];
    for (const id of ['zz', 'b1']) {
      const s = setup({ rows, attempts, redelivered: attemptOf({ id: 'new' }) });
      expect(errorOf(await run(s.ctx, REDELIVER, { id }))).toEqual({
        message: `no webhook delivery with id "${id}"`,
        extensions: { code: 'NOT_FOUND', field: 'deliveryId' },
        path: ['redeliverWebhook'],
      });
      expect(s.attemptQueries).toEqual([id]);
      s.nothingDone();
    }
    // The attempt's prediction is gone.
    const orphan = setup({ rows: [], attempts, redelivered: attemptOf({ id: 'new' }) });
    expect(errorOf(await run(orphan.ctx, REDELIVER, { id: 'a1' })).extensions).toEqual({ code: 'NOT_FOUND', field: 'deliveryId' });
    expect(orphan.redelivers).toEqual([]);

    const longest = 'a'.repeat(100);
    const atLimit = setup({ rows, attempts });
    await run(atLimit.ctx, REDELIVER, { id: longest });
    expect(atLimit.attemptQueries).toEqual([longest]);
    const huge = setup({ rows, attempts });
    expect(errorOf(await run(huge.ctx, REDELIVER, { id: 'a'.repeat(101) })).message).toBe(`no webhook delivery with id "${longest}"`);
    expect(huge.attemptQueries).toEqual([]);
  });

  test('a redelivery that made no attempt, or whose attempt is not listed, is NOT_FOUND', async () => {
    const attempts = [attemptOf({ id: 'a1' })];
    const none = setup({ rows: [rowOf()], attempts, redelivered: undefined });
    expect(errorOf(await run(none.ctx, REDELIVER, { id: 'a1' }))).toEqual({
      message: 'no webhook delivery with id "a1"',
      extensions: { code: 'NOT_FOUND', field: 'deliveryId' },
      path: ['redeliverWebhook'],
    });
    expect(none.redelivers).toEqual(['a1']);
    expect(none.deliveryQueries).toEqual([]);
    const unlisted = setup({ rows: [rowOf()], attempts, redelivered: attemptOf({ id: 'ghost' }) });
    expect(errorOf(await run(unlisted.ctx, REDELIVER, { id: 'a1' })).extensions).toEqual({ code: 'NOT_FOUND', field: 'deliveryId' });
  });
});

describe('the schema itself', () => {
  test('built once and shared; printed as checked in', () => {
    expect(buildSchema()).toBe(schema);
    const checkedIn = readFileSync(new URL('../schema/schema.graphql', import.meta.url), 'utf8');
    expect(`${printSdl()}\n`).toBe(checkedIn);
  });

  test('the heavy fields carry the cost the result-cost limit reads; others none', () => {
    const fieldOf = (type: string, field: string) => (schema.getType(type) as GraphQLObjectType).getFields()[field];
    expect(fieldOf('VideoRequest', 'prompt')?.extensions).toMatchObject({ cost: 10 });
    expect(fieldOf('Prediction', 'error')?.extensions).toMatchObject({ cost: 2 });
    expect(fieldOf('WebhookDelivery', 'error')?.extensions).toMatchObject({ cost: 2 });
    expect(fieldOf('Prediction', 'id')?.extensions.cost).toBeUndefined();
  });

  test('DateTime: serialised as ISO 8601 in UTC; parsed from an ISO string, anything else refused', () => {
    const scalar = schema.getType('DateTime') as GraphQLScalarType;
    expect(scalar.serialize(new Date('2026-01-01T12:00:00+02:00'))).toBe('2026-01-01T10:00:00.000Z');
    expect(scalar.parseValue('2026-01-01T12:00:00.000Z')).toEqual(new Date('2026-01-01T12:00:00.000Z'));
    for (const bad of ['yesterday', 1_000_000_000_000]) {
      expect(() => scalar.parseValue(bad)).toThrow(new TypeError('DateTime must be an ISO 8601 string'));
    }
  });
});
