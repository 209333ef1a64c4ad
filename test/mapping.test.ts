import { describe, expect, test } from 'vitest';
import { MAX_PROMPT_CHARS } from '../src/validation/limits.js';
import { startApp } from './helpers/app.js';
import { newRow } from './helpers/db.js';
import type { PredictionPatch } from '../src/db/predictions.js';
import type { PredictionRow } from '../src/db/schema.js';
import { capText, changesVisibleState, MAX_ERROR_CHARS, MAX_OUTPUT_URL_CHARS, MAX_OUTPUTS, patchFromUpstream, storableUrl } from '../src/poller/mapping.js';
import type { UpstreamPrediction } from '../src/upstream/wavespeed.js';

const up = (fields: Partial<UpstreamPrediction>): UpstreamPrediction =>
  ({ id: 't', model: 'minimax/video-01', status: 'processing', outputs: [], hasNsfwContents: [], ...fields }) as UpstreamPrediction;

describe('patchFromUpstream: what upstream reports, as our visible fields', () => {
  test.each<[string, Partial<UpstreamPrediction>, PredictionPatch | undefined]>([
    [
      'processing, with its result URL and timing',
      { status: 'processing', urlsGet: 'https://u/r', inferenceMs: 1200 },
      { status: 'PROCESSING', outputs: [], hasNsfwContents: [], urlsGet: 'https://u/r', error: null, inferenceMs: 1200 },
    ],
    [
      'completed, with outputs and no URL or timing',
      { status: 'completed', outputs: ['https://u/a.mp4'], hasNsfwContents: [false] },
      { status: 'COMPLETED', outputs: ['https://u/a.mp4'], hasNsfwContents: [false], urlsGet: null, error: null, inferenceMs: null },
    ],
    ['failed with upstream words', { status: 'failed', error: 'bad prompt' }, expect.objectContaining({ status: 'FAILED', error: 'bad prompt' })],
    ['failed without a reason', { status: 'failed' }, expect.objectContaining({ status: 'FAILED', error: 'upstream reported the prediction failed without a reason' })],
    ['cancelled, with a reason', { status: 'cancelled', error: 'by user' }, expect.objectContaining({ status: 'FAILED', error: 'upstream cancelled: by user' })],
    ['timeout, without one', { status: 'timeout' }, expect.objectContaining({ status: 'FAILED', error: 'upstream timeout' })],
    ['deleted', { status: 'deleted' }, expect.objectContaining({ status: 'FAILED', error: 'upstream deleted' })],
    ['an unknown status', { status: 'queued-somewhere' }, undefined],
  ])('%s', (_name, fields, expected) => {
    expect(patchFromUpstream(up(fields))).toEqual(expected);
  });
});

