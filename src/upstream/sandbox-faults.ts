/** Switchable fault injection. Rates are fractions in [0, 1], drawn per task or per request. */
export interface SandboxFaults {
  /** Share of new tasks that end `failed`. */
  failureRate: number;
  /** Share of new tasks that never finish (stay `processing`). */
  hangRate: number;
  /** Share of API requests answered 500. */
  serverErrorRate: number;
  /** Share of API requests that start a burst of 429s lasting `rateLimitSeconds`. */
  rateLimitRate: number;
  /** Length of a 429 burst, also sent as Retry-After. */
  rateLimitSeconds: number;
  /** Share of API requests answered only after `slowMs` (beyond the client's timeout, typically). */
  slowRate: number;
  slowMs: number;
  /** Share of API requests answered 200 with a body that is not JSON. */
  malformedRate: number;
  /** Share of submissions that create the task and then answer only after `slowMs` (past the client's timeout). */
  acceptThenStallRate: number;
  /** Share of submissions that create the task and then answer 502, as a failing proxy in front of upstream would. */
  acceptThenErrorRate: number;
  /** Set to N: every API request answers 401 for the next N seconds, as a revoked or unfunded key would. */
  unauthorizedSeconds: number;
}

export const noFaults: SandboxFaults = {
  failureRate: 0,
  hangRate: 0,
  serverErrorRate: 0,
  rateLimitRate: 0,
  rateLimitSeconds: 1,
  slowRate: 0,
  slowMs: 30_000,
  malformedRate: 0,
  acceptThenStallRate: 0,
  acceptThenErrorRate: 0,
  unauthorizedSeconds: 0,
};

/**
 * Checks a run-time change to the faults: only known settings, finite non-negative numbers, rates
 * at most 1. Returns the offending key, or undefined when the patch is fine.
 */
export function invalidFaultSetting(patch: Record<string, unknown>): string | undefined {
  return Object.entries(patch).find(
    ([k, v]) => !Object.hasOwn(noFaults, k) || typeof v !== 'number' || !Number.isFinite(v) || v < 0 || (k.endsWith('Rate') && v > 1),
  )?.[0];
}

