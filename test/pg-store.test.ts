import { sql } from 'drizzle-orm';
import pg from 'pg';
import { describe, expect, test } from 'vitest';
import { closePostgres, openPostgres, type PgDb } from '../src/db/pg/client.js';
import { createPgStore, type PgStore, type PgStoreOptions } from '../src/db/pg/index.js';
import * as pgSchema from '../src/db/pg/schema.js';
import type { PredictionRow } from '../src/db/schema.js';
import type { CreateOutcome } from '../src/db/store.js';
import { createPredictionPubSub } from '../src/pubsub.js';
import { at, newRow, T0 } from './helpers/db.js';
import { onDispose } from './helpers/dispose.js';
import { must } from './helpers/must.js';
import { usePostgres } from './helpers/postgres.js';

/**
 * What only the Postgres store has to get right: N instances on one database. Each "instance" here
 * is its own pool (its own connections) and its own createPgStore with its own instance id, and
 * their calls really run at once (Promise.all). Leases: disjoint claims, takeover after expiry,
 * fenced writes, release, cancels that win; the account's limits judged across instances; a
 * webhook's forced poll that survives the holder's write; createVideo races; the shared pause.
 */

const postgres = usePostgres();
const LEASE_MS = 60_000;

interface Instance extends PgStore {
  name: string;
  db: PgDb;
  clock: { now: Date };
  published: PredictionRow[];
}

async function instance(name: string, more: Partial<PgStoreOptions> = {}): Promise<Instance> {
  const db = await openPostgres(postgres.url(), { max: 3, applicationName: name });
  onDispose(() => closePostgres(db));
  const clock = { now: T0 };
  const pubsub = createPredictionPubSub();
  const published: PredictionRow[] = [];
  pubsub.tap('prediction:updated', (_id, row) => published.push(row));
  const store = createPgStore(db, { instanceId: name, leaseMs: LEASE_MS, limits: {}, pubsub, now: () => clock.now, ...more });
  return { ...store, name, db, clock, published };
}

async function instances(n: number, more: Partial<PgStoreOptions> = {}): Promise<Instance[]> {
  return Promise.all(Array.from({ length: n }, (_, i) => instance(`instance-${String.fromCharCode(97 + i)}`, more)));
}

/** Promise.withResolvers, which Node 20 lacks. */
function resolvers(): { promise: Promise<void>; resolve: () => void } {
  let resolve = () => {};
  const promise = new Promise<void>((r) => {
    resolve = r;
  });
  return { promise, resolve };
}

/** The lease columns, read directly. */
async function lease(db: PgDb, id: string) {
  const { rows } = await db.$client.query<{ locked_by: string | null; locked_until: Date | null; next_poll_at: Date | null; poll_requested_at: Date | null }>(
    'SELECT locked_by, locked_until, next_poll_at, poll_requested_at FROM predictions WHERE id = $1',
    [id],
  );
  return must(rows[0]);
}

/**
 * Runs `claim` while another connection holds a row lock on `lockedId`. Answers what the claim
 * returned, or `{ blocked: true }` as soon as this instance's connection is seen waiting on a lock (a
 * claim without SKIP LOCKED waits for the locker), whichever comes first; then the locker commits.
 */
async function claimPast(s: Instance, lockedId: string, claim: () => Promise<string[]>): Promise<{ claimed: string[] } | { blocked: true }> {
  const locker = new pg.Client({ connectionString: postgres.url() });
  await locker.connect();
  onDispose(() => locker.end());
  await locker.query('BEGIN');
  await locker.query('SELECT 1 FROM predictions WHERE id = $1 FOR UPDATE', [lockedId]);
  let settled = false;
  const claimed = claim()
    .then((ids) => ({ claimed: ids }))
    .finally(() => {
      settled = true;
    });
  const blocked = (async () => {
    while (!settled) {
      const { rows } = await locker.query(`SELECT 1 FROM pg_stat_activity WHERE application_name = $1 AND wait_event_type = 'Lock'`, [s.name]);
      if (rows.length) return { blocked: true as const };
      await new Promise((r) => setImmediate(r));
    }
    return undefined;
  })();
  const first = await Promise.race([claimed, blocked]);
  await locker.query('COMMIT');
  await Promise.all([claimed, blocked]);
  return must(first);
}

