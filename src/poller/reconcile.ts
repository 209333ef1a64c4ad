import { MODEL, type UpstreamPrediction, type WaveSpeedClient } from '../upstream/wavespeed.js';

export interface SubmittedInput {
  prompt: string;
  /** The image as it was sent (data URI or URL), or null for text-to-video. */
  image: string | null;
  /** When the submission in question was started (its intent was written just before). */
  since: Date;
  /** Whether another prediction already owns this upstream task. */
  isTaken: (upstreamId: string) => Promise<boolean>;
}

/** Records per page of upstream's list, and how many pages are read at most per look. */
const PAGE_SIZE = 100;
const MAX_PAGES = 10;
/**
 * Upstream's clock against ours: a task created up to this long before our intent was written
 * still counts as possibly ours. Wider finds more, but risks adopting an older task with the same input.
 */
export const CLOCK_SKEW_MS = 60_000;

/**
 * Searches upstream's task list (newest first) for a task this submission may have created: same
 * model, same prompt and image, created since the submission started, and not owned by another
 * prediction. Two predictions with identical input submitted in the same window may swap tasks,
 * which changes nothing a client can tell apart; neither is ever billed twice.
 */
/**
 * @returns the task; 'absent' when the whole window was read and it is not there; 'unknown' when
 * the window holds more than MAX_PAGES pages (a busy account), so absence is not proven.
 */
export async function findSubmittedTask(client: WaveSpeedClient, input: SubmittedInput): Promise<UpstreamPrediction | 'absent' | 'unknown'> {
  const oldest = input.since.getTime() - CLOCK_SKEW_MS;
  for (let page = 1; page <= MAX_PAGES; page++) {
    const items = await client.listPredictions(page, PAGE_SIZE);
    for (const item of items) {
      if (item.model === MODEL && sameInput(item, input) && createdSince(item, oldest) && !(await input.isTaken(item.id))) return item;
    }
    const last = items.at(-1);
    // A short page is the last one; a page that reaches past the window ends the search too.
    if (items.length < PAGE_SIZE || (last && !createdSince(last, oldest))) return 'absent';
  }
  return 'unknown';
}

function sameInput(item: UpstreamPrediction, input: SubmittedInput): boolean {
  if (!item.input || item.input.prompt !== input.prompt) return false;
  const image = typeof item.input.image === 'string' && item.input.image !== '' ? item.input.image : null;
  return image === input.image;
}

/** A record without a readable creation time cannot be ruled out by it. */
function createdSince(item: UpstreamPrediction, oldest: number): boolean {
  const at = item.createdAt ? Date.parse(item.createdAt) : Number.NaN;
  return Number.isNaN(at) || at >= oldest;
}
