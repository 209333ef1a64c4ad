import { terminalStatuses } from '../db/schema.js';
import { builder } from './builder.js';
import { notFound, stored, userError } from './errors.js';
import { ownRow, Prediction } from './prediction.js';

builder.mutationField('cancelPrediction', (t) =>
  t.field({
    type: Prediction,
    description:
      'Ends one of your live predictions CANCELED: a queued one is never submitted; a submitted one is no longer followed and its task is deleted upstream on a best-effort basis. Subscribers get the final state and complete. A final prediction fails with ALREADY_FINAL; an unknown id (or another key\'s) with NOT_FOUND.',
    args: { id: t.arg.id({ required: true }) },
    resolve: async (_root, { id }, ctx) => {
      const row = ownRow(ctx, await ctx.store.findById(id));
      if (!row) throw notFound(id);
      if (terminalStatuses.has(row.status)) throw userError('ALREADY_FINAL', `prediction "${id}" is already ${row.status}`, 'id');
      const after = await stored(() => ctx.lifecycle.cancel(id), 'the gateway cannot store the cancel right now; the prediction goes on, try again later');
      if (!after) throw notFound(id);
      // It may have ended otherwise a moment before the cancel landed.
      if (after.status !== 'CANCELED') throw userError('ALREADY_FINAL', `prediction "${id}" is already ${after.status}`, 'id');
      return after;
    },
  }),
);
