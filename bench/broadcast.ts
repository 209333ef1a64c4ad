// Micro-benchmark of our own share of one fan-out broadcast, without sockets: N subscribers of one
// prediction through the real pubsub, watch iterator (src/schema/watch.ts) and shared execution
// (src/server/shared-execution.ts), each with a frame target that builds its frame with `textFrame`
// and keeps only its length. One terminal row is published per turn to N fresh subscribers; the
// figure is the synchronous publish, per subscriber. bench/ws-send.ts measures the socket writes that
// come on top. `npx tsx bench/broadcast.ts [N=10000] [turns=10]`.
import { spawnSync } from 'node:child_process';
import { GraphQLID, GraphQLList, GraphQLNonNull, GraphQLObjectType, GraphQLSchema, GraphQLString, parse } from 'graphql';
import type { PredictionRow } from '../src/db/schema.js';
import { createPredictionPubSub } from '../src/pubsub.js';
import type { Context } from '../src/schema/context.js';
import { watchPrediction } from '../src/schema/watch.js';
import { type FrameTarget, writeFramesTo } from '../src/server/shared-execution.js';
import { textFrame } from '../src/server/ws.js';
import { sharedSubscribeFn } from '../test/helpers/shared-execution.js';

const N = Number(process.argv[2] ?? 10_000);
const TURNS = Number(process.argv[3] ?? 10);
spawnSync('taskset', ['-a', '-p', '-c', '0', String(process.pid)]);

const Prediction = new GraphQLObjectType<PredictionRow>({
  name: 'Prediction',
  fields: {
    id: { type: new GraphQLNonNull(GraphQLID) },
    status: { type: new GraphQLNonNull(GraphQLString) },
    outputs: { type: new GraphQLList(GraphQLString) },
    error: { type: GraphQLString },
    updatedAt: { type: GraphQLString, resolve: (row) => row.updatedAt.toISOString() },
  },
});
const schema = new GraphQLSchema({
  query: new GraphQLObjectType({ name: 'Query', fields: { ok: { type: GraphQLString } } }),
  subscription: new GraphQLObjectType({
    name: 'Subscription',
    fields: {
      predictionUpdated: {
        type: Prediction,
        args: { id: { type: new GraphQLNonNull(GraphQLID) } },
        subscribe: (_root, { id }: { id: string }, ctx: Context) => watchPrediction(ctx, id),
        resolve: (row: PredictionRow) => row,
      },
    },
  }),
});
const document = parse('subscription ($id: ID!) { predictionUpdated(id: $id) { id status outputs error updatedAt } }');

const subscribeFn = sharedSubscribeFn();

const id = '0193a3c2-7a1b-7cc4-9d43-1f1e5c6a2b3c';
const base = {
  id,
  status: 'PROCESSING',
  outputs: [] as string[],
  error: null,
  version: 2,
  owner: 'bench',
  updatedAt: new Date('2026-11-29T14:00:00.000Z'),
} as unknown as PredictionRow;
const pubsub = createPredictionPubSub();
let bytes = 0;
let frames = 0;

class CountingTarget implements FrameTarget {
  constructor(readonly id: string) {}
  open(): boolean {
    return true;
  }
  send(head: Uint8Array, tail: Uint8Array): void {
    bytes += textFrame(head, tail).length;
    frames++;
  }
}

async function subscribers(n: number): Promise<void> {
  for (let i = 0; i < n; i++) {
    const ctx = {
      pubsub,
      store: { findById: async () => base },
      principal: { owner: 'bench' },
      baseUrl: () => 'http://127.0.0.1:4000',
    } as unknown as Context;
    writeFramesTo(ctx, new CountingTarget(String(i)));
    const it = await subscribeFn({ schema, document, variableValues: { id }, contextValue: ctx, rootValue: undefined });
    // graphql-ws's first next(): the subscription attaches and receives the current row.
    if (Symbol.asyncIterator in it) void it.next();
  }
}

const times: number[] = [];
for (let t = 0; t < TURNS; t++) {
  await subscribers(N);
  const before = frames;
  const row = { ...base, status: 'COMPLETED', outputs: [`http://127.0.0.1:4000/outputs/${id}/0.mp4`], version: 3 + t } as PredictionRow;
  const t0 = process.hrtime.bigint();
  pubsub.publish('prediction:updated', id, row);
  times.push(Number(process.hrtime.bigint() - t0) / 1e6);
  if (frames - before !== N) throw new Error(`expected ${N} frames, wrote ${frames - before}`);
  if (pubsub.count() !== 0) throw new Error(`${pubsub.count()} subscribers left after the terminal row`);
}
const sorted = [...times].sort((a, b) => a - b);
const median = sorted[Math.floor(sorted.length / 2)] ?? Number.NaN;
console.log(
  `publish of a terminal row to ${N} subscribers: median ${median.toFixed(1)} ms (${sorted[0]?.toFixed(1)}–${sorted.at(-1)?.toFixed(1)}), ${((median * 1000) / N).toFixed(2)} µs a subscriber; ${(bytes / frames).toFixed(0)} bytes a frame`,
);
