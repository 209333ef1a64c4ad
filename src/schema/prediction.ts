import { predictionStatuses, terminalStatuses, type PredictionRow } from '../db/schema.js';
import { builder } from './builder.js';
import type { Estimate } from '../db/queue.js';
import type { Context } from './context.js';
import { notFound } from './errors.js';
import { markVolatile } from './volatile.js';
import { watchPrediction } from './watch.js';

/** The row if the caller owns it: another owner's prediction is, to the caller, one that does not exist. */
export function ownRow<R extends Pick<PredictionRow, 'owner'>>(ctx: Context, row: R | undefined): R | undefined {
  return row && row.owner === ctx.principal.owner ? row : undefined;
}

export const PredictionStatus = builder.enumType('PredictionStatus', {
  description:
    'CREATED: accepted, waiting in the queue or just submitted upstream. PROCESSING: generating. COMPLETED, FAILED and CANCELED (by cancelPrediction or a deadline) are final.',
  values: predictionStatuses,
});

const VideoRequest = builder.objectRef<PredictionRow>('VideoRequest').implement({
  description: 'What was asked for. The image itself is not kept once upstream has it.',
  fields: (t) => ({
    // Up to 2,000 code points: the heaviest field, weighted so in the result cost (server/result-cost.ts).
    prompt: t.exposeString('prompt', { extensions: { cost: 10 } }),
    hasImage: t.exposeBoolean('hasImage', { description: 'Whether an image was given as the first frame.' }),
    enablePromptExpansion: t.exposeBoolean('enablePromptExpansion'),
  }),
});

const PredictionUrls = builder.objectRef<PredictionRow>('PredictionUrls').implement({
  fields: (t) => ({
    get: t.string({ nullable: true, description: 'Upstream result URL (needs the upstream API key).', resolve: (p) => p.urlsGet }),
  }),
});

const PredictionTimings = builder.objectRef<PredictionRow>('PredictionTimings').implement({
  fields: (t) => ({
    inference: t.int({ nullable: true, description: 'Inference time in milliseconds, as upstream reports it.', resolve: (p) => p.inferenceMs }),
  }),
});

export const Prediction = builder.objectRef<PredictionRow>('Prediction').implement({
  description: 'One video generation, mirrored from the upstream prediction record.',
  fields: (t) => ({
    id: t.exposeID('id'),
    upstreamId: t.exposeString('upstreamId', { nullable: true, description: 'The upstream task id; null until submitted.' }),
    model: t.exposeString('model'),
    status: t.field({ type: PredictionStatus, resolve: (p) => p.status }),
    input: t.field({ type: VideoRequest, resolve: (p) => p }),
    outputs: t.exposeStringList('outputs', { description: 'URLs of the generated videos; empty until COMPLETED. Upstream deletes them after 7 days.' }),
    keptOutputs: t.stringList({
      description: "The gateway's own copies of the outputs, served with Range support and kept after upstream deletes its files (7 days). Empty until COMPLETED, or if copying failed.",
      resolve: (p, _args, ctx) => p.keptOutputs.map((path) => `${ctx.baseUrl()}${path}`),
    }),
    urls: t.field({ type: PredictionUrls, resolve: (p) => p }),
    hasNsfwContents: t.exposeBooleanList('hasNsfwContents', { description: 'NSFW flag per output.' }),
    error: t.exposeString('error', { nullable: true, description: 'Why the prediction failed (or the last upstream complaint).', extensions: { cost: 2 } }),
    timings: t.field({ type: PredictionTimings, resolve: (p) => p }),
    createdAt: t.expose('createdAt', { type: 'DateTime' }),
    updatedAt: t.expose('updatedAt', { type: 'DateTime' }),
    completedAt: t.expose('completedAt', { type: 'DateTime', nullable: true, description: 'When it became final (COMPLETED, FAILED or CANCELED).' }),
    deadlineAt: t.expose('deadlineAt', { type: 'DateTime', nullable: true, description: 'When it is canceled unless final by then (CreateVideoInput.deadlineSeconds).' }),
    queuePosition: t.int({
      nullable: true,
      description: 'Place in the admission queue (1 is next), while it waits for the account tier (UPSTREAM_MAX_CONCURRENT, UPSTREAM_MAX_PER_MINUTE); null once submitted.',
      resolve: async (p, _args, ctx) => (await estimateOf(ctx, p)).queuePosition,
    }),
    estimatedStartAt: t.field({
      type: 'DateTime',
      nullable: true,
      description: 'When it is expected to be (or was) submitted, from the run times of recent predictions; null until one has completed, and once final.',
      resolve: async (p, _args, ctx) => (await estimateOf(ctx, p)).estimatedStartAt,
    }),
    estimatedCompletionAt: t.field({
      type: 'DateTime',
      nullable: true,
      description: 'When it is expected to be final, from the run times of recent predictions; null until one has completed, and once final.',
      resolve: async (p, _args, ctx) => (await estimateOf(ctx, p)).estimatedCompletionAt,
    }),
  }),
});

/** One estimate per row object: the three fields share it, and so do the subscribers of one event. */
const estimates = new WeakMap<PredictionRow, Promise<Estimate>>();
function estimateOf(ctx: Context, row: PredictionRow): Promise<Estimate> {
  // A live prediction's estimates change without a recorded change of it: its answer is not cacheable.
  if (!terminalStatuses.has(row.status)) markVolatile(ctx);
  let e = estimates.get(row);
  if (!e) {
    e = ctx.lifecycle.estimate(row);
    estimates.set(row, e);
  }
  return e;
}

builder.queryField('prediction', (t) =>
  t.field({
    type: Prediction,
    nullable: true,
    description: "One of the caller's predictions by id; null when there is none (another key's prediction is none).",
    args: { id: t.arg.id({ required: true }) },
    resolve: async (_root, { id }, ctx) => ownRow(ctx, await ctx.store.findById(id)) ?? null,
  }),
);

builder.subscriptionField('predictionUpdated', (t) =>
  t.field({
    type: Prediction,
    description:
      "One of the caller's predictions as it is now, then every change, completing after a final status (COMPLETED, FAILED or CANCELED). An unknown id (or another key's) ends with a NOT_FOUND error.",
    args: { id: t.arg.id({ required: true }) },
    subscribe: async (_root, { id }, ctx) => {
      const stream = await watchPrediction(ctx, id);
      if (!stream) throw notFound(id);
      return stream;
    },
    resolve: (row) => row,
  }),
);
