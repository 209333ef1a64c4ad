/** Time as the poller and the sandbox see it. Injected so tests and benchmarks can run minutes in seconds. */
export interface Clock {
  now(): Date;
  /** Calls `fn` after `ms` of this clock's time. */
  setTimeout(fn: () => void, ms: number): { clear(): void };
}

export const systemClock: Clock = {
  now: () => new Date(),
  setTimeout(fn, ms) {
    const t = setTimeout(fn, ms);
    return { clear: () => clearTimeout(t) };
  },
};

/**
 * A clock running `factor` times faster than the wall clock from now on: with 60, a 3-minute
 * sandbox task and its whole polling schedule play out in 3 seconds, in the same proportions.
 * Upstream request timeouts stay in real time: they are about the network, not the schedule.
 */
export function scaledClock(factor: number, origin = Date.now()): Clock {
  return {
    now: () => new Date(origin + (Date.now() - origin) * factor),
    setTimeout(fn, ms) {
      const t = setTimeout(fn, ms / factor);
      return { clear: () => clearTimeout(t) };
    },
  };
}
