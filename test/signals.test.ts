import { expect, test } from 'vitest';
import { SAME_SIGNAL_MS, signalCounter } from '../src/signals.js';

test('the first signal, copies of it within SAME_SIGNAL_MS of it, then a second one', () => {
  let now = 5_000;
  const seen = signalCounter(() => now);
  expect(seen()).toBe('first');
  expect(seen()).toBe('copy');
  now += SAME_SIGNAL_MS - 1;
  expect(seen()).toBe('copy');
  // Counted from the first signal, not from the last copy.
  now += 1;
  expect(seen()).toBe('again');
  expect(seen()).toBe('again');
  expect(SAME_SIGNAL_MS).toBe(1000);
});

test('each counter has its own first signal', () => {
  const now = 0;
  const a = signalCounter(() => now);
  const b = signalCounter(() => now);
  expect(a()).toBe('first');
  expect(b()).toBe('first');
});
