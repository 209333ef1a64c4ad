import { vi } from 'vitest';

/**
 * Runs `act` and reports the timers of `delayMs` it set (setTimeout, or setInterval with
 * `interval`) and whether each was cleared by the time it settled: a way to show that code gives
 * its own timer back, without counting the process's timers (which races every other timer).
 */
export async function timersOf(delayMs: number, act: () => Promise<unknown>, { interval = false } = {}): Promise<{ set: number; allCleared: boolean }> {
  const set = interval ? vi.spyOn(globalThis, 'setInterval') : vi.spyOn(globalThis, 'setTimeout');
  const cleared = interval ? vi.spyOn(globalThis, 'clearInterval') : vi.spyOn(globalThis, 'clearTimeout');
  try {
    await act();
    const own = set.mock.calls.flatMap(([, ms], i) => (ms === delayMs ? [set.mock.results[i]?.value] : []));
    const gone = new Set(cleared.mock.calls.map(([t]) => t));
    return { set: own.length, allCleared: own.every((t) => gone.has(t)) };
  } finally {
    set.mockRestore();
    cleared.mockRestore();
  }
}
