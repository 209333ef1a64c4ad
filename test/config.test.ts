import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, expect, test } from 'vitest';
import { ConfigError, loadConfig } from '../src/config.js';

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
  ])('%j is refused, naming the variable', (env, names) => {
    expect(() => loadConfig(env)).toThrow(ConfigError);
    expect(() => loadConfig(env)).toThrow(names);
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
