import { describe, expect, test } from 'vitest';
import { classify, decideFailure, type FailureClass, type Step } from '../src/poller/decide.js';
import { Pauses } from '../src/poller/pauses.js';
import { findSubmittedTask } from '../src/poller/reconcile.js';
import { MediaError } from '../src/storage/media.js';
import { MODEL, UpstreamError, type UpstreamPrediction, type WaveSpeedClient } from '../src/upstream/wavespeed.js';

const http = (status: number, message = `upstream answered HTTP ${status}: x`) => new UpstreamError('http', message, status);
const network = (code: string) => new UpstreamError('network', `POST /x: fetch failed (${code})`, undefined, undefined, code);

describe('classify: what a failure says about the request', () => {
  test.each<[string, unknown, FailureClass]>([
    ['401', http(401), 'account'],
    ['402', http(402), 'account'],
    ['403', http(403), 'account'],
    ['an envelope code 401', new UpstreamError('http', 'upstream answered code 401: invalid key', 401), 'account'],
    ['a 400 about the balance', http(400, 'upstream answered code 400: Insufficient balance, please top up'), 'account'],
    ['429', http(429), 'rate'],
    ['408', http(408), 'notSent'],
    ['404', http(404), 'gone'],
    ['400 (a parameter)', http(400, 'upstream answered HTTP 400: image aspect ratio not supported'), 'rejected'],
    ['422 (moderation)', http(422, 'upstream answered code 422: prompt flagged by content moderation'), 'rejected'],
    ['500', http(500), 'uncertain'],
    ['502', http(502), 'uncertain'],
    ['an envelope code 500', new UpstreamError('http', 'upstream answered code 500: internal', 500), 'uncertain'],
    ['a timeout', new UpstreamError('timeout', 'no answer within 200 ms'), 'uncertain'],
    ['a malformed 200', new UpstreamError('protocol', 'not a v3 envelope'), 'uncertain'],
    ['a reset connection', network('ECONNRESET'), 'uncertain'],
    ['a socket closed by the other side', network('UND_ERR_SOCKET'), 'uncertain'],
    ['a refused connection', network('ECONNREFUSED'), 'notSent'],
    ['a name that does not resolve', network('ENOTFOUND'), 'notSent'],
    ['a DNS failure', network('EAI_AGAIN'), 'notSent'],
    ['a connect timeout', network('UND_ERR_CONNECT_TIMEOUT'), 'notSent'],
    ['a network error without a code', new UpstreamError('network', 'fetch failed'), 'uncertain'],
    ['an unexpected exception', new TypeError('boom'), 'uncertain'],
    // Only an UpstreamError is read: another error that merely looks like one proves nothing.
    ['an unexpected exception that looks not sent', Object.assign(new Error('boom'), { kind: 'network', notSent: true }), 'uncertain'],
    ['an unexpected exception that looks like a 400', Object.assign(new Error('boom'), { kind: 'http', status: 400 }), 'uncertain'],
    ['an HTTP status below 400 (a redirect not followed)', http(302), 'uncertain'],
    ['a 400 asking to "topup"', http(400, 'upstream answered code 400: please topup'), 'account'],
    ['a 400 saying unauthorized', http(400, 'upstream answered code 400: Unauthorized'), 'account'],
    ['a 400 saying unauthorised', http(400, 'upstream answered code 400: unauthorised key'), 'account'],
    ['a transient download failure', new MediaError('HTTP 503', true), 'transient'],
    ['a permanent download failure', new MediaError('too large', false), 'lost'],
  ])('%s → %s', (_name, err, expected) => {
    expect(classify(err)).toBe(expected);
  });
});

describe('decideFailure: finish, retry, pause or reconcile', () => {
  const giveUp = (what: string) => `gave up: ${what} within 60 s`;
  test.each<[Step, FailureClass, boolean, ReturnType<typeof decideFailure>]>([
    // A submission that may have created a task is never resent blindly, expired or not.
    ['submission', 'uncertain', false, { action: 'reconcile' }],
    ['submission', 'uncertain', true, { action: 'reconcile' }],
    ['submission', 'rejected', false, { action: 'fail', error: 'upstream rejected the submission: M' }],
    ['submission', 'gone', false, { action: 'fail', error: 'upstream rejected the submission: M' }],
    ['submission', 'notSent', false, { action: 'retry' }],
    ['submission', 'notSent', true, { action: 'fail', error: 'gave up: could not submit upstream within 60 s (last error: M)' }],
    ['submission', 'rate', false, { action: 'retry', rateLimit: true }],
    ['submission', 'account', false, { action: 'pauseAccount' }],
    // Account errors pause even past the age limit: the prediction is not upstream's fault to fail.
    ['submission', 'account', true, { action: 'pauseAccount' }],
    ['poll', 'gone', false, { action: 'fail', error: 'upstream no longer has this prediction: M' }],
    ['poll', 'uncertain', false, { action: 'retry' }],
    ['poll', 'uncertain', true, { action: 'fail', error: 'gave up: no final status from upstream within 60 s (last error: M)' }],
    ['poll', 'rejected', false, { action: 'retry' }],
    ['poll', 'transient', false, { action: 'retry' }],
    ['poll', 'rate', false, { action: 'retry', rateLimit: true }],
    ['poll', 'rate', true, { action: 'fail', error: 'gave up: no final status from upstream within 60 s (last error: M)' }],
    ['poll', 'account', false, { action: 'pauseAccount' }],
    ['reconcile', 'uncertain', false, { action: 'retry' }],
    ['reconcile', 'gone', false, { action: 'retry' }],
    ['reconcile', 'account', false, { action: 'pauseAccount' }],
    // A reconciliation that runs out of time may have missed a task: that is said, not hidden.
    [
      'reconcile',
      'notSent',
      true,
      { action: 'fail', error: 'SUBMISSION_UNCERTAIN: upstream never confirmed a task for this prediction within the age limit; it may still run and be billed upstream (last error: M)' },
    ],
    // An upload precedes any submission: nothing upstream to reconcile; a refusal is final.
    ['upload', 'uncertain', false, { action: 'retry' }],
    ['upload', 'rejected', false, { action: 'fail', error: 'upstream refused the image upload: M' }],
    ['upload', 'gone', false, { action: 'fail', error: 'upstream refused the image upload: M' }],
    ['upload', 'account', false, { action: 'pauseAccount' }],
    ['upload', 'notSent', true, { action: 'fail', error: 'gave up: could not submit upstream within 60 s (last error: M)' }],
  ])('%s, %s, expired=%s', (step, cls, expired, expected) => {
    expect(decideFailure(step, cls, 'M', expired, giveUp)).toEqual(expected);
  });
});

