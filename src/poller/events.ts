import type { PredictionStatus } from '../db/schema.js';
import type { Pause, PauseKind } from './pauses.js';

/** What the poller does, as typed events: tests await them instead of sleeping, and logs or metrics can follow. */
export interface PollerEvents {
  /** Upstream accepted (or reconciliation found) the task of this prediction. */
  submitted: [{ id: string; upstreamId: string; adopted: boolean }];
  /** A submission had no certain answer; the prediction now waits for reconciliation. */
  uncertain: [{ id: string; error: string }];
  /** One result read: the status as upstream reported it. */
  polled: [{ id: string; status: string }];
  /** A data-URI image was uploaded through upstream's media upload (once per prediction). */
  uploaded: [{ id: string; url: string }];
  /** A visible change was written and published. */
  recorded: [{ id: string; status: PredictionStatus }];
  /** The prediction ended FAILED. */
  failed: [{ id: string; error: string }];
  /** All upstream work is held off. */
  paused: [Pause];
  /** A pause ended by a success. */
  resumed: [{ kind: PauseKind }];
  /** The queue may have moved (a submission ended, a prediction was canceled): places and estimates change. */
  queueMoved: [];
  /** Canceled tasks were deleted upstream. */
  deletedUpstream: [{ upstreamIds: string[] }];
}

