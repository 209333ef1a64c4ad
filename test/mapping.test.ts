import { describe, expect, test } from 'vitest';
import type { PredictionPatch } from '../src/db/predictions.js';
import type { PredictionRow } from '../src/db/schema.js';
import { changesVisibleState, patchFromUpstream } from '../src/poller/mapping.js';
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
