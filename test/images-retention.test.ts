import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, test } from 'vitest';
import { MAX_IMAGE_BYTES } from '../src/validation/limits.js';
import { ImageStore } from '../src/storage/images.js';
import { startApp, tempDir, waitFor, type TestApp } from './helpers/app.js';
import { pngOfSize } from './helpers/images.js';
import { must } from './helpers/must.js';

const CREATE = `mutation($p: String!, $i: String) { createVideo(input: { prompt: $p, image: $i }) { id } }`;
const row = (t: TestApp, id: string) => must(t.app.store.findById(id));
const completed = (t: TestApp, id: string) => waitFor(() => row(t, id), (r) => r.status === 'COMPLETED', 30_000);

/** Moves a final prediction's end into the past, as if it had completed `days` ago. */
function age(t: TestApp, id: string, days: number): void {
  t.app.db.$client.prepare('UPDATE predictions SET completed_at = ? WHERE id = ?').run(Date.now() - days * 86_400_000, id);
}

describe('images as files', () => {
  test('a 20 MiB image leaves the row small, is kept once as a file, uploaded once, and the submission carries the upload URL', async () => {
    const t = await startApp({ SANDBOX_TASK_SECONDS: '0.5', UPSTREAM_TIMEOUT_MS: '60000' });
    const image = pngOfSize(640, 360, MAX_IMAGE_BYTES);
    const dataUri = `data:image/png;base64,${image.toString('base64')}`;
    const uploaded = new Promise<{ url: string }>((resolve) => t.app.poller.once('uploaded', resolve));
    const res = await t.gql(CREATE, { p: 'a big first frame', i: dataUri });
    expect(res.body.errors).toBeUndefined();
    const id = res.body.data.createVideo.id;

    const stored = t.app.db.$client.prepare('SELECT length(image) AS imageLength, image_file AS imageFile FROM predictions WHERE id = ?').get(id) as {
      imageLength: number | null;
      imageFile: string;
    };
    expect(stored.imageLength).toBeNull();
    expect(stored.imageFile).toMatch(/^[0-9a-f]{64}\.png$/);
    expect(readFileSync(join(t.dataDir, 'images', stored.imageFile)).equals(image)).toBe(true);

    const { url } = await uploaded;
    expect(url).toMatch(new RegExp(`^${t.url}/sandbox/media/uploads/[0-9a-f]{64}\\.png$`));
    const done = await completed(t, id);
    expect(done).toMatchObject({ imageUploadUrl: url, hasImage: true });
    expect(t.app.sandbox?.stats.uploads).toBe(1);
    // What upstream was asked to animate is the uploaded file, byte for byte.
    const list = await fetch(`${t.url}/sandbox/api/v3/predictions`, { method: 'POST', headers: { authorization: 'Bearer x' }, body: '{"page":1,"page_size":5}' });
    const items = ((await list.json()) as { data: { items: { id: string; input: { image?: string } }[] } }).data.items;
    expect(items.find((i) => i.id === done.upstreamId)?.input.image).toBe(url);
    expect(Buffer.from(await (await fetch(url)).arrayBuffer()).equals(image)).toBe(true);

    // The same image again is the same file, uploaded once more for its own submission.
    const again = (await t.gql(CREATE, { p: 'the same frame', i: dataUri })).body.data.createVideo.id;
    expect(row(t, again).imageFile).toBe(stored.imageFile);
    expect(readdirSync(join(t.dataDir, 'images')).filter((f) => !f.startsWith('.'))).toEqual([stored.imageFile]);
  });

  test('a submission sent again after an uncertain first one carries the same upload, not a second one', async () => {
    const t = await startApp({ SANDBOX_TASK_SECONDS: '0.5' });
    const sandbox = must(t.app.sandbox);
    // Once the upload is done, the first submission (and the look for it) gets a 500 and creates
    // nothing: after the grace period it is sent again, and must reuse the stored upload URL.
    t.app.poller.once('uploaded', () => sandbox.setFaults({ serverErrorRate: 1 }));
    t.app.poller.once('uncertain', () => sandbox.setFaults({ serverErrorRate: 0 }));
    const image = pngOfSize(640, 360, 50_000);
    const id = (await t.gql(CREATE, { p: 'uploaded, then lost', i: `data:image/png;base64,${image.toString('base64')}` })).body.data.createVideo.id;
    const done = await completed(t, id);
    expect(done.submitAttempts).toBe(2);
    expect(sandbox.stats.faults.serverError).toBeGreaterThanOrEqual(1);
    expect(sandbox.stats.uploads).toBe(1);
    expect(sandbox.stats.submissions).toBe(1);
  });

  test('an upload the sandbox refuses (no file part) is a 400 with a reason', async () => {
    const t = await startApp();
    const form = new FormData();
    form.append('other', 'x');
    const res = await fetch(`${t.url}/sandbox/api/v3/media/upload/binary`, { method: 'POST', headers: { authorization: 'Bearer x' }, body: form });
    expect(res.status).toBe(400);
    expect(((await res.json()) as { message: string }).message).toBe('a part named file is required');
    const notMultipart = await fetch(`${t.url}/sandbox/api/v3/media/upload/binary`, { method: 'POST', headers: { authorization: 'Bearer x', 'content-type': 'application/json' }, body: '{}' });
    expect(notMultipart.status).toBe(400);
    expect(t.app.sandbox?.stats.uploads).toBe(0);
  });
});