describe('patchFromUpstream: what upstream sends is stored within bounds', () => {
  test('the limits: 2,000 characters of error, 10 outputs of at most 2,048 characters', () => {
    expect([MAX_ERROR_CHARS, MAX_OUTPUTS, MAX_OUTPUT_URL_CHARS]).toEqual([2000, 10, 2048]);
  });

  test.each([
    ['short', 'bad prompt', 'bad prompt'],
    ['exactly the limit', 'e'.repeat(2000), 'e'.repeat(2000)],
    ['one over', 'e'.repeat(2001), `${'e'.repeat(1999)}…`],
    ['a megabyte', 'x'.repeat(1024 * 1024), `${'x'.repeat(1999)}…`],
  ])('a failure with a %s error stores at most 2,000 characters, ending in … when cut', (_name, error, stored) => {
    const patch = patchFromUpstream(up({ status: 'failed', error }));
    expect(patch?.error).toBe(stored);
    expect(patch?.error?.length).toBeLessThanOrEqual(2000);
  });

  test('the cap applies to the whole stored text, "upstream cancelled: " included, and to a processing complaint', () => {
    const cancelled = patchFromUpstream(up({ status: 'cancelled', error: 'y'.repeat(5000) }));
    expect(cancelled?.error).toBe(`upstream cancelled: ${'y'.repeat(2000 - 'upstream cancelled: '.length - 1)}…`);
    expect(cancelled?.error).toHaveLength(2000);
    expect(patchFromUpstream(up({ status: 'processing', error: 'z'.repeat(3000) }))?.error).toHaveLength(2000);
  });

  test('capText does not cut a character in two', () => {
    const emoji = '😀'; // two UTF-16 units
    const capped = capText(`${'a'.repeat(1998)}${emoji}tail`);
    expect(capped).toBe(`${'a'.repeat(1998)}…`);
    expect(capText(`${'a'.repeat(1997)}${emoji}tail`)).toBe(`${'a'.repeat(1997)}${emoji}…`);
    expect(capText('abc', 3)).toBe('abc');
    expect(capText('abcd', 3)).toBe('ab…');
  });

  test('at most 10 outputs are kept, a URL over 2,048 characters is dropped, and each NSFW flag stays with its output', () => {
    const urls = Array.from({ length: 15 }, (_, i) => `https://u/${i}.mp4`);
    const many = patchFromUpstream(up({ status: 'completed', outputs: urls, hasNsfwContents: urls.map((_, i) => i % 2 === 0) }));
    expect(many?.outputs).toEqual(urls.slice(0, 10));
    expect(many?.hasNsfwContents).toEqual([true, false, true, false, true, false, true, false, true, false]);

    const long = `https://u/${'a'.repeat(2048)}`;
    const exact = `https://u/${'b'.repeat(2048 - 'https://u/'.length)}`;
    expect(exact).toHaveLength(2048);
    const mixed = patchFromUpstream(up({ status: 'completed', outputs: [long, exact, 'https://u/c.mp4'], hasNsfwContents: [true, false, true] }));
    expect(mixed?.outputs).toEqual([exact, 'https://u/c.mp4']);
    expect(mixed?.hasNsfwContents).toEqual([false, true]);
    // Fewer flags than outputs: no flag is made up.
    expect(patchFromUpstream(up({ status: 'completed', outputs: ['https://u/a', 'https://u/b'], hasNsfwContents: [true] }))?.hasNsfwContents).toEqual([true]);
    // Flags without outputs (processing): kept, at most 10.
    expect(patchFromUpstream(up({ status: 'processing', hasNsfwContents: Array(12).fill(false) }))?.hasNsfwContents).toHaveLength(10);
  });

  test('a result URL over 2,048 characters is not stored', () => {
    expect(patchFromUpstream(up({ urlsGet: `https://u/${'r'.repeat(2048)}` }))?.urlsGet).toBeNull();
    const exact = `https://u/${'r'.repeat(2038)}`;
    expect(patchFromUpstream(up({ urlsGet: exact }))?.urlsGet).toBe(exact);
  });
});

describe('storableUrl: only URLs that are one JSON byte a character', () => {
  test.each([
    ['https://cdn.example/v/a.mp4?sig=ab%20c&x=1#t', true],
    ['http://127.0.0.1:4000/sandbox/media/t.mp4', true],
    [`https://u/${'a'.repeat(2038)}`, true],
    [`https://u/${'a'.repeat(2039)}`, false],
    ['https://u/a b.mp4', false],
    ['https://u/"a".mp4', false],
    ['https://u/a\\b.mp4', false],
    ['https://u/\u0001.mp4', false],
    ['https://u/é.mp4', false],
    ['ftp://u/a.mp4', false],
    ['javascript:alert(1)', false],
    ['/relative.mp4', false],
    ['', false],
  ])('%s → %s', (url, ok) => {
    expect(storableUrl(url)).toBe(ok);
  });
});

