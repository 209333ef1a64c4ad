import { type Clock, systemClock } from '../../src/clock.js';

/**
 * Time for the poller and the sandbox that stands still until `release()`, then runs on from where
 * it stood: a task submitted while it is held stays upstream's 'created' (and ours CREATED) however
 * slow the machine is, and afterwards lives its whole life in order.
 */
export function heldClock(): Clock & { release(): void } {
  const heldAt = Date.now();
  let lag: number | undefined;
  return {
    now: () => new Date(lag === undefined ? heldAt : Date.now() - lag),
    setTimeout: systemClock.setTimeout,
    release() {
      lag ??= Date.now() - heldAt;
    },
  };
}
