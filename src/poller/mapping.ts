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

/**
 * Longest `error` stored, in UTF-16 units: upstream's text is kept as it came (a body may be 1 MiB),
 * and a page of 100 predictions must stay a few MB.
 */
export const MAX_ERROR_CHARS = 2000;
/** Outputs stored per prediction (video-01 makes one); more are dropped. */
export const MAX_OUTPUTS = 10;
/** Longest output URL (and result URL) stored; a longer one is dropped (a cut URL would point nowhere). */
export const MAX_OUTPUT_URL_CHARS = 2048;
/** An http(s) URL in printable ASCII with no space, `"` or `\`: one byte a character in a JSON response. */
const STORABLE_URL = /^https?:\/\/[!#-[\]-~]+$/;

/** Whether an upstream URL is stored: http(s), printable ASCII, at most MAX_OUTPUT_URL_CHARS. */
export function storableUrl(url: string): boolean {
  return url.length <= MAX_OUTPUT_URL_CHARS && STORABLE_URL.test(url);
}

/** `text` if it fits in `max` UTF-16 units, else its start and an ellipsis, `max` units in all (no half surrogate pair). */
export function capText(text: string, max = MAX_ERROR_CHARS): string {
  if (text.length <= max) return text;
  let cut = max - 1;
  const last = text.charCodeAt(cut - 1);
  if (last >= 0xd800 && last <= 0xdbff) cut--; // a high surrogate whose pair would be cut off
  return `${text.slice(0, cut)}…`;
}

/** The visible fields of a prediction as upstream reports them; undefined for an unknown status. */
export function patchFromUpstream(up: UpstreamPrediction): PredictionPatch | undefined {
  const status = statusMap[up.status];
  if (!status) return undefined;
  let error: string | null = up.error ?? null;
  if (status === 'FAILED' && up.status !== 'failed') error = `upstream ${up.status}${error ? `: ${error}` : ''}`;
  if (status === 'FAILED' && !error) error = 'upstream reported the prediction failed without a reason';
  // At most MAX_OUTPUTS storable URLs; each NSFW flag stays with its output.
  const kept = up.outputs.flatMap((url, i) => (storableUrl(url) ? [i] : [])).slice(0, MAX_OUTPUTS);
  const hasNsfwContents = up.outputs.length
    ? kept.flatMap((i) => (i < up.hasNsfwContents.length ? [up.hasNsfwContents[i] as boolean] : []))
    : up.hasNsfwContents.slice(0, MAX_OUTPUTS);
  return {
    status,
    outputs: kept.map((i) => up.outputs[i] as string),
    hasNsfwContents,
    urlsGet: up.urlsGet !== undefined && storableUrl(up.urlsGet) ? up.urlsGet : null,
    error: error === null ? null : capText(error),
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
