/**
 * Executions whose answer depends on more than the rows they read: a live prediction's queue place
 * and estimates move with the clock, with other predictions' submissions and cancellations, and
 * with the run times of recent predictions, none of which is a recorded change of that prediction.
 * The response cache (server/response-cache.ts) never stores such an answer.
 */
const volatileContexts = new WeakSet<object>();

export function markVolatile(ctx: object): void {
  volatileContexts.add(ctx);
}

export function isVolatile(ctx: object): boolean {
  return volatileContexts.has(ctx);
}
