import { describe, expect, test } from 'vitest';
import { patchFromUpstream } from '../src/poller/mapping.js';
import { backoffDelay, nextPollDelay } from '../src/poller/schedule.js';

const up = (status: string, error?: string) => ({ id: 'u', model: 'm', status, outputs: [], hasNsfwContents: [], error });

describe('status mapping', () => {
  test.each([
    ['created', 'CREATED', null],
    ['processing', 'PROCESSING', null],
    ['completed', 'COMPLETED', null],
    ['failed', 'FAILED', 'upstream reported the prediction failed without a reason'],
    ['cancelled', 'FAILED', 'upstream cancelled'],
    ['timeout', 'FAILED', 'upstream timeout'],
    ['deleted', 'FAILED', 'upstream deleted'],
  ])('%s → %s', (upstream, status, error) => {
    expect(patchFromUpstream(up(upstream))).toMatchObject({ status, error });
  });

  test('keeps the upstream reason', () => {
    expect(patchFromUpstream(up('failed', 'nsfw prompt'))?.error).toBe('nsfw prompt');
    expect(patchFromUpstream(up('timeout', 'took too long'))?.error).toBe('upstream timeout: took too long');
  });

  test('an unknown status yields no patch', () => {
    expect(patchFromUpstream(up('queued'))).toBeUndefined();
  });
});

describe('schedule', () => {
  const s = { initialMs: 2000, growth: 0.2, maxMs: 30_000 };
  test('starts at the initial delay, grows with age, stops at the cap', () => {
    expect(nextPollDelay(0, s)).toBe(2000);
    expect(nextPollDelay(60_000, s)).toBe(12_000);
    expect(nextPollDelay(600_000, s)).toBe(30_000);
  });

  test('a 3-minute task costs far fewer GETs than a 1-second loop', () => {
    let t = 0;
    let gets = 0;
    while (t < 180_000) {
      t += nextPollDelay(t, s);
      gets++;
    }
    expect(gets).toBeLessThan(180 / 5);
  });

  test('backoff doubles per attempt within jitter and respects the cap', () => {
    expect(backoffDelay(0, 500, 10_000, () => 0)).toBe(250);
    expect(backoffDelay(0, 500, 10_000, () => 1)).toBe(500);
    expect(backoffDelay(3, 500, 10_000, () => 1)).toBe(4000);
    expect(backoffDelay(20, 500, 10_000, () => 1)).toBe(10_000);
  });
});