/** Inserts started rows (a task upstream), each due at T0 - i ms. */
async function startedRows(s: Instance, n: number, prefix = 's'): Promise<string[]> {
  const ids: string[] = [];
  for (let i = 0; i < n; i++) {
    const id = `${prefix}${i}`;
    await s.insert(newRow(id, { nextPollAt: at(-i) }));
    must(await s.lifecycleRecorder.record(id, { upstreamId: `task-${id}`, status: 'PROCESSING' }));
    ids.push(id);
  }
  return ids;
}

describe('leases on due work', () => {
  test('three instances claiming at once get disjoint sets that together are every due row, soonest first', async () => {
    const [a, b, c] = await instances(3);
    const ids = await startedRows(must(a), 30);
    // Queued and final rows are not due work; a future poll is not due yet.
    await must(a).insert(newRow('queued', { nextPollAt: at(-100) }));
    await must(a).insert(newRow('later'));
    must(await must(a).lifecycleRecorder.record('later', { upstreamId: 'task-later', nextPollAt: at(1) }));
    for (let round = 0; round < 3; round++) {
      // Each round on fresh leases: release everything first.
      await Promise.all([a, b, c].map((s) => must(s).leases.release()));
      const claims = await Promise.all([a, b, c].map((s) => must(s).leases.claimDue(T0, 12)));
      const all = claims.flat();
      expect(new Set(all).size).toBe(all.length);
      expect([...all].sort()).toEqual([...ids].sort());
      // Each instance's claim is soonest first (s29 is due earliest).
      for (const claim of claims) expect(claim).toEqual([...claim].sort((x, y) => Number(y.slice(1)) - Number(x.slice(1))));
      for (const [k, s] of [a, b, c].entries()) {
        for (const id of must(claims[k])) expect((await lease(must(s).db, id)).locked_by).toBe(`instance-${String.fromCharCode(97 + k)}`);
      }
    }
    expect(await must(a).leases.claimDue(T0, 100)).toEqual([]);
  });

  test('a row another transaction has locked (an instance mid-claim, a cancel) is skipped, never waited for: due and queued claims', async () => {
    const [a] = await instances(1);
    const ids = await startedRows(must(a), 4);
    expect(await claimPast(must(a), 's3', () => must(a).leases.claimDue(T0, 10))).toEqual({ claimed: ids.filter((id) => id !== 's3').reverse() });
    expect(await must(a).leases.claimDue(T0, 10)).toEqual(['s3']);
    for (const id of ['q0', 'q1', 'q2']) await must(a).insert(newRow(id));
    expect(await claimPast(must(a), 'q0', () => must(a).leases.claimQueued(T0, 2))).toEqual({ claimed: ['q1', 'q2'] });
  });

  test('a lease holds the row until it ends, then another instance takes it over; a fenced write of the loser changes nothing', async () => {
    const [a, b] = await instances(2);
    const [id] = await startedRows(must(a), 1);
    expect(await must(a).leases.claimDue(T0, 10)).toEqual([id]);
    expect(await lease(must(a).db, must(id))).toMatchObject({ locked_by: 'instance-a', locked_until: at(LEASE_MS) });
    expect(await must(b).leases.claimDue(at(LEASE_MS - 1), 10)).toEqual([]);
    // A stalled past its lease (or was SIGKILLed): B takes the row over once the lease has ended.
    expect(await must(b).leases.claimDue(at(LEASE_MS), 10)).toEqual([id]);
    must(a).clock.now = at(LEASE_MS + 1);
    must(a).published.length = 0; // the setup's writes
    expect(await must(a).recorder.record(must(id), { status: 'COMPLETED', nextPollAt: null })).toBeUndefined();
    expect(await must(a).recorder.reschedule(must(id), { nextPollAt: at(1) })).toBe(false);
    expect(must(a).published).toEqual([]);
    const row = must(await must(b).predictions.findById(must(id)));
    expect(row).toMatchObject({ status: 'PROCESSING', version: 2 });
    // The new holder's fenced writes go through, renew its lease, and publish.
    must(b).clock.now = at(LEASE_MS + 10);
    expect(await must(b).recorder.record(must(id), { error: 'slow' })).toMatchObject({ error: 'slow', version: 3 });
    expect(await lease(must(b).db, must(id))).toMatchObject({ locked_by: 'instance-b', locked_until: at(2 * LEASE_MS + 10) });
    expect(must(b).published.map((r) => r.version)).toEqual([3]);
  });

  test('a fenced write renews the lease; an expired lease nobody took is still its holder’s; a write needs a lease at all', async () => {
    const [a, b] = await instances(2);
    const [id, other] = (await startedRows(must(a), 2)) as [string, string];
    await must(a).leases.claimDue(T0, 1);
    const held = (await lease(must(a).db, id)).locked_by ? id : other;
    const unheld = held === id ? other : id;
    must(a).clock.now = at(50_000);
    expect(await must(a).recorder.reschedule(held, { attempts: 1 })).toBe(true);
    expect(await must(b).leases.claimDue(at(70_000), 10)).toEqual([unheld]);
    // The renewed lease ends at 110 s: past it, and with nobody having claimed it, A may still write.
    must(a).clock.now = at(120_000);
    expect(await must(a).recorder.reschedule(held, { attempts: 2 })).toBe(true);
    expect(await lease(must(a).db, held)).toMatchObject({ locked_by: 'instance-a', locked_until: at(180_000) });
    // B holds the other row: A's fenced writes to it change nothing; the unfenced (cancel) path does.
    expect(await must(a).recorder.record(unheld, { error: 'x' })).toBeUndefined();
    expect(await must(a).lifecycleRecorder.record(unheld, { status: 'CANCELED', nextPollAt: null })).toMatchObject({ status: 'CANCELED' });
    // The cancel wins: B, the holder, can no longer write to the final row.
    expect(await must(b).recorder.record(unheld, { status: 'COMPLETED' })).toBeUndefined();
    expect(await must(b).predictions.findById(unheld)).toMatchObject({ status: 'CANCELED', nextPollAt: null });
  });

  test('a claim never takes a row its own instance is still stepping, due or queued; renew extends only its own leases', async () => {
    const [a, b] = await instances(2);
    const [id] = await startedRows(must(a), 1);
    expect(await must(a).leases.claimDue(T0, 10)).toEqual([id]);
    // A's step outlives its lease; B takes the row over, finishes a step and lets it go.
    expect(await must(b).leases.claimDue(at(LEASE_MS), 10)).toEqual([id]);
    await must(b).leases.release([must(id)]);
    // A's old step is still running: a claim that named it again would make that step's fenced
    // writes valid once more (the double submission the review found). With it busy, A skips it.
    expect(await must(a).leases.claimDue(at(LEASE_MS + 1), 10, [must(id)])).toEqual([]);
    must(a).clock.now = at(LEASE_MS + 2);
    expect(await must(a).recorder.reschedule(must(id), { nextPollAt: at(LEASE_MS + 3) })).toBe(false);
    // Queued rows the same way.
    await must(a).insert(newRow('q-busy'));
    expect(await must(a).leases.claimQueued(T0, 10, ['q-busy'])).toEqual([]);
    expect(await must(a).leases.claimQueued(T0, 10)).toEqual(['q-busy']);
    // Renew pushes out A's own lease only: not a row B holds.
    expect(await must(b).leases.claimDue(at(LEASE_MS + 1), 10)).toEqual([id]);
    await must(a).leases.renew(['q-busy', must(id)], at(10));
    expect(await lease(must(a).db, 'q-busy')).toMatchObject({ locked_by: 'instance-a', locked_until: at(10 + LEASE_MS) });
    expect(await lease(must(a).db, must(id))).toMatchObject({ locked_by: 'instance-b', locked_until: at(2 * LEASE_MS + 1) });
  });

  test('release ends this instance’s leases (these, or all) and no one else’s', async () => {
    const [a, b] = await instances(2);
    const ids = await startedRows(must(a), 4);
    const mine = await must(a).leases.claimDue(T0, 3);
    const theirs = await must(b).leases.claimDue(T0, 3);
    expect(mine).toHaveLength(3);
    expect(theirs).toHaveLength(1);
    await must(a).leases.release([must(mine[0])]);
    expect(await must(b).leases.claimDue(T0, 10)).toEqual([mine[0]]);
    // A releasing everything does not touch B's leases.
    await must(a).leases.release();
    await must(a).leases.release([]);
    expect((await must(b).leases.claimDue(T0, 10)).sort()).toEqual(mine.slice(1).sort());
    for (const id of ids) expect((await lease(must(a).db, id)).locked_by).toBe('instance-b');
    // A write fenced by a released lease changes nothing.
    expect(await must(a).recorder.reschedule(must(mine[1]), { attempts: 9 })).toBe(false);
    await must(b).leases.release(ids);
    for (const id of ids) expect(await lease(must(a).db, id)).toMatchObject({ locked_by: null, locked_until: null });
  });
});

