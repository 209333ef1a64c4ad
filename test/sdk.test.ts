import { Client } from 'wavespeed';
import { expect, test } from 'vitest';
import { startApp } from './helpers/app.js';

// The official WaveSpeed SDK, pointed at the sandbox: proof that the sandbox speaks the real
// contract (submit, result URL, envelope, statuses), not just the contract our own client expects.
test('the official wavespeed SDK completes a run against the sandbox and gets a playable MP4', async () => {
  const { url } = await startApp({ SANDBOX_TASK_SECONDS: '1' });
  const sdk = new Client('any-key', { baseUrl: `${url}/sandbox`, maxRetries: 0 });
  const output = await sdk.run('minimax/video-01', { prompt: 'a paper boat', enable_prompt_expansion: false }, { timeout: 20, pollInterval: 0.2 });
  expect(output.outputs).toHaveLength(1);
  const video = await fetch(output.outputs[0] as string);
  expect(video.headers.get('content-type')).toBe('video/mp4');
  expect(Buffer.from(await video.arrayBuffer()).subarray(4, 8).toString('latin1')).toBe('ftyp');
});

test('the official SDK reports a sandbox task failure, and is refused without a key', async () => {
  const { url, app } = await startApp({ SANDBOX_TASK_SECONDS: '0.5' });
  app.sandbox?.setFaults({ failureRate: 1 });
  const sdk = new Client('any-key', { baseUrl: `${url}/sandbox`, maxRetries: 0 });
  await expect(sdk.run('minimax/video-01', { prompt: 'doomed' }, { timeout: 20, pollInterval: 0.2 })).rejects.toThrow('sandbox: injected task failure');
  const keyless = new Client(' ', { baseUrl: `${url}/sandbox`, maxRetries: 0 });
  await expect(keyless.run('minimax/video-01', { prompt: 'x' }, { timeout: 5 })).rejects.toThrow(/401/);
});
