import { terminalStatuses, type PredictionRow } from '../db/schema.js';
import type { Context } from './context.js';

/**
 * The current row, then each newer version until a terminal status. Listens before reading the
 * row, so a change landing between the two is never lost; versions drop duplicates. Undefined
 * for an unknown id.
 */
export function watchPrediction(ctx: Context, id: string): AsyncGenerator<PredictionRow> | undefined {
  const events = ctx.pubsub.subscribe('prediction:updated', id)[Symbol.asyncIterator]();
  // A Repeater attaches its listener on the first next(), so ask for it before the read.
  const first = events.next();
  const current = ctx.store.findById(id);
  if (!current) {
    void events.return?.();
    return undefined;
  }
  return (async function* () {
    try {
      yield current;
      if (terminalStatuses.has(current.status)) return;
      let seen = current.version;
      for (let next = await first; !next.done; next = await events.next()) {
        const row = next.value;
        if (row.version <= seen) continue;
        seen = row.version;
        yield row;
        if (terminalStatuses.has(row.status)) return;
      }
    } finally {
      await events.return?.();
    }
  })();
}
