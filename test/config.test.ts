import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, expect, test } from 'vitest';
import { ConfigError, loadConfig, MAX_WORKERS } from '../src/config.js';

describe('configuration', () => {
  test('defaults: loopback, port 4000, ./data, the sandbox when no key is set', () => {
    const c = loadConfig({});
    expect(c).toMatchObject({ host: '127.0.0.1', port: 4000, publicUrl: undefined, upstream: { baseUrl: undefined, apiKey: 'sandbox' } });
    expect(c.dataDir).toMatch(/\/data$/);
    expect(c.sandbox).toMatchObject({ taskSeconds: 8 });
  });

  test('a key switches to the real service and unmounts the sandbox; a base URL overrides', () => {
    expect(loadConfig({ WAVESPEED_API_KEY: 'k' })).toMatchObject({ upstream: { baseUrl: 'https://api.wavespeed.ai', apiKey: 'k' }, sandbox: undefined });
    expect(loadConfig({ WAVESPEED_API_KEY: 'k', WAVESPEED_BASE_URL: 'http://127.0.0.1:9/x' }).upstream.baseUrl).toBe('http://127.0.0.1:9/x');
    expect(loadConfig({ WAVESPEED_API_KEY: '  ' }).sandbox).toBeDefined();
  });

  test.each([
    [{ PORT: 'abc' }, 'PORT'],
    [{ PORT: '70000' }, 'PORT'],
    [{ PORT: '-1' }, 'PORT'],
    [{ HOST: '' }, 'HOST'],
    [{ LOG_LEVEL: 'loud' }, 'LOG_LEVEL'],
    [{ PUBLIC_URL: 'not a url' }, 'PUBLIC_URL'],
    [{ WAVESPEED_BASE_URL: 'ftp//nope' }, 'WAVESPEED_BASE_URL'],
    [{ SANDBOX_FAILURE_RATE: '1.5' }, 'SANDBOX_FAILURE_RATE'],
    [{ SANDBOX_ERROR_RATE: '-0.1' }, 'SANDBOX_ERROR_RATE'],
    [{ POLL_INITIAL_MS: '60000', POLL_MAX_MS: '1000' }, 'POLL_INITIAL_MS: must not exceed POLL_MAX_MS'],
    [{ POLL_CONCURRENCY: '0' }, 'POLL_CONCURRENCY'],
    [{ KEEP_OUTPUTS: 'maybe' }, 'KEEP_OUTPUTS'],
    [{ MAX_PREDICTION_AGE_SECONDS: '1.5' }, 'MAX_PREDICTION_AGE_SECONDS'],
    [{ RETRY_AFTER_MAX_MS: '-1' }, 'RETRY_AFTER_MAX_MS'],
    [{ RETRY_AFTER_MAX_MS: 'soon' }, 'RETRY_AFTER_MAX_MS'],
    [{ MAX_SUBMISSIONS_PER_PREDICTION: '0' }, 'MAX_SUBMISSIONS_PER_PREDICTION'],
    [{ MAX_SUBMISSIONS_PER_PREDICTION: '2.5' }, 'MAX_SUBMISSIONS_PER_PREDICTION'],
    [{ SUBMIT_RECONCILE_GRACE_MS: '-5' }, 'SUBMIT_RECONCILE_GRACE_MS'],
    [{ UPSTREAM_MAX_CONCURRENT: '0' }, 'UPSTREAM_MAX_CONCURRENT'],
    [{ UPSTREAM_MAX_CONCURRENT: 'two' }, 'UPSTREAM_MAX_CONCURRENT'],
    [{ UPSTREAM_MAX_PER_MINUTE: '1.5' }, 'UPSTREAM_MAX_PER_MINUTE'],
    [{ SANDBOX_ACCEPT_THEN_STALL_RATE: '2' }, 'SANDBOX_ACCEPT_THEN_STALL_RATE'],
    [{ SANDBOX_ACCEPT_THEN_ERROR_RATE: '-1' }, 'SANDBOX_ACCEPT_THEN_ERROR_RATE'],
    [{ SANDBOX_UNAUTHORIZED_SECONDS: '-3' }, 'SANDBOX_UNAUTHORIZED_SECONDS'],
    [{ DATABASE_URL: 'mysql://db/cinegraph' }, 'DATABASE_URL: must be a postgres://'],
    [{ DATABASE_URL: 'cinegraph.sqlite' }, 'DATABASE_URL'],
    [{ REDIS_URL: 'http://127.0.0.1:6379' }, 'REDIS_URL: must be a redis://'],
    [{ LEASE_MS: '500' }, 'LEASE_MS'],
    [{ DATABASE_URL: 'postgres://db', WAVESPEED_API_KEY: 'k', LEASE_MS: '15000' }, 'LEASE_MS: must be longer than UPSTREAM_TIMEOUT_MS'],
    [{ DATABASE_URL: 'postgres://db', WAVESPEED_API_KEY: 'k', LEASE_MS: '20000', UPSTREAM_TIMEOUT_MS: '30000' }, 'LEASE_MS: must be longer than UPSTREAM_TIMEOUT_MS'],
    [{ SUBSCRIPTION_RESYNC_MS: '-1' }, 'SUBSCRIPTION_RESYNC_MS'],
    [{ WORKERS: '0' }, 'WORKERS'],
    [{ WORKERS: '65' }, 'WORKERS'],
    [{ WORKERS: '1.5' }, 'WORKERS'],
    [{ WORKERS: 'all' }, 'WORKERS'],
    [{ WORKERS: '2' }, 'WORKERS: more than one worker process needs DATABASE_URL (on SQLite one process owns DATA_DIR; see Scale-out)'],
  ])('%j is refused, naming the variable', (env, names) => {
    expect(() => loadConfig(env)).toThrow(ConfigError);
    expect(() => loadConfig(env)).toThrow(names);
  });

  test('the money path and lifecycle settings: defaults, and unset or empty tier limits mean none', () => {
    const c = loadConfig({});
    expect(c.poll).toMatchObject({ retryAfterMaxMs: 60_000, maxSubmissions: 3, reconcileGraceMs: 60_000 });
    expect(c.admission).toEqual({ maxConcurrent: undefined, maxPerMinute: undefined });
    expect(c.retentionMs).toBe(30 * 86_400_000);
    expect(loadConfig({ UPSTREAM_MAX_CONCURRENT: ' ', UPSTREAM_MAX_PER_MINUTE: '' }).admission).toEqual({ maxConcurrent: undefined, maxPerMinute: undefined });
    expect(loadConfig({ UPSTREAM_MAX_CONCURRENT: '2', UPSTREAM_MAX_PER_MINUTE: '2', RETENTION_DAYS: '0' })).toMatchObject({ admission: { maxConcurrent: 2, maxPerMinute: 2 }, retentionMs: 0 });
  });

  test('scale-out: off without DATABASE_URL; with it, a lease of 60 s, a resync every 30 s, LISTEN/NOTIFY unless REDIS_URL', () => {
    expect(loadConfig({}).scaleOut).toBeUndefined();
    expect(loadConfig({ REDIS_URL: 'redis://127.0.0.1:6379', LEASE_MS: '90000' }).scaleOut).toBeUndefined();
    // Without DATABASE_URL there are no leases: a long upstream timeout is no error.
    expect(loadConfig({ UPSTREAM_TIMEOUT_MS: '120000' }).upstream.timeoutMs).toBe(120_000);
    expect(() => loadConfig({ DATABASE_URL: 'postgres://db' })).toThrow('DATABASE_URL: instances on one database must share one upstream');
    const shared = { WAVESPEED_BASE_URL: 'http://127.0.0.1:4000/sandbox' };
    expect(loadConfig({ ...shared, DATABASE_URL: ' postgres://u@127.0.0.1/db ' }).scaleOut).toEqual({ databaseUrl: 'postgres://u@127.0.0.1/db', redisUrl: undefined, leaseMs: 60_000, resyncMs: 30_000 });
    expect(loadConfig({ WAVESPEED_API_KEY: 'k', DATABASE_URL: 'postgresql://db', REDIS_URL: 'rediss://r:6380', LEASE_MS: '15001', SUBSCRIPTION_RESYNC_MS: '0' }).scaleOut).toEqual({
      databaseUrl: 'postgresql://db',
      redisUrl: 'rediss://r:6380',
      leaseMs: 15_001,
      resyncMs: 0,
    });
  });

  test('WORKERS: one process unless told; more only with DATABASE_URL, up to 64', () => {
    expect(loadConfig({}).workers).toBe(1);
    expect(loadConfig({ WORKERS: '1' }).workers).toBe(1);
    const shared = { WAVESPEED_API_KEY: 'k', DATABASE_URL: 'postgres://db' };
    expect(loadConfig({ ...shared, WORKERS: '4' }).workers).toBe(4);
    expect(loadConfig({ ...shared, WORKERS: String(MAX_WORKERS) }).workers).toBe(64);
  });

  test('npm start with a bad value exits 2 and says which variable', async () => {
    const child = spawn(process.execPath, ['--import', 'tsx', 'src/main.ts'], {
      cwd: fileURLToPath(new URL('..', import.meta.url)),
      env: { ...process.env, PORT: 'abc', SANDBOX_FAILURE_RATE: '7' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stderr = '';
    child.stderr.on('data', (d) => (stderr += d));
    const code = await new Promise((resolve) => child.on('exit', resolve));
    expect(code).toBe(2);
    expect(stderr).toContain('invalid configuration');
    expect(stderr).toContain('PORT');
    expect(stderr).toContain('SANDBOX_FAILURE_RATE');
  });
});