describe('a webhook’s forced poll while another instance holds the row', () => {
  test('survives the holder’s next write of its own schedule, and is due once the holder releases', async () => {
    const [a, b] = await instances(2);
    const [id] = (await startedRows(must(a), 1)) as [string];
    expect(await must(a).leases.claimDue(T0, 10)).toEqual([id]);
    // The webhook lands on B mid-step: the row is already past due, so only the request can keep it.
    await must(b).predictions.makeDue(id, at(1000));
    expect((await lease(must(a).db, id)).poll_requested_at).toEqual(at(1000));
    // A's poll answered "still running": it schedules the next poll 30 s out.
    must(a).clock.now = at(1500);
    expect(await must(a).recorder.reschedule(id, { pollCount: 1, nextPollAt: at(30_000) })).toBe(true);
    expect((await lease(must(a).db, id)).next_poll_at).toEqual(at(1000));
    await must(a).leases.release([id]);
    expect(await must(b).leases.claimDue(at(2000), 10)).toEqual([id]);
    // The claim served the request: the next schedule written is kept as it is.
    expect((await lease(must(b).db, id)).poll_requested_at).toBeNull();
    expect(await must(b).recorder.reschedule(id, { nextPollAt: at(30_000) })).toBe(true);
    expect((await lease(must(b).db, id)).next_poll_at).toEqual(at(30_000));
  });

  test('the instance that takes a row over from a dead holder serves the request made before its claim, and keeps its own schedule', async () => {
    const [a, b] = await instances(2);
    const [id] = (await startedRows(must(a), 1)) as [string];
    expect(await must(a).leases.claimDue(T0, 10)).toEqual([id]);
    await must(b).predictions.makeDue(id, at(1000));
    // A dies holding the lease; B takes the row over when it ends and polls upstream after the request.
    expect(await must(b).leases.claimDue(at(LEASE_MS), 10)).toEqual([id]);
    expect((await lease(must(b).db, id)).poll_requested_at).toBeNull();
    must(b).clock.now = at(LEASE_MS + 100);
    expect(await must(b).recorder.reschedule(id, { nextPollAt: at(LEASE_MS + 30_000) })).toBe(true);
    expect((await lease(must(b).db, id)).next_poll_at).toEqual(at(LEASE_MS + 30_000));
  });

  test('a row that ended while a request was pending stays final: neither its write nor the release brings the poll back', async () => {
    const [a, b] = await instances(2);
    const [done, canceled] = (await startedRows(must(a), 2)) as [string, string];
    expect((await must(a).leases.claimDue(T0, 10)).sort()).toEqual([done, canceled].sort());
    for (const id of [done, canceled]) await must(b).predictions.makeDue(id, at(1000));
    expect(await must(a).recorder.record(done, { status: 'COMPLETED', nextPollAt: null, completedAt: at(1100) })).toMatchObject({ nextPollAt: null });
    expect(await must(b).lifecycleRecorder.record(canceled, { status: 'CANCELED', nextPollAt: null })).toMatchObject({ nextPollAt: null });
    await must(a).leases.release();
    for (const id of [done, canceled]) expect(await lease(must(a).db, id)).toMatchObject({ next_poll_at: null, locked_by: null });
    expect(await must(b).leases.claimDue(at(LEASE_MS * 2), 10)).toEqual([]);
  });

  test('a step that writes no schedule still leaves the row due at the request; a row no one holds keeps no request', async () => {
    const [a, b] = await instances(2);
    const [id, free] = (await startedRows(must(a), 2)) as [string, string];
    must(await must(a).lifecycleRecorder.record(id, { nextPollAt: at(-10) }));
    must(await must(a).lifecycleRecorder.record(free, { nextPollAt: at(60_000) }));
    expect(await must(a).leases.claimDue(T0, 1)).toEqual([id]);
    // A's write of a later schedule comes first, the webhook after: makeDue pulls it forward itself.
    must(a).clock.now = at(100);
    await must(a).recorder.reschedule(id, { nextPollAt: at(40_000) });
    await must(b).predictions.makeDue(id, at(1000));
    await must(b).predictions.makeDue(free, at(1000));
    expect(await lease(must(a).db, free)).toMatchObject({ next_poll_at: at(1000), poll_requested_at: null });
    await must(a).leases.release();
    expect(await lease(must(a).db, id)).toMatchObject({ next_poll_at: at(1000), locked_by: null, poll_requested_at: null });
    expect((await must(b).leases.claimDue(at(1000), 10)).sort()).toEqual([free, id].sort());
    // An unfenced write of a later schedule (no fold there) while a request is pending: release folds it.
    await must(a).predictions.makeDue(id, at(1500));
    must(await must(a).lifecycleRecorder.reschedule(id, { nextPollAt: at(50_000) }));
    expect(await lease(must(a).db, id)).toMatchObject({ next_poll_at: at(50_000), poll_requested_at: at(1500) });
    await must(b).leases.release([id]);
    expect(await lease(must(a).db, id)).toMatchObject({ next_poll_at: at(1500), locked_by: null, poll_requested_at: null });
  });
});

