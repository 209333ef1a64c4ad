import { MediaError } from '../storage/media.js';
import { UpstreamError } from '../upstream/wavespeed.js';

/** The step of a prediction's life that failed. */
export type Step = 'submission' | 'reconcile' | 'poll' | 'upload';

/**
 * What a failure says, judged once for every step:
 * - `account`: the key cannot be used (401/402/403, or a balance/credit complaint): no request will work.
 * - `rate`: 429; the whole account should hold off.
 * - `rejected`: upstream refused this request on its merits (moderation, a parameter): repeating it is pointless.
 * - `notSent`: it certainly never reached upstream (connection refused, DNS failure, 408): sending again is safe.
 * - `uncertain`: upstream may have received and acted on it (timeout after sending, reset, 5xx, a 200
 *   that is not a v3 answer). For a submission this means a task may exist, and be billed.
 * - `gone`: 404: for a poll, upstream no longer has the task; otherwise a refusal like `rejected`.
 * - `transient`: a download that may work later; `lost`: a permanent download failure.
 */
export type FailureClass = 'account' | 'rate' | 'rejected' | 'gone' | 'notSent' | 'uncertain' | 'transient' | 'lost';

/** Upstream's words for an account that cannot pay or is not allowed, whatever status carries them. */
const ACCOUNT_MESSAGE = /insufficient|balance|credit|top.?up|payment required|unauthori[sz]ed|forbidden|api key|access key/i;

export function classify(err: unknown): FailureClass {
  if (err instanceof MediaError) return err.transient ? 'transient' : 'lost';
  if (!(err instanceof UpstreamError)) return 'uncertain'; // an unexpected exception proves nothing either way
  const status = err.status ?? 0;
  if (err.kind === 'http') {
    if (status === 401 || status === 402 || status === 403) return 'account';
    if (status === 429) return 'rate';
    if (status === 408) return 'notSent';
    if (status === 404) return 'gone';
    if (status >= 400 && status < 500) return ACCOUNT_MESSAGE.test(err.message) ? 'account' : 'rejected';
    return 'uncertain';
  }
  return err.notSent ? 'notSent' : 'uncertain';
}

export type Decision =
  /** Try this step again after a backoff; `rateLimit` also pauses every upstream request. */
  | { action: 'retry'; rateLimit?: boolean }
  /** A submission may have created a task: look for it upstream before ever sending again. */
  | { action: 'reconcile' }
  /** End the prediction FAILED with this error. */
  | { action: 'fail'; error: string }
  /** The account is unusable: pause all submissions and polls; the prediction stays as it is. */
  | { action: 'pauseAccount' };

/**
 * The failure decision, in one place and free of I/O. `expired` means the prediction is past its
 * age limit: whatever retry would follow becomes a final failure instead, except where upstream
 * may hold a task we have not found yet (reconciliation judges expiry itself, after one more look).
 */
export function decideFailure(step: Step, cls: FailureClass, message: string, expired: boolean, giveUp: (what: string) => string): Decision {
  if (cls === 'account') return { action: 'pauseAccount' };
  if (step === 'submission') {
    if (cls === 'rejected' || cls === 'gone') return { action: 'fail', error: `upstream rejected the submission: ${message}` };
    if (cls === 'uncertain') return { action: 'reconcile' };
  }
  if (step === 'poll' && cls === 'gone') return { action: 'fail', error: `upstream no longer has this prediction: ${message}` };
  if (step === 'upload' && (cls === 'rejected' || cls === 'gone')) return { action: 'fail', error: `upstream refused the image upload: ${message}` };
  if (expired && step === 'reconcile') {
    // A task may exist upstream that was never found: say so, as reconciliation itself does.
    return { action: 'fail', error: `SUBMISSION_UNCERTAIN: upstream never confirmed a task for this prediction within the age limit; it may still run and be billed upstream (last error: ${message})` };
  }
  if (expired) {
    const what = step === 'poll' ? 'no final status from upstream' : 'could not submit upstream';
    return { action: 'fail', error: `${giveUp(what)} (last error: ${message})` };
  }
  return cls === 'rate' ? { action: 'retry', rateLimit: true } : { action: 'retry' };
}
