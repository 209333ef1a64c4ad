/**
 * Events between gateway instances (issue 16). A committed change of a prediction is announced as
 * its id and version only — Postgres NOTIFY payloads are capped at 8,000 bytes, and a row can be
 * bigger — and every other instance re-reads the row and fans it out through its own pubsub
 * (bus/bridge.ts). The announcement is a hint, never the data: a lost one is made up by the
 * bridge's resync, which re-reads what local subscribers watch on every reconnect and every
 * SUBSCRIPTION_RESYNC_MS; `version` lets subscribers drop what they have already seen.
 */
export interface Change {
  id: string;
  version: number;
}

export interface BusHandlers {
  /** A change announced by another instance. */
  change(change: Change): void;
  /**
   * The bus is connected again after a loss: announcements made meanwhile are gone, so whatever
   * local subscribers watch must be read again. Not called for the first connection.
   */
  reconnected(): void;
}

export interface ChangeBus {
  /** Connects and starts delivering other instances' changes to `handlers`; resolves once listening. */
  start(handlers: BusHandlers): Promise<void>;
  /**
   * Tells the other instances that a change has committed. Never throws: a change whose
   * announcement is lost reaches them through the resync.
   */
  announce(change: Change): Promise<void>;
  close(): Promise<void>;
}

/** The bus channel: one per deployment (all instances on one database or Redis share it). */
export const CHANNEL = 'cinegraph_predictions';

/** The announcement on the wire: tiny, with the sender so an instance can skip its own. */
export function encodeChange(change: Change, instanceId: string): string {
  return JSON.stringify({ i: change.id, v: change.version, o: instanceId });
}

/** The change in an announcement, or undefined for a malformed one or one this instance sent. */
export function decodeChange(payload: string, instanceId: string): Change | undefined {
  let parsed: unknown;
  try {
    parsed = JSON.parse(payload);
  } catch {
    return undefined;
  }
  if (typeof parsed !== 'object' || parsed === null) return undefined;
  const { i, v, o } = parsed as Record<string, unknown>;
  if (typeof i !== 'string' || !i || typeof v !== 'number' || !Number.isSafeInteger(v) || v < 1 || typeof o !== 'string') return undefined;
  if (o === instanceId) return undefined;
  return { id: i, version: v };
}

/** Reconnect delays: quick at first, then at most `maxMs` apart. */
export function reconnectDelay(attempt: number, maxMs = 2000): number {
  return Math.min(maxMs, 50 * 2 ** Math.min(attempt, 10));
}