describe('queue claims judge the account’s limits across instances', () => {
  /** What a step does after its claim: writes its submission intent (fenced), then upstream's answer. */
  async function submit(s: Instance, id: string, now: Date): Promise<void> {
    s.clock.now = now;
    expect(await s.recorder.reschedule(id, { submitAttempts: 1, submitStartedAt: now })).toBe(true);
    expect(await s.recorder.record(id, { upstreamId: `task-${id}`, submittedAt: now, submitStartedAt: null })).toBeDefined();
    await s.leases.release([id]);
  }

  async function inFlight(db: PgDb): Promise<number> {
    return must(
      (
        await db.$client.query<{ n: number }>(
          `SELECT count(*)::int AS n FROM predictions WHERE status IN ('CREATED', 'PROCESSING') AND (upstream_id IS NOT NULL OR submit_started_at IS NOT NULL)`,
        )
      ).rows[0],
    ).n;
  }

  test('three instances claiming at once, again and again, never have more than maxConcurrent in flight, in fair order', async () => {
    const all = await instances(3, { limits: { maxConcurrent: 2 } });
    const [a] = all as [Instance];
    const queued: string[] = [];
    for (let i = 0; i < 10; i++) {
      const id = `q${i}`;
      await a.insert(newRow(id, { owner: i % 2 ? 'B' : 'A' }));
      queued.push(id);
    }
    // Fair order: A and B take turns (q0, q1, q2, …), which here is insertion order.
    const order: string[] = [];
    for (let round = 0; round < 5; round++) {
      const now = at(round * 1000);
      const claims = await Promise.all(all.map((s) => s.leases.claimQueued(now, 10)));
      const claimed = claims.flat();
      expect(claimed).toHaveLength(2);
      expect(new Set(claimed).size).toBe(2);
      order.push(...[...claimed].sort((x, y) => Number(x.slice(1)) - Number(y.slice(1))));
      // Another claim while those are leased but not yet submitted: nothing is free.
      expect((await Promise.all(all.map((s) => s.leases.claimQueued(now, 10)))).flat()).toEqual([]);
      for (const [k, claim] of claims.entries()) for (const id of claim) await submit(must(all[k]), id, now);
      expect(await inFlight(a.db)).toBe(2);
      expect((await Promise.all(all.map((s) => s.leases.claimQueued(now, 10)))).flat()).toEqual([]);
      // Both tasks finish.
      for (const id of claimed) must(await a.lifecycleRecorder.record(id, { status: 'COMPLETED', nextPollAt: null, completedAt: now }));
    }
    expect(order).toEqual(queued);
  });

  test('a claim leased but never submitted holds its place until its lease ends; a claim takes no more than its limit', async () => {
    const [a, b] = await instances(2, { limits: { maxConcurrent: 2 } });
    for (let i = 0; i < 4; i++) await must(a).insert(newRow(`q${i}`));
    expect(await must(a).leases.claimQueued(T0, 1)).toEqual(['q0']);
    expect(await must(b).leases.claimQueued(T0, 5)).toEqual(['q1']);
    expect(await must(b).leases.claimQueued(at(LEASE_MS - 1), 5)).toEqual([]);
    // Both leases ended with no submission written (their instances died): the places are free again,
    // and the rows themselves are claimable again, first in the queue.
    expect(await must(b).leases.claimQueued(at(LEASE_MS), 5)).toEqual(['q0', 'q1']);
  });

  test('three instances respect the per-minute budget together', async () => {
    const all = await instances(3, { limits: { maxPerMinute: 2 } });
    const [a] = all as [Instance];
    for (let i = 0; i < 6; i++) await a.insert(newRow(`q${i}`));
    const first = await Promise.all(all.map((s) => s.leases.claimQueued(T0, 10)));
    expect(first.flat()).toHaveLength(2);
    for (const [k, claim] of first.entries()) for (const id of claim) await submit(must(all[k]), id, T0);
    // Accepted tasks that finish at once still count in the window: it is about what was sent.
    for (const id of first.flat()) must(await a.lifecycleRecorder.record(id, { status: 'COMPLETED', nextPollAt: null, completedAt: T0 }));
    expect((await Promise.all(all.map((s) => s.leases.claimQueued(at(30_000), 10)))).flat()).toEqual([]);
    expect((await Promise.all(all.map((s) => s.leases.claimQueued(at(60_000), 10)))).flat()).toEqual([]);
    expect((await Promise.all(all.map((s) => s.leases.claimQueued(at(60_001), 10)))).flat()).toHaveLength(2);
  });

  test('a row back in the queue whose last submission is in the window counts once when leased again', async () => {
    const [a, b] = await instances(2, { limits: { maxPerMinute: 2 } });
    await must(a).insert(newRow('resent'));
    await must(a).insert(newRow('q1'));
    await must(a).insert(newRow('q2'));
    // Sent at T0, then found not to exist upstream: back in the queue, its submission still in the window.
    must(await must(a).lifecycleRecorder.record('resent', { submittedAt: T0 }));
    expect(await must(a).leases.claimQueued(at(1000), 1)).toEqual(['resent']);
    expect(await must(b).leases.claimQueued(at(1000), 10)).toEqual(['q1']);
    expect(await must(b).leases.claimQueued(at(1000), 10)).toEqual([]);
  });

  test('an account pause admits nothing on any instance until it ends', async () => {
    const [a, b] = await instances(2);
    await must(a).insert(newRow('q0'));
    await must(a).pause.hold(at(2000), 'Retry-After: 2');
    expect(await must(b).leases.claimQueued(at(1999), 10)).toEqual([]);
    expect(await must(b).leases.claimQueued(at(2000), 10)).toEqual(['q0']);
  });
});

