import type { PredictionRow } from '../db/schema.js';
import { builder } from './builder.js';
import { userError } from './errors.js';
import { Prediction, PredictionStatus } from './prediction.js';

const MAX_PAGE = 100;

interface Page {
  rows: PredictionRow[];
  hasNextPage: boolean;
}

const encodeCursor = (seq: number) => Buffer.from(`seq:${seq}`).toString('base64url');

function decodeCursor(cursor: string): number {
  const m = /^seq:(\d{1,15})$/.exec(Buffer.from(cursor, 'base64url').toString('utf8'));
  if (!m) throw userError('BAD_USER_INPUT', 'after: not a cursor this API returned', 'after');
  return Number(m[1]);
}

const PageInfo = builder.objectRef<Page>('PageInfo').implement({
  fields: (t) => ({
    hasNextPage: t.exposeBoolean('hasNextPage'),
    endCursor: t.string({
      nullable: true,
      resolve: (p) => {
        const last = p.rows.at(-1);
        return last ? encodeCursor(last.seq) : null;
      },
    }),
  }),
});

const PredictionEdge = builder.objectRef<PredictionRow>('PredictionEdge').implement({
  fields: (t) => ({
    cursor: t.string({ resolve: (p) => encodeCursor(p.seq) }),
    node: t.field({ type: Prediction, resolve: (p) => p }),
  }),
});

const PredictionConnection = builder.objectRef<Page>('PredictionConnection').implement({
  fields: (t) => ({
    edges: t.field({ type: [PredictionEdge], resolve: (p) => p.rows }),
    nodes: t.field({ type: [Prediction], resolve: (p) => p.rows }),
    pageInfo: t.field({ type: PageInfo, resolve: (p) => p }),
  }),
});

builder.queryField('predictions', (t) =>
  t.field({
    type: PredictionConnection,
    description: `The caller's predictions, newest first, in pages of at most ${MAX_PAGE}.`,
    args: {
      first: t.arg.int({ defaultValue: 20, description: `Page size, 1 to ${MAX_PAGE}.` }),
      after: t.arg.string({ description: 'The endCursor of the previous page.' }),
      status: t.arg({ type: PredictionStatus, description: 'Only predictions in this status.' }),
    },
    resolve: async (_root, args, ctx) => {
      const first = args.first ?? 20;
      if (first < 1 || first > MAX_PAGE) throw userError('BAD_USER_INPUT', `first must be between 1 and ${MAX_PAGE}`, 'first');
      const beforeSeq = args.after == null ? undefined : decodeCursor(args.after);
      const rows = await ctx.store.list({ first: first + 1, beforeSeq, status: args.status ?? undefined, owner: ctx.principal.owner });
      return { rows: rows.slice(0, first), hasNextPage: rows.length > first };
    },
  }),
);
