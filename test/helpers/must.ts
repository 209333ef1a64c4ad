/**
 * The value, or a failed test that says what was missing: a test's `!` would let a missing row or
 * field surface later as an unrelated TypeError.
 */
export function must<T>(value: T | null | undefined, what = 'value'): T {
  if (value === null || value === undefined) throw new Error(`expected a ${what}, got ${value}`);
  return value;
}