describe('createVideo across instances', () => {
  const create = (s: Instance, id: string, more: object) => s.creator.create({ row: { ...newRow(id), owner: 'A' }, ...more }, T0);
  const kinds = (outcomes: CreateOutcome[]) => outcomes.map((o) => o.kind).sort();

  test('twins with one key on two instances: exactly one row is created, the other replays it (or is refused for another input)', async () => {
    const [a, b] = await instances(2);
    for (let round = 0; round < 8; round++) {
      const idempotency = { key: `k${round}`, inputHash: 'same' };
      const outcomes = await Promise.all([create(must(a), `a${round}`, { idempotency }), create(must(b), `b${round}`, { idempotency })]);
      expect(kinds(outcomes)).toEqual(['created', 'replayed']);
      const ids = outcomes.map((o) => (o.kind === 'created' || o.kind === 'replayed' ? o.row.id : undefined));
      expect(ids[0]).toBe(ids[1]);
    }
    for (let round = 0; round < 8; round++) {
      const outcomes = await Promise.all([
        create(must(a), `c${round}`, { idempotency: { key: `d${round}`, inputHash: 'one' } }),
        create(must(b), `d${round}`, { idempotency: { key: `d${round}`, inputHash: 'another' } }),
      ]);
      expect(kinds(outcomes)).toEqual(['conflict', 'created']);
    }
    expect(await must(a).db.$count(pgSchema.predictions)).toBe(16);
    expect(await must(a).db.$count(pgSchema.idempotencyKeys)).toBe(16);
  });

  test('the in-flight quota holds across instances', async () => {
    const all = await instances(3);
    for (let round = 0; round < 6; round++) {
      const outcomes = await Promise.all(all.map((s, k) => create(s, `r${round}-${k}`, { maxInFlight: round + 1 })));
      expect(kinds(outcomes)).toEqual(['created', 'tooManyInFlight', 'tooManyInFlight']);
      expect(await must(all[0]).predictions.countUnfinished('A')).toBe(round + 1);
    }
  });
});