test('an image file missing from DATA_DIR/images (another instance kept it) is said by name, never by the server path', () => {
  const dir = tempDir();
  const name = `${'a'.repeat(64)}.png`;
  const read = () => new ImageStore(join(dir, 'images')).read(name);
  expect(read).toThrow(`the image file ${name} is not in this gateway's DATA_DIR/images`);
  expect(read).not.toThrow(dir);
});

describe('retention', () => {
  test('old final predictions go with their image files and unshared kept outputs; recent and live ones stay', async () => {
    const t = await startApp({ SANDBOX_TASK_SECONDS: '0.3', RETENTION_DAYS: '30' });
    const image = pngOfSize(640, 360, 40_000);
    const withImage = (await t.gql(CREATE, { p: 'old, with an image', i: `data:image/png;base64,${image.toString('base64')}` })).body.data.createVideo.id;
    const oldShared = (await t.gql(CREATE, { p: 'old, output shared' })).body.data.createVideo.id;
    const recent = (await t.gql(CREATE, { p: 'recent' })).body.data.createVideo.id;
    for (const id of [withImage, oldShared, recent]) await completed(t, id);
    const imageFile = must(row(t, withImage).imageFile);
    // The sandbox's outputs are all the same MP4: one kept file, shared by all three.
    const kept = must(row(t, recent).keptOutputs[0]).replace('/media/', '');
    expect(row(t, withImage).keptOutputs).toEqual([`/media/${kept}`]);
    age(t, withImage, 31);
    age(t, oldShared, 45);
    age(t, recent, 29);

    const first = await t.app.retention.sweep();
    expect(first).toEqual({ predictions: 2, images: 1, outputs: 0 });
    expect(row(t, recent)).toBeDefined();
    expect(t.app.store.findById(withImage)).toBeUndefined();
    expect(t.app.store.findById(oldShared)).toBeUndefined();
    expect(existsSync(join(t.dataDir, 'images', imageFile))).toBe(false);
    expect(existsSync(join(t.dataDir, 'media', kept))).toBe(true); // still the recent one's
    expect((await t.gql(`query($id: ID!) { prediction(id: $id) { id } }`, { id: withImage })).body.data.prediction).toBeNull();

    age(t, recent, 31);
    expect(await t.app.retention.sweep()).toEqual({ predictions: 1, images: 0, outputs: 1 });
    expect(existsSync(join(t.dataDir, 'media', kept))).toBe(false);
  });

  test('live predictions are never swept, however old', async () => {
    const t = await startApp({ SANDBOX_TASK_SECONDS: '600', RETENTION_DAYS: '1' });
    const id = (await t.gql(CREATE, { p: 'still running' })).body.data.createVideo.id;
    // Old in every time it has, completed_at included: only its status keeps it.
    const longAgo = Date.now() - 90 * 86_400_000;
    t.app.db.$client.prepare('UPDATE predictions SET created_at = ?, completed_at = ? WHERE id = ?').run(longAgo, longAgo, id);
    expect(await t.app.retention.sweep()).toEqual({ predictions: 0, images: 0, outputs: 0 });
    expect(row(t, id)).toBeDefined();
  });

  test('an image file shared by an old and a recent prediction stays until the recent one goes too', async () => {
    const t = await startApp({ SANDBOX_TASK_SECONDS: '0.3', RETENTION_DAYS: '30' });
    const dataUri = `data:image/png;base64,${pngOfSize(640, 360, 30_000).toString('base64')}`;
    const old = (await t.gql(CREATE, { p: 'old', i: dataUri })).body.data.createVideo.id;
    const recent = (await t.gql(CREATE, { p: 'recent', i: dataUri })).body.data.createVideo.id;
    await completed(t, old);
    await completed(t, recent);
    const file = must(row(t, old).imageFile);
    expect(row(t, recent).imageFile).toBe(file);
    age(t, old, 40);
    expect(await t.app.retention.sweep()).toMatchObject({ predictions: 1, images: 0 });
    expect(existsSync(join(t.dataDir, 'images', file))).toBe(true);
    age(t, recent, 40);
    expect(await t.app.retention.sweep()).toMatchObject({ predictions: 1, images: 1 });
    expect(existsSync(join(t.dataDir, 'images', file))).toBe(false);
  });

  test('RETENTION_DAYS=0 keeps everything', async () => {
    const t = await startApp({ SANDBOX_TASK_SECONDS: '0.3', RETENTION_DAYS: '0' });
    const id = (await t.gql(CREATE, { p: 'kept for good' })).body.data.createVideo.id;
    await completed(t, id);
    age(t, id, 3650);
    expect(await t.app.retention.sweep()).toEqual({ predictions: 0, images: 0, outputs: 0 });
    expect(row(t, id)).toBeDefined();
  });

  test.each(['-1', '1.5', 'soon'])('RETENTION_DAYS=%s is refused at start', async (value) => {
    await expect(startApp({ RETENTION_DAYS: value })).rejects.toThrow(/RETENTION_DAYS/);
  });
});