describe('Pauses', () => {
  test('backoff grows per kind, an explicit wait is honoured, and the latest end of all pauses counts', () => {
    const p = new Pauses(1000, 60_000);
    const first = p.hold('account', 'key revoked', 0);
    expect(first.isNew).toBe(true);
    expect(first.pause.until).toBeGreaterThanOrEqual(500);
    expect(first.pause.until).toBeLessThanOrEqual(1000);
    const again = p.hold('account', 'key revoked', first.pause.until);
    expect(again.isNew).toBe(false); // same reason: not worth another log line
    expect(again.pause.streak).toBe(2);
    expect(p.hold('rate', 'slow down', 0, 7000).pause.until).toBe(7000);
    expect(p.until()).toBe(7000);
    expect(p.clear('rate')).toBe(true);
    expect(p.clear('rate')).toBe(false);
    expect(p.until()).toBe(again.pause.until);
    expect(p.list().map((x) => x.kind)).toEqual(['account']);
  });

  test('the backoff is capped', () => {
    const p = new Pauses(1000, 4000);
    let now = 0;
    for (let i = 0; i < 20; i++) now = p.hold('storage', 'full', now).pause.until;
    expect(p.get('storage')?.streak).toBe(20);
    const last = p.hold('storage', 'full', now);
    expect(last.pause.until - now).toBeLessThanOrEqual(4000);
    expect(last.pause.until - now).toBeGreaterThanOrEqual(2000);
  });
});

describe('findSubmittedTask', () => {
  const since = new Date('2026-01-01T12:00:00Z');
  const record = (id: string, prompt: string, minutesAfter: number, image?: string): UpstreamPrediction => ({
    id,
    model: MODEL,
    status: 'processing',
    outputs: [],
    hasNsfwContents: [],
    createdAt: new Date(since.getTime() + minutesAfter * 60_000).toISOString(),
    input: { prompt, ...(image ? { image } : {}) },
  });
  /** Pages newest first, as upstream serves them; counts the pages read. */
  const upstream = (items: UpstreamPrediction[]) => {
    const pages: number[] = [];
    const client = {
      listPredictions: async (page: number, size: number) => {
        pages.push(page);
        return items.slice((page - 1) * size, page * size);
      },
    } as unknown as WaveSpeedClient;
    return { client, pages };
  };
  const none = async () => false;
  const idOf = (found: Awaited<ReturnType<typeof findSubmittedTask>>) => (typeof found === 'object' ? found.id : found);

  test('adopts the newest task with the same prompt and image created in the window', async () => {
    const { client } = upstream([record('other', 'not mine', 3), record('mine', 'a boat', 2), record('older-same', 'a boat', -5)]);
    expect(idOf(await findSubmittedTask(client, { prompt: 'a boat', image: null, since, isTaken: none }))).toBe('mine');
  });

  test('never adopts a task another prediction owns, one with another image, another model, or one from before the window', async () => {
    const items = [
      record('taken', 'a boat', 2),
      record('with-image', 'a boat', 2, 'https://img.example/a.png'),
      { ...record('other-model', 'a boat', 2), model: 'wavespeed-ai/other' },
      record('too-old', 'a boat', -2),
    ];
    const { client } = upstream(items);
    expect(await findSubmittedTask(client, { prompt: 'a boat', image: null, since, isTaken: async (id) => id === 'taken' })).toBe('absent');
    const found = await findSubmittedTask(client, { prompt: 'a boat', image: 'https://img.example/a.png', since, isTaken: none });
    expect(idOf(found)).toBe('with-image');
  });

  test('reads further pages only while they can hold the task', async () => {
    const recent = Array.from({ length: 100 }, (_, i) => record(`r${i}`, 'someone else', 10));
    const { client, pages } = upstream([...recent, record('mine', 'a boat', 1)]);
    expect(idOf(await findSubmittedTask(client, { prompt: 'a boat', image: null, since, isTaken: none }))).toBe('mine');
    expect(pages).toEqual([1, 2]);
    const old = Array.from({ length: 100 }, (_, i) => record(`o${i}`, 'someone else', -10));
    const second = upstream([...old, record('mine', 'a boat', -20)]);
    expect(await findSubmittedTask(second.client, { prompt: 'a boat', image: null, since, isTaken: none })).toBe('absent');
    expect(second.pages).toEqual([1]); // the first page already reached past the window
  });

  test('a window busier than one look reads is unknown, never absent: absence would allow a second submission', async () => {
    const busy = Array.from({ length: 1000 }, (_, i) => record(`b${i}`, 'someone else', 5));
    const { client, pages } = upstream([...busy, record('mine', 'a boat', 1)]);
    expect(await findSubmittedTask(client, { prompt: 'a boat', image: null, since, isTaken: none })).toBe('unknown');
    expect(pages).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
  });
});