describe('the recorder’s hook and the shared pause', () => {
  test('the hook runs inside the write’s transaction: nothing is published or visible before it ends, and its failure undoes the write', async () => {
    const gate = resolvers();
    const entered = resolvers();
    let fail = false;
    const s = await instance('hooked', {
      hook: async (tx, row) => {
        await tx.execute(sql`SELECT 1`);
        entered.resolve();
        await gate.promise;
        if (fail) throw new Error(`outbox refused ${row.id}`);
        // Nothing to run after the commit (a hook may return such work).
        return undefined;
      },
    });
    const reader = new pg.Pool({ connectionString: postgres.url(), max: 1 });
    onDispose(() => reader.end());
    const committed = async () => must((await reader.query<{ version: number; error: string | null }>(`SELECT version, error FROM predictions WHERE id = 'p'`)).rows[0]);
    await s.insert(newRow('p'));
    const written = s.lifecycleRecorder.record('p', { error: 'first' });
    await entered.promise;
    expect(s.published).toEqual([]);
    expect(await committed()).toEqual({ version: 1, error: null });
    gate.resolve();
    expect(await written).toMatchObject({ version: 2, error: 'first' });
    expect(s.published.map((r) => r.version)).toEqual([2]);
    expect(await committed()).toEqual({ version: 2, error: 'first' });
    fail = true;
    await expect(s.lifecycleRecorder.record('p', { error: 'second' })).rejects.toThrow('outbox refused p');
    expect(await committed()).toEqual({ version: 2, error: 'first' });
    expect(s.published).toHaveLength(1);
  });

  test('a hold only extends the pause, seen by every instance; current(now) is the pause in force', async () => {
    const [a, b] = await instances(2);
    expect(await must(b).pause.current(T0)).toBeUndefined();
    await must(a).pause.hold(at(5000), 'rate limited');
    await must(b).pause.hold(at(2000), 'shorter');
    expect(await must(b).pause.current(T0)).toEqual({ until: at(5000), reason: 'rate limited' });
    await must(b).pause.hold(at(9000), 'longer');
    expect(await must(a).pause.current(at(8999))).toEqual({ until: at(9000), reason: 'longer' });
    expect(await must(a).pause.current(at(9000))).toBeUndefined();
    // Concurrent holds from three instances: the longest wins whatever the order.
    const [c] = await instances(1);
    await Promise.all([must(a).pause.hold(at(20_000), 'a'), must(b).pause.hold(at(30_000), 'b'), must(c).pause.hold(at(10_000), 'c')]);
    expect(await must(c).pause.current(T0)).toEqual({ until: at(30_000), reason: 'b' });
  });
});
