/** How often to look at an in-flight prediction. */
export interface PollSchedule {
  /** Delay before the first poll after submission, and the shortest delay ever used. */
  initialMs: number;
  /** Next delay as a share of the time since submission: 0.2 means detection lags ≤ ~20% of the run. */
  growth: number;
  /** Longest delay between two polls. */
  maxMs: number;
}

/**
 * Age-proportional polling: quick checks while a short task may already be done, then spacing out
 * as the task proves long. GETs grow with log(duration) instead of linearly, as a fixed loop's do.
 */
export function nextPollDelay(sinceSubmitMs: number, s: PollSchedule): number {
  return Math.round(Math.min(s.maxMs, Math.max(s.initialMs, s.growth * sinceSubmitMs)));
}

/** Exponential backoff with equal jitter, so retries of many predictions do not arrive in step. */
export function backoffDelay(attempts: number, baseMs: number, capMs: number, random = Math.random): number {
  const ceiling = Math.min(capMs, baseMs * 2 ** Math.min(attempts, 30));
  return Math.round(ceiling / 2 + random() * (ceiling / 2));
}