describe('the largest page of predictions stays a few MB', () => {
  test('predictions(first: 100), every row at its limits, every field: under 5 MB', async () => {
    const t = await startApp({ SANDBOX_TASK_SECONDS: '600' });
    // The worst the limits allow, in JSON bytes: a prompt of 2,000 control characters (6 bytes each
    // as \u0001), an upstream error as long as it comes (capped by patchFromUpstream), 10 outputs of
    // 2,048 characters, and their kept copies.
    const prompt = '\u0001'.repeat(MAX_PROMPT_CHARS);
    const url = (i: number) => `https://cdn.example/${String(i).padStart(2, '0')}/${'o'.repeat(MAX_OUTPUT_URL_CHARS - 'https://cdn.example/00/'.length)}`;
    const patch = patchFromUpstream(
      up({
        status: 'failed',
        error: '\u0001'.repeat(1024 * 1024),
        outputs: Array.from({ length: 50 }, (_, i) => url(i)),
        hasNsfwContents: Array(50).fill(true),
        urlsGet: `https://api.example/${'g'.repeat(MAX_OUTPUT_URL_CHARS - 'https://api.example/'.length)}`,
        inferenceMs: 2 ** 31 - 1,
      }),
    );
    if (!patch) throw new Error('no patch');
    expect(patch.outputs).toHaveLength(MAX_OUTPUTS);
    const sqlite = t.app.db.$client;
    const update = sqlite.prepare(
      'UPDATE predictions SET upstream_id = ?, outputs = ?, has_nsfw_contents = ?, urls_get = ?, kept_outputs = ?, error = ?, inference_ms = ?, completed_at = created_at, next_poll_at = NULL WHERE id = ?',
    );
    sqlite.transaction(() => {
      for (let i = 0; i < 100; i++) {
        const id = `p-${String(i).padStart(3, '0')}-${'i'.repeat(30)}`;
        t.app.store.insert(newRow(id, { status: 'FAILED', prompt, createdAt: new Date(), updatedAt: new Date(), nextPollAt: new Date(Date.now() + 3_600_000) }));
        const kept = Array.from({ length: MAX_OUTPUTS }, (_, k) => `/media/${String(k).repeat(64).slice(0, 64)}.mp4`);
        update.run(`task-${String(i).padStart(3, '0')}-${'u'.repeat(60)}`, JSON.stringify(patch.outputs), JSON.stringify(patch.hasNsfwContents), patch.urlsGet, JSON.stringify(kept), patch.error, patch.inferenceMs, id);
      }
    })();
    const query = `query($f: Int) { predictions(first: $f) { nodes {
      id upstreamId model status input { prompt hasImage enablePromptExpansion } outputs keptOutputs urls { get } hasNsfwContents
      error timings { inference } createdAt updatedAt completedAt deadlineAt queuePosition estimatedStartAt estimatedCompletionAt
    } pageInfo { hasNextPage endCursor } } }`;
    const res = await fetch(`${t.url}/graphql`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'application/graphql-response+json' },
      body: JSON.stringify({ query, variables: { f: 100 } }),
    });
    const text = await res.text();
    const body = JSON.parse(text);
    expect(body.errors).toBeUndefined();
    expect(body.data.predictions.nodes).toHaveLength(100);
    const node = body.data.predictions.nodes[0];
    expect([node.input.prompt.length, node.error.length, node.outputs.length, node.keptOutputs.length]).toEqual([MAX_PROMPT_CHARS, MAX_ERROR_CHARS, MAX_OUTPUTS, MAX_OUTPUTS]);
    expect(Buffer.byteLength(text)).toBeLessThan(5 * 1024 * 1024);
  });
});

describe('changesVisibleState: a poll that changes nothing a client sees writes nothing', () => {
  const row = {
    status: 'PROCESSING',
    error: null,
    urlsGet: 'https://u/r',
    inferenceMs: null,
    keptOutputs: [],
    outputs: [],
    hasNsfwContents: [],
  } as unknown as PredictionRow;
  const same: PredictionPatch = { status: 'PROCESSING', error: null, urlsGet: 'https://u/r', inferenceMs: null, outputs: [], hasNsfwContents: [] };

  test.each<[string, PredictionPatch, boolean]>([
    ['the same fields', same, false],
    ['the same, with the same kept outputs', { ...same, keptOutputs: [] }, false],
    ['another status', { ...same, status: 'COMPLETED' }, true],
    ['an error', { ...same, error: 'x' }, true],
    ['another result URL', { ...same, urlsGet: 'https://u/other' }, true],
    ['a timing', { ...same, inferenceMs: 5 }, true],
    ['kept outputs', { ...same, keptOutputs: ['/media/a.mp4'] }, true],
    ['outputs', { ...same, outputs: ['https://u/a.mp4'] }, true],
    ['NSFW flags', { ...same, hasNsfwContents: [true] }, true],
  ])('%s → %s', (_name, patch, expected) => {
    expect(changesVisibleState(row, patch)).toBe(expected);
  });
});
