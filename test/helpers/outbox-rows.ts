import type { NewAttempt } from '../../src/db/outbox.js';
import type { PredictionStatus } from '../../src/db/schema.js';

/** A webhook message as the outboxes' `enqueue` takes it: to a fixed receiver per prediction. */
export const outboxMessage = (id: string, predictionId: string, event: PredictionStatus, now: Date) => ({
  id,
  predictionId,
  event,
  url: `https://hooks.example/${predictionId}`,
  payload: JSON.stringify({ id: predictionId, status: event }),
  now,
});

/** A failed attempt (HTTP 500) unless `more` says otherwise. */
export const outboxAttempt = (id: string, messageId: string, predictionId: string, attemptedAt: Date, more: Partial<NewAttempt> = {}): NewAttempt => ({
  id,
  messageId,
  predictionId,
  attemptedAt,
  statusCode: 500,
  latencyMs: 12,
  error: 'HTTP 500',
  manual: false,
  ...more,
});
