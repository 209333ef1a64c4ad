/**
 * How long after the first SIGINT or SIGTERM another one is taken as the same signal delivered
 * again rather than a second request. One Ctrl-C or one supervisor's stop can reach the server more
 * than once: npm forwards SIGINT and SIGTERM to its script's process, which under a shell that execs
 * it (bash as `sh`) is the server, besides the terminal's own SIGINT; tsx's CLI relays a signal its
 * child has not acknowledged within 30 ms, which a busy event loop does not (issue 18's broadcast
 * holds the loop for ~150 ms). Those copies come within milliseconds; a person pressing Ctrl-C again
 * takes longer than this.
 */
export const SAME_SIGNAL_MS = 1000;

/** The first signal, a copy of it (within SAME_SIGNAL_MS of the first), or a second one. */
export type SignalSeen = 'first' | 'copy' | 'again';

/** Classifies each signal as it arrives (see SAME_SIGNAL_MS). `now` is injectable for tests. */
export function signalCounter(now: () => number = Date.now): () => SignalSeen {
  let firstAt: number | undefined;
  return () => {
    const at = now();
    if (firstAt === undefined) {
      firstAt = at;
      return 'first';
    }
    return at - firstAt < SAME_SIGNAL_MS ? 'copy' : 'again';
  };
}
