import type { PredictionPatch } from '../db/predictions.js';
import type { PredictionRow, PredictionStatus } from '../db/schema.js';
import type { UpstreamPrediction } from '../upstream/wavespeed.js';

const statusMap: Record<string, PredictionStatus> = {
  created: 'CREATED',
  processing: 'PROCESSING',
  completed: 'COMPLETED',
  failed: 'FAILED',
  // The SDKs treat these as terminal failures too; we keep the upstream word in `error`.
  cancelled: 'FAILED',
  timeout: 'FAILED',
  deleted: 'FAILED',
};

/** The visible fields of a prediction as upstream reports them; undefined for an unknown status. */
export function patchFromUpstream(up: UpstreamPrediction): PredictionPatch | undefined {
  const status = statusMap[up.status];
  if (!status) return undefined;
  let error: string | null = up.error ?? null;
  if (status === 'FAILED' && up.status !== 'failed') error = `upstream ${up.status}${error ? `: ${error}` : ''}`;
  if (status === 'FAILED' && !error) error = 'upstream reported the prediction failed without a reason';
  return {
    status,
    outputs: up.outputs,
    hasNsfwContents: up.hasNsfwContents,
    urlsGet: up.urlsGet ?? null,
    error,
    inferenceMs: up.inferenceMs ?? null,
  };
}

/** Whether applying the patch would change anything a client can see. */
export function changesVisibleState(row: PredictionRow, patch: PredictionPatch): boolean {
  return (
    row.status !== patch.status ||
    row.error !== patch.error ||
    row.urlsGet !== patch.urlsGet ||
    row.inferenceMs !== patch.inferenceMs ||
    (patch.keptOutputs !== undefined && JSON.stringify(row.keptOutputs) !== JSON.stringify(patch.keptOutputs)) ||
    JSON.stringify(row.outputs) !== JSON.stringify(patch.outputs) ||
    JSON.stringify(row.hasNsfwContents) !== JSON.stringify(patch.hasNsfwContents)
  );
}
