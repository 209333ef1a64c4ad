import { expect, test } from 'vitest';
import type { Clock } from '../src/clock.js';
import { nextPollDelay, type PollSchedule } from '../src/poller/schedule.js';
import { startApp, waitFor, type TestApp } from './helpers/app.js';
import { nextPollerEvent } from './helpers/events.js';
import { must } from './helpers/must.js';

const CREATE = `mutation($p: String!) { createVideo(input: { prompt: $p }) { id } }`;
const TASK_SECONDS = 180;
const PREDICTIONS = 4;
// Three sandbox minutes in three seconds of timers; schedule and sandbox share the clock.
const SPEED = 60;

/**
 * Time for the poller and the sandbox that moves only from one timer to the next, and never while
 * work is under way. A timer fires no sooner than its delay / SPEED in real time, and only once
 * `busy()` is false; its firing sets the time to exactly its deadline. So a request's real latency
 * (and a late timer on a loaded machine) adds nothing to the schedule: a poll at time T writes its
 * next poll at T + delay, as the schedule says, however slow the machine is. Held at the start
 * until `release()`.
 */
function steppedClock(speed: number): Clock & { release(busy: (nextAt: number) => boolean): void } {
  let now = Date.now();
  let seq = 0;
  let busy: ((nextAt: number) => boolean) | undefined;
  const timers: { at: number; realAt: number; seq: number; fn: () => void }[] = [];
  let driver: ReturnType<typeof setTimeout> | undefined;
  const drive = () => {
    clearTimeout(driver);
    const next = timers[0];
    if (!next) return;
    const wait = Math.max(0, next.realAt - Date.now());
    driver = setTimeout(() => {
      // A timer due at the present fires at once; moving time on waits while work is under way (or
      // while held): look again shortly.
      if (next.at > now && (!busy || busy(next.at))) {
        driver = setTimeout(drive, 2);
        return;
      }
      timers.shift();
      now = Math.max(now, next.at);
      next.fn();
      drive();
    }, wait);
  };
  return {
    now: () => new Date(now),
    setTimeout(fn, ms) {
      const timer = { at: now + ms, realAt: Date.now() + ms / speed, seq: seq++, fn };
      timers.push(timer);
      timers.sort((a, b) => a.at - b.at || a.seq - b.seq);
      drive();
      return {
        clear() {
          const i = timers.indexOf(timer);
          if (i >= 0) timers.splice(i, 1);
          drive();
        },
      };
    },
    release(isBusy) {
      busy = isBusy;
      drive();
    },
  };
}

/** GETs the poller makes on one task of TASK_SECONDS by its schedule: polls at each delay until it has finished. */
function scheduledGets(s: PollSchedule): number {
  let since = 0;
  let gets = 0;
  while (since < TASK_SECONDS * 1000) {
    since += nextPollDelay(since, s);
    gets++;
  }
  return gets;
}

async function getsPerPrediction(schedule: PollSchedule): Promise<number[]> {
  const clock = steppedClock(SPEED);
  const env = { POLL_INITIAL_MS: String(schedule.initialMs), POLL_GROWTH: String(schedule.growth), POLL_MAX_MS: String(schedule.maxMs) };
  const t: TestApp = await startApp({ SANDBOX_TASK_SECONDS: String(TASK_SECONDS), ...env }, { clock });
  // Every task starts at the same moment: the clock is held until all are submitted (no timer is involved in that).
  const submitted = new Set<string>();
  const allSubmitted = nextPollerEvent(t.app.poller, 'submitted', ({ id }) => submitted.add(id).size === PREDICTIONS);
  const ids: string[] = [];
  for (let i = 0; i < PREDICTIONS; i++) ids.push((await t.gql(CREATE, { p: `long ${i}` })).body.data.createVideo.id);
  await allSubmitted;
  // Busy while a live prediction's poll time has come (it is being polled, or is about to be: it
  // keeps that past time until its poll has written the next one), and while a prediction's next
  // poll comes before the next timer (written, but the poller has not armed its sleep for it yet:
  // the write is group-committed on a later turn, and the loop re-arms a turn or two after that).
  clock.release((nextAt) => t.app.store.due(clock.now(), 1).length > 0 || (t.app.store.nextDueAt(new Set())?.getTime() ?? Number.POSITIVE_INFINITY) < nextAt);
  const rows = await waitFor(() => ids.map((id) => must(t.app.store.findById(id))), (rs) => rs.every((r) => r.status === 'COMPLETED'), 30_000);
  return rows.map((r) => must(t.app.sandbox?.stats.resultRequests.get(must(r.upstreamId))));
}

test('the adaptive schedule spends far fewer upstream GETs on a 3-minute task than a 1-second loop', async () => {
  const adaptiveSchedule = { initialMs: 5000, growth: 0.2, maxMs: 30000 };
  const fixedSchedule = { initialMs: 1000, growth: 0, maxMs: 1000 };
  const adaptive = await getsPerPrediction(adaptiveSchedule);
  const fixedLoop = await getsPerPrediction(fixedSchedule);
  console.log(`GETs per 3-minute prediction: adaptive ${adaptive.join(', ')}; 1-second loop ${fixedLoop.join(', ')}`);
  // Each poller keeps to its own schedule exactly: one GET per second for the 1-second loop (180),
  // 16 for the adaptive one (5 s, 10 s, … growing by a fifth of the age up to 30 s apart).
  expect(scheduledGets(fixedSchedule)).toBe(TASK_SECONDS);
  expect(fixedLoop).toEqual(Array(PREDICTIONS).fill(scheduledGets(fixedSchedule)));
  expect(adaptive).toEqual(Array(PREDICTIONS).fill(scheduledGets(adaptiveSchedule)));
  for (const n of adaptive) expect(n).toBeLessThanOrEqual(TASK_SECONDS / 6);
  const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
  expect(mean(adaptive) / mean(fixedLoop)).toBeLessThan(0.2);
});
