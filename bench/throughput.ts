import autocannon from 'autocannon';
import type { BenchRow } from './report.js';
import { startBareYoga, startCinegraph, type BenchServer } from './servers.js';

const CONNECTIONS = 50;
const WARMUP_S = 2;
const DURATION_S = 8;

const CREATE = 'mutation($p: String!) { createVideo(input: { prompt: $p }) { id status createdAt } }';
const GET = 'query($id: ID!) { prediction(id: $id) { id status upstreamId input { prompt hasImage } outputs createdAt updatedAt } }';

// Tasks that never finish during the run and a first poll far away: what we measure is the
// request path (plus one background submission per createVideo, which a real deployment also pays).
const quietPoller = { SANDBOX_TASK_SECONDS: '3600', POLL_INITIAL_MS: '600000', POLL_GROWTH: '0', POLL_MAX_MS: '600000' };

interface Load {
  rps: number;
  non2xx: number;
  errors: number;
  p99: number;
}

async function load(url: string, body: unknown, seconds: number): Promise<Load> {
  const r = await autocannon({
    url: `${url}/graphql`,
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'application/graphql-response+json' },
    body: JSON.stringify(body),
    connections: CONNECTIONS,
    duration: seconds,
  });
  return { rps: r.requests.average, non2xx: r.non2xx, errors: r.errors + r.timeouts, p99: r.latency.p99 };
}

/** A short warm-up (JIT, connection pools, SQLite page cache) and then the measured run. */
async function measure(url: string, body: unknown): Promise<Load> {
  await load(url, body, WARMUP_S);
  return load(url, body, DURATION_S);
}

async function gql<T>(url: string, query: string, variables: Record<string, unknown>): Promise<T> {
  const res = await fetch(`${url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ query, variables }) });
  const json = (await res.json()) as { data: T; errors?: unknown };
  // A 200 with errors would make req/s meaningless (validation failures are cheap), so check one first.
  if (!res.ok || json.errors) throw new Error(`sample request failed: ${res.status} ${JSON.stringify(json)}`);
  return json.data;
}

function row(name: string, value: Load, base: Load, min: number): BenchRow {
  const ratio = value.rps / base.rps;
  const bad = value.non2xx + value.errors + base.non2xx + base.errors;
  return {
    name,
    value: value.rps,
    unit: 'req/s',
    baseline: { name: 'bare yoga', value: base.rps },
    ratio,
    target: `>= ${min}`,
    pass: ratio >= min && bad === 0,
    note: `non2xx ${value.non2xx}/${base.non2xx} (ours/bare), errors ${value.errors}/${base.errors}, p99 ${value.p99}/${base.p99} ms`,
  };
}

/**
 * A gateway whose upstream is a second process (a cinegraph serving only its sandbox), as the real
 * upstream is a remote service: the gateway pays for submitting each createVideo upstream, but
 * not for the upstream's own request handling.
 */
async function withGateway<T>(fn: (url: string) => Promise<T>): Promise<T> {
  return withServer(
    () => startCinegraph(quietPoller),
    (upstreamUrl) => withServer(() => startCinegraph({ ...quietPoller, WAVESPEED_API_KEY: 'bench', WAVESPEED_BASE_URL: `${upstreamUrl}/sandbox` }), fn),
  );
}

async function withServer<T>(start: () => Promise<BenchServer>, fn: (url: string) => Promise<T>): Promise<T> {
  const server = await start();
  try {
    return await fn(server.url);
  } finally {
    await server.stop();
  }
}

/** Bare yoga measured right before and right after ours, averaged, so drift on the machine cancels. */
async function sideBySide(bareUrl: string, ours: () => Promise<Load>): Promise<[Load, Load]> {
  const bare = { query: '{ __typename }' };
  const before = await measure(bareUrl, bare);
  const value = await ours();
  const after = await measure(bareUrl, bare);
  const mean = (a: number, b: number) => (a + b) / 2;
  return [
    value,
    { rps: mean(before.rps, after.rps), non2xx: before.non2xx + after.non2xx, errors: before.errors + after.errors, p99: Math.max(before.p99, after.p99) },
  ];
}

export async function run(): Promise<BenchRow[]> {
  const rows: BenchRow[] = [];
  // Fresh servers per pair, so the mutation run's leftover submissions do not load the next run.
  await withServer(startBareYoga, async (bareUrl) => {
    const [ours, base] = await sideBySide(bareUrl, () =>
      withGateway(async (url) => {
        await gql(url, CREATE, { p: 'warm-up check' });
        return measure(url, { query: CREATE, variables: { p: 'A paper boat drifting down a rainy street, cinematic' } });
      }),
    );
    rows.push(row('createVideo mutation throughput', ours, base, 0.5));

    const [ours2, base2] = await sideBySide(bareUrl, () =>
      withServer(
        () => startCinegraph(quietPoller),
        async (url) => {
          const { id } = (await gql<{ createVideo: { id: string } }>(url, CREATE, { p: 'a cat surfing' })).createVideo;
          await gql(url, GET, { id });
          return measure(url, { query: GET, variables: { id } });
        },
      ),
    );
    rows.push(row('prediction(id) query throughput', ours2, base2, 0.7));
  });
  return rows;
}
