import { randomBytes } from 'node:crypto';
import { MODEL } from './wavespeed.js';

/** c: completes, f: fails, h: hangs forever. */
export type Fate = 'c' | 'f' | 'h';

/** Upstream deletes predictions and outputs after 7 days; so does the sandbox. */
export const RETENTION_MS = 7 * 24 * 3600 * 1000;

/**
 * A sandbox task id carries the task's whole life: creation time, duration and fate. Nothing else
 * is stored, which is why tasks survive a restart of the server.
 */
export function encodeTaskId(createdAt: number, durationMs: number, fate: Fate): string {
  return `sbx-${createdAt.toString(36)}-${durationMs.toString(36)}-${fate}-${randomBytes(6).toString('hex')}`;
}

export function decodeTaskId(id: string): { createdAt: number; durationMs: number; fate: Fate } | undefined {
  const m = /^sbx-([0-9a-z]+)-([0-9a-z]+)-([cfh])-[0-9a-f]{12}$/.exec(id);
  if (!m) return undefined;
  const [, createdAt = '', durationMs = '', fate] = m; // the pattern matched, so every group is there
  return { createdAt: parseInt(createdAt, 36), durationMs: parseInt(durationMs, 36), fate: fate as Fate };
}

/** The v3 prediction record of a task as it stands at `now`. */
export function taskRecord(id: string, now: number, mountUrl: string) {
  const task = decodeTaskId(id);
  if (!task) throw new Error(`not a sandbox task id: ${id}`);
  const elapsed = now - task.createdAt;
  const finished = elapsed >= task.durationMs && task.fate !== 'h';
  const status = finished ? (task.fate === 'f' ? 'failed' : 'completed') : elapsed >= task.durationMs * 0.2 ? 'processing' : 'created';
  const completed = status === 'completed';
  return {
    id,
    model: MODEL,
    outputs: completed ? [`${mountUrl}/media/${id}.mp4`] : [],
    urls: { get: `${mountUrl}/api/v3/predictions/${id}/result` },
    has_nsfw_contents: completed ? [false] : [],
    status,
    created_at: new Date(task.createdAt).toISOString(),
    error: status === 'failed' ? 'sandbox: injected task failure' : '',
    timings: { inference: completed ? Math.round(task.durationMs * 0.8) : 0 },
  };
}
