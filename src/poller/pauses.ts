import { backoffDelay } from './schedule.js';

/**
 * Why the poller as a whole holds off: `rate`, upstream asked it to (429); `account`, the upstream
 * key cannot be used (probed until it can); `storage`, the database refused a write (retried until
 * one commits); `crash`, a pass of the loop threw.
 */
export type PauseKind = 'rate' | 'account' | 'storage' | 'crash';

export interface Pause {
  kind: PauseKind;
  /** What happened, for logs and /readyz; never carries a URL's query string. */
  reason: string;
  /** Epoch ms; no upstream request or step starts before it. */
  until: number;
  /** Consecutive holds of this kind, for the backoff. */
  streak: number;
  /** Epoch ms of the first hold of this pause. */
  since: number;
  /** Epoch ms of its latest hold (a repeat extends a pause): only work started after it can end it. */
  heldAt: number;
}

/** A pause of a kind that comes back within this long continues the backoff instead of starting over. */
const STREAK_MEMORY_MS = 10 * 60_000;

/** Poller-wide pauses, each with its own exponential backoff, cleared by the first success after it. */
export class Pauses {
  private readonly active = new Map<PauseKind, Pause>();
  /** How far each kind's backoff had got when its last pause ended. */
  private readonly ended = new Map<PauseKind, { streak: number; at: number }>();

  constructor(
    private readonly baseMs: number,
    private readonly capMs: number,
  ) {}

  /**
   * Holds off for `waitMs` when given (upstream's own Retry-After, already capped), else for the
   * kind's next backoff step; a repeat while the pause is in force keeps the step it is on.
   * @returns the pause, and whether it is new (a new pause is worth a log line; a repeat is not).
   */
  hold(kind: PauseKind, reason: string, now: number, waitMs?: number): { pause: Pause; isNew: boolean } {
    const previous = this.active.get(kind);
    let streak: number;
    let until: number;
    if (previous && now < previous.until) {
      // A repeat while the pause is still in force is the same outage seen again (the other steps
      // that were under way when Postgres restarted, say), not a retry that failed: it keeps the
      // backoff step. Counting each as a step took a 200 ms restart, failing five steps at once,
      // to a 40 s pause. Only an explicit wait (a later Retry-After) moves the end.
      streak = previous.streak;
      until = Math.max(previous.until, waitMs ? now + waitMs : 0);
    } else {
      // After the pause ran out (a failed probe or retry), or a new one: one step further. An account
      // without balance passes the free probe, fails the next paid request, and so on: a pause that
      // returns soon after it ended keeps growing instead of restarting at 1 s.
      const last = this.ended.get(kind);
      streak = (previous?.streak ?? (last && now - last.at < STREAK_MEMORY_MS ? last.streak : 0)) + 1;
      // A pause still held here has run out (previous.until <= now): its end is behind us.
      until = now + (waitMs || backoffDelay(streak - 1, this.baseMs, this.capMs));
    }
    const pause = { kind, reason, streak, since: previous?.since ?? now, heldAt: now, until };
    this.active.set(kind, pause);
    return { pause, isNew: !previous || previous.reason !== reason };
  }

  /**
   * Ends a pause. `startedAt`: when the work that proves it over was started; work started before
   * the pause's latest hold (a request already under way when upstream answered 429) proves nothing,
   * and the pause stays.
   * @returns whether a pause ended.
   */
  clear(kind: PauseKind, now = Date.now(), startedAt?: number): boolean {
    const pause = this.active.get(kind);
    if (!pause || (startedAt !== undefined && startedAt < pause.heldAt)) return false;
    this.active.delete(kind);
    this.ended.set(kind, { streak: pause.streak, at: now });
    return true;
  }

  get(kind: PauseKind): Pause | undefined {
    return this.active.get(kind);
  }

  /** The moment every pause has run out (0 when none is held). */
  until(): number {
    let until = 0;
    for (const p of this.active.values()) until = Math.max(until, p.until);
    return until;
  }

  list(): Pause[] {
    return [...this.active.values()];
  }
}
