import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { drizzle } from 'drizzle-orm/better-sqlite3';
import { generateSQLiteDrizzleJson, generateSQLiteMigration } from 'drizzle-kit/api';
import { describe, expect, test } from 'vitest';
import { type Db, openDatabase } from '../src/db/client.js';
import { isStorageError, storageErrorOf } from '../src/db/errors.js';
import { PredictionStore } from '../src/db/predictions.js';
import * as schema from '../src/db/schema.js';
import { liveStatuses, predictionStatuses, terminalStatuses } from '../src/db/schema.js';
import { tempDir } from './helpers/app.js';
import { at, freshDb, newRow, T0 } from './helpers/db.js';
import { onDispose } from './helpers/dispose.js';
import { must } from './helpers/must.js';

/**
 * PredictionStore, openDatabase and storageErrorOf against a real SQLite file in a temp dir: what a
 * row is stored as, the fair queue turn given at insert, the guards of an update (only live rows,
 * version bumps, no invalid dates, exactly one row), and the reads the poller's passes make.
 */

function store() {
  const { db, file } = freshDb();
  return { db, file, store: new PredictionStore(db) };
}

describe('openDatabase', () => {
  test('creates missing folders, migrates, and sets WAL, NORMAL sync, a busy timeout, foreign keys and temp storage in memory', () => {
    const file = join(tempDir('cinegraph-db-'), 'a', 'b', 'c.sqlite');
    const db = openDatabase(file);
    onDispose(() => db.$client.close());
    expect(existsSync(file)).toBe(true);
    expect(db.$client.pragma('journal_mode', { simple: true })).toBe('wal');
    expect(db.$client.pragma('synchronous', { simple: true })).toBe(1);
    expect(db.$client.pragma('busy_timeout', { simple: true })).toBe(5000);
    expect(db.$client.pragma('foreign_keys', { simple: true })).toBe(1);
    // 2 = MEMORY: statement journals of trigger-firing inserts in a group commit stay off temp files.
    expect(db.$client.pragma('temp_store', { simple: true })).toBe(2);
    const tables = db.$client.prepare(`SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name`).pluck().all();
    expect(tables).toEqual(expect.arrayContaining(['api_keys', 'idempotency_keys', 'prediction_webhooks', 'predictions', 'webhook_attempts', 'webhook_messages', 'webhook_receipts']));
    // Foreign keys are enforced: an outbox message for no prediction is refused.
    expect(() =>
      db.$client.prepare(`INSERT INTO webhook_messages (id, prediction_id, event, url, payload, created_at) VALUES ('m', 'nobody', 'CREATED', 'u', '{}', 0)`).run(),
    ).toThrow(/FOREIGN KEY constraint failed/);
  });

  test('reopening an existing file keeps its rows (migrations are not re-run destructively)', () => {
    const { db, file } = freshDb();
    new PredictionStore(db).insert(newRow('kept'));
    db.$client.close();
    const again = openDatabase(file);
    onDispose(() => again.$client.close());
    expect(new PredictionStore(again).findById('kept')?.prompt).toBe('prompt of kept');
  });

  test('an in-memory database needs no folder', () => {
    const db = openDatabase(':memory:');
    onDispose(() => db.$client.close());
    expect(new PredictionStore(db).count()).toBe(0);
  });

  test('schema.ts describes exactly what the migrations create (no drift: no migration left to generate)', async () => {
    const meta = join(import.meta.dirname, '../migrations/meta');
    const journal = JSON.parse(readFileSync(join(meta, '_journal.json'), 'utf8')) as { entries: { idx: number }[] };
    const last = must(journal.entries.at(-1)).idx;
    const snapshot = JSON.parse(readFileSync(join(meta, `${String(last).padStart(4, '0')}_snapshot.json`), 'utf8'));
    const current = await generateSQLiteDrizzleJson({ ...schema });
    expect(await generateSQLiteMigration(snapshot, current)).toEqual([]);
  });
});

describe('statuses', () => {
  test('every status is either live (the poller may still write it) or terminal, never both', () => {
    expect([...liveStatuses].sort()).toEqual(['CREATED', 'PROCESSING']);
    expect([...terminalStatuses].sort()).toEqual(['CANCELED', 'COMPLETED', 'FAILED']);
    expect([...liveStatuses, ...terminalStatuses].sort()).toEqual([...predictionStatuses].sort());
  });
});

describe('PredictionStore.insert', () => {
  test('returns the row as stored, with every default, and without the image', () => {
    const { store: s } = store();
    const row = s.insert(newRow('p1', { image: 'data:image/png;base64,AAAA', hasImage: true, imageFile: 'abc.png', owner: 'key-1', deadlineAt: at(60_000) }));
    expect(row).toStrictEqual({
      seq: 1,
      id: 'p1',
      upstreamId: null,
      model: 'minimax/video-01',
      status: 'CREATED',
      prompt: 'prompt of p1',
      imageFile: 'abc.png',
      imageUploadUrl: null,
      hasImage: true,
      enablePromptExpansion: true,
      outputs: [],
      hasNsfwContents: [],
      urlsGet: null,
      keptOutputs: [],
      webhookToken: null,
      error: null,
      inferenceMs: null,
      version: 1,
      createdAt: T0,
      updatedAt: T0,
      submittedAt: null,
      completedAt: null,
      nextPollAt: T0,
      pollCount: 0,
      attempts: 0,
      submitAttempts: 0,
      submitStartedAt: null,
      owner: 'key-1',
      deadlineAt: at(60_000),
      queueTurn: 1,
    });
    expect(s.findById('p1')).toStrictEqual(row);
    expect(s.imageOf('p1')).toBe('data:image/png;base64,AAAA');
  });

  test('owner, deadline and image file default to null', () => {
    const { store: s } = store();
    const row = s.insert(newRow('p1'));
    expect([row.owner, row.deadlineAt, row.imageFile]).toEqual([null, null, null]);
    expect(s.imageOf('p1')).toBeNull();
    expect(s.imageOf('nobody')).toBeNull();
    expect(s.findById('nobody')).toBeUndefined();
  });

  test('an id is unique', () => {
    const { store: s } = store();
    s.insert(newRow('p1'));
    expect(() => s.insert(newRow('p1'))).toThrow(/UNIQUE constraint failed: predictions.id/);
    expect(s.count()).toBe(1);
  });

  test('an insert that stores no row is an error, never an id of a row that does not exist', () => {
    const { db, store: s } = store();
    db.$client.exec(`CREATE TRIGGER swallow BEFORE INSERT ON predictions BEGIN SELECT RAISE(IGNORE); END`);
    expect(() => s.insert(newRow('ghost'))).toThrow('insert affected 0 rows, expected 1');
    expect(s.count()).toBe(0);
  });

  test('owners take turns: each new prediction one after its owner’s last waiting one, never before the head', () => {
    const { store: s } = store();
    const turn = (id: string, owner: string | null) => s.insert(newRow(id, { owner })).queueTurn;
    expect([turn('a1', 'A'), turn('a2', 'A'), turn('a3', 'A')]).toEqual([1, 2, 3]);
    expect([turn('b1', 'B'), turn('b2', 'B')]).toEqual([1, 2]);
    // Open mode (no owner) is an owner of its own.
    expect([turn('o1', null), turn('o2', null)]).toEqual([1, 2]);
    // a1, b1 and o1 leave the queue (submitted, or final): the head is now at turn 2.
    s.update('a1', { upstreamId: 'up-a1' });
    s.update('b1', { submitStartedAt: T0 });
    s.update('o1', { status: 'FAILED' }, T0);
    // A newcomer comes right after the head (turn 2), not before everyone (turn 1).
    expect(turn('c1', 'C')).toBe(2);
    // A still has a3 waiting at turn 3.
    expect(turn('a4', 'A')).toBe(4);
    // B's waiting one is b2 at turn 2.
    expect(turn('b3', 'B')).toBe(3);
    expect(turn('o3', null)).toBe(3);
  });

  test('an owner whose predictions all left the queue starts again at the head’s turn', () => {
    const { store: s } = store();
    for (const id of ['a1', 'a2', 'a3', 'a4']) s.insert(newRow(id, { owner: 'A' }));
    s.insert(newRow('b1', { owner: 'B' }));
    s.update('b1', { upstreamId: 'up-b1' });
    s.update('a1', { upstreamId: 'up-a1' });
    s.update('a2', { upstreamId: 'up-a2' });
    // Head: a3 at turn 3. B has nothing waiting, though its old row had turn 1.
    expect(s.insert(newRow('b2', { owner: 'B' })).queueTurn).toBe(3);
  });
});

describe('PredictionStore reads', () => {
  test('findByUpstreamId finds the row that owns a task', () => {
    const { store: s } = store();
    s.insert(newRow('p1'));
    s.insert(newRow('p2'));
    s.update('p2', { upstreamId: 'task-2' });
    expect(s.findByUpstreamId('task-2')?.id).toBe('p2');
    expect(s.findByUpstreamId('task-1')).toBeUndefined();
  });

  test('list: newest first, a page at a time, by status, by owner', () => {
    const { store: s } = store();
    s.insert(newRow('a1', { owner: 'A' }));
    s.insert(newRow('o1'));
    s.insert(newRow('a2', { owner: 'A' }));
    s.insert(newRow('b1', { owner: 'B' }));
    s.insert(newRow('o2'));
    s.update('a2', { status: 'COMPLETED' }, T0);
    s.update('o1', { status: 'PROCESSING' }, T0);
    const ids = (rows: { id: string }[]) => rows.map((r) => r.id);
    expect(ids(s.list({ first: 10 }))).toEqual(['o2', 'b1', 'a2', 'o1', 'a1']);
    expect(ids(s.list({ first: 2 }))).toEqual(['o2', 'b1']);
    const a2 = must(s.findById('a2'));
    expect(ids(s.list({ first: 10, beforeSeq: a2.seq }))).toEqual(['o1', 'a1']);
    expect(ids(s.list({ first: 1, beforeSeq: a2.seq }))).toEqual(['o1']);
    expect(ids(s.list({ first: 10, status: 'CREATED' }))).toEqual(['o2', 'b1', 'a1']);
    expect(ids(s.list({ first: 10, owner: 'A' }))).toEqual(['a2', 'a1']);
    expect(ids(s.list({ first: 10, owner: null }))).toEqual(['o2', 'o1']);
    expect(ids(s.list({ first: 10, owner: null, status: 'CREATED' }))).toEqual(['o2']);
    expect(ids(s.list({ first: 10, owner: 'A', status: 'COMPLETED', beforeSeq: 100 }))).toEqual(['a2']);
    expect(s.list({ first: 10, owner: 'nobody' })).toEqual([]);
    expect(s.list({ first: 10 })[0]).not.toHaveProperty('image');
  });

  test('countUnfinished counts an owner’s CREATED and PROCESSING predictions only', () => {
    const { store: s } = store();
    for (const [id, owner, status] of [
      ['a1', 'A', 'CREATED'],
      ['a2', 'A', 'PROCESSING'],
      ['a3', 'A', 'COMPLETED'],
      ['a4', 'A', 'FAILED'],
      ['a5', 'A', 'CANCELED'],
      ['b1', 'B', 'CREATED'],
      ['o1', null, 'PROCESSING'],
      ['o2', null, 'CREATED'],
      ['o3', null, 'COMPLETED'],
    ] as const) {
      s.insert(newRow(id, { owner }));
      if (status !== 'CREATED') s.update(id, { status }, T0);
    }
    expect(s.countUnfinished('A')).toBe(2);
    expect(s.countUnfinished('B')).toBe(1);
    expect(s.countUnfinished(null)).toBe(2);
    expect(s.countUnfinished('nobody')).toBe(0);
    expect(s.count()).toBe(9);
  });

  test('due: started rows whose poll has come, earliest first, up to the limit; never queued or final ones', () => {
    const { store: s } = store();
    s.insert(newRow('queued', { nextPollAt: at(-5000) }));
    s.insert(newRow('late'));
    s.update('late', { upstreamId: 'u-late', nextPollAt: at(-1000) });
    s.insert(newRow('early'));
    s.update('early', { submitStartedAt: at(-9000), nextPollAt: at(-3000) });
    s.insert(newRow('now'));
    s.update('now', { upstreamId: 'u-now', nextPollAt: T0 });
    s.insert(newRow('future'));
    s.update('future', { upstreamId: 'u-future', nextPollAt: at(1) });
    s.insert(newRow('final'));
    s.update('final', { upstreamId: 'u-final', status: 'COMPLETED', nextPollAt: null }, T0);
    expect(s.due(T0, 10)).toEqual(['early', 'late', 'now']);
    expect(s.due(T0, 2)).toEqual(['early', 'late']);
    expect(s.due(at(-1), 10)).toEqual(['early', 'late']);
    expect(s.due(at(1), 10)).toEqual(['early', 'late', 'now', 'future']);
  });

  test('nextDueAt: the earliest started row not busy, whether busy is a set or a map', () => {
    const { store: s } = store();
    expect(s.nextDueAt(new Set())).toBeUndefined();
    s.insert(newRow('queued', { nextPollAt: at(-9000) }));
    expect(s.nextDueAt(new Set())).toBeUndefined();
    for (const [id, ms] of [
      ['a', 100],
      ['b', 200],
      ['c', 300],
    ] as const) {
      s.insert(newRow(id));
      s.update(id, { upstreamId: `u-${id}`, nextPollAt: at(ms) });
    }
    expect(s.nextDueAt(new Set())).toEqual(at(100));
    expect(s.nextDueAt(new Set(['a']))).toEqual(at(200));
    expect(s.nextDueAt(new Map([['a', 1]]))).toEqual(at(200));
    expect(s.nextDueAt(new Set(['a', 'b']))).toEqual(at(300));
    // Busy rows that are not the earliest do not hide the earliest.
    expect(s.nextDueAt(new Set(['b', 'c']))).toEqual(at(100));
    expect(s.nextDueAt(new Set(['a', 'b', 'c']))).toBeUndefined();
  });

  test('makeDue pulls a later poll forward to now, never pushes one back, and leaves a final row alone', () => {
    const { store: s } = store();
    for (const id of ['later', 'sooner', 'final']) s.insert(newRow(id));
    s.update('later', { upstreamId: 'u1', nextPollAt: at(60_000) });
    s.update('sooner', { upstreamId: 'u2', nextPollAt: at(-60_000) });
    s.update('final', { upstreamId: 'u3', status: 'FAILED', nextPollAt: null }, T0);
    for (const id of ['later', 'sooner', 'final', 'nobody']) s.makeDue(id, T0);
    expect(s.findById('later')?.nextPollAt).toEqual(T0);
    expect(s.findById('sooner')?.nextPollAt).toEqual(at(-60_000));
    expect(s.findById('final')?.nextPollAt).toBeNull();
    // Invisible bookkeeping: no version bump.
    expect(s.findById('later')?.version).toBe(1);
  });
});

describe('PredictionStore.update', () => {
  test('a visible change bumps version and updatedAt; bookkeeping changes neither', () => {
    const { store: s } = store();
    s.insert(newRow('p'));
    const visible = must(s.update('p', { status: 'PROCESSING', upstreamId: 'u' }, at(1000)));
    expect(visible).toMatchObject({ status: 'PROCESSING', upstreamId: 'u', version: 2, updatedAt: at(1000) });
    const quiet = must(s.update('p', { pollCount: 3, nextPollAt: at(5000) }));
    expect(quiet).toMatchObject({ pollCount: 3, nextPollAt: at(5000), version: 2, updatedAt: at(1000) });
    // The same keys, now visible: the statement of the quiet shape is not reused.
    expect(s.update('p', { pollCount: 4, nextPollAt: at(6000) }, at(2000))).toMatchObject({ pollCount: 4, version: 3, updatedAt: at(2000) });
    expect(s.update('p', { pollCount: 5, nextPollAt: at(7000) })).toMatchObject({ pollCount: 5, version: 3, updatedAt: at(2000) });
    expect(s.findById('p')).toMatchObject({ pollCount: 5, version: 3 });
  });

  test('every kind of field is written and read back as it was given', () => {
    const { store: s } = store();
    s.insert(newRow('p', { image: 'https://img.example/a.png', hasImage: true }));
    const row = must(
      s.update(
        'p',
        {
          upstreamId: 'task',
          status: 'COMPLETED',
          image: null,
          imageUploadUrl: 'https://media.example/1',
          outputs: ['https://cdn.example/o.mp4'],
          hasNsfwContents: [true],
          urlsGet: 'https://api.example/r',
          keptOutputs: ['/media/x.mp4'],
          webhookToken: 'tok',
          error: 'none',
          inferenceMs: 42,
          submittedAt: at(1),
          completedAt: at(2),
          nextPollAt: null,
          attempts: 2,
          submitAttempts: 1,
          submitStartedAt: null,
          enablePromptExpansion: false,
        },
        at(3),
      ),
    );
    expect(row).toMatchObject({
      upstreamId: 'task',
      status: 'COMPLETED',
      imageUploadUrl: 'https://media.example/1',
      outputs: ['https://cdn.example/o.mp4'],
      hasNsfwContents: [true],
      urlsGet: 'https://api.example/r',
      keptOutputs: ['/media/x.mp4'],
      webhookToken: 'tok',
      error: 'none',
      inferenceMs: 42,
      submittedAt: at(1),
      completedAt: at(2),
      nextPollAt: null,
      attempts: 2,
      submitAttempts: 1,
      submitStartedAt: null,
      enablePromptExpansion: false,
      version: 2,
      updatedAt: at(3),
    });
    expect(s.imageOf('p')).toBeNull();
    expect(s.findById('p')).toStrictEqual(row);
  });

  test('null writes NULL, undefined leaves a field alone, and shapes with and without a null are told apart', () => {
    const { store: s } = store();
    s.insert(newRow('p'));
    s.update('p', { error: 'first', inferenceMs: 5 });
    expect(s.update('p', { error: null, inferenceMs: undefined })).toMatchObject({ error: null, inferenceMs: 5 });
    expect(s.update('p', { error: 'second' })).toMatchObject({ error: 'second', inferenceMs: 5 });
    expect(s.update('p', { error: null })).toMatchObject({ error: null });
    expect(s.update('p', { error: 'third', inferenceMs: null })).toMatchObject({ error: 'third', inferenceMs: null });
    expect(s.update('p', { inferenceMs: 7, error: 'fourth' })).toMatchObject({ error: 'fourth', inferenceMs: 7 });
    // A visible patch of undefineds only moves version and updatedAt.
    expect(s.update('p', { error: undefined }, at(9))).toMatchObject({ error: 'fourth', inferenceMs: 7, version: 2, updatedAt: at(9) });
    // A visible null right after a visible nothing: a shape of its own, so the field is cleared.
    expect(s.update('p', { error: null }, at(10))).toMatchObject({ error: null, inferenceMs: 7, version: 3, updatedAt: at(10) });
  });

  test.each(['COMPLETED', 'FAILED', 'CANCELED'] as const)('a %s prediction never changes again', (status) => {
    const { store: s } = store();
    s.insert(newRow('p'));
    const final = must(s.update('p', { status, nextPollAt: null, error: 'end' }, at(1)));
    expect(s.update('p', { status: 'PROCESSING', error: 'late poll', nextPollAt: at(2) }, at(2))).toBeUndefined();
    expect(s.update('p', { pollCount: 9 })).toBeUndefined();
    expect(s.findById('p')).toStrictEqual(final);
  });

  test('a live PROCESSING row is still updated, and an unknown id answers undefined', () => {
    const { store: s } = store();
    s.insert(newRow('p'));
    s.update('p', { status: 'PROCESSING' }, at(1));
    expect(s.update('p', { pollCount: 1 })).toMatchObject({ status: 'PROCESSING', pollCount: 1 });
    expect(s.update('nobody', { pollCount: 1 }, at(1))).toBeUndefined();
    expect(s.count()).toBe(1);
  });

  test('an invalid date is refused before anything is written', () => {
    const { store: s } = store();
    s.insert(newRow('p'));
    expect(() => s.update('p', { error: 'x', nextPollAt: new Date(Number.NaN) }, at(1))).toThrow(new RangeError('refusing to store an invalid date in nextPollAt'));
    expect(() => s.update('p', { submittedAt: new Date('nope') })).toThrow('refusing to store an invalid date in submittedAt');
    expect(s.findById('p')).toMatchObject({ error: null, nextPollAt: T0, version: 1 });
    // A valid date at the epoch is fine.
    expect(s.update('p', { submittedAt: new Date(0) })?.submittedAt).toEqual(new Date(0));
  });

  test('an update refused by a trigger answers undefined, like one that matched no live row', () => {
    const { db, store: s } = store();
    s.insert(newRow('p'));
    db.$client.exec(`CREATE TRIGGER frozen BEFORE UPDATE ON predictions BEGIN SELECT RAISE(IGNORE); END`);
    expect(s.update('p', { error: 'x' }, at(1))).toBeUndefined();
    expect(s.findById('p')?.error).toBeNull();
  });
});

describe('PredictionStore.probeWrite', () => {
  test('rewrites the newest row unchanged, and works on an empty table', () => {
    const { db, store: s } = store();
    s.probeWrite();
    s.insert(newRow('p'));
    const before = must(s.findById('p'));
    const changes = db.$client.prepare('SELECT total_changes()').pluck();
    const n = changes.get() as number;
    s.probeWrite();
    expect(changes.get()).toBe(n + 1);
    expect(s.findById('p')).toStrictEqual(before);
  });

  test('throws what the write throws on a file that cannot be written', () => {
    const { file, store: s } = store();
    s.insert(newRow('p'));
    const readonly = new Database(file, { readonly: true });
    onDispose(() => readonly.close());
    const ro = new PredictionStore(drizzle(readonly, { schema }) as unknown as Db);
    expect(ro.findById('p')?.id).toBe('p');
    const err = (() => {
      try {
        ro.probeWrite();
      } catch (e) {
        return e;
      }
    })();
    expect(err).toBeInstanceOf(Database.SqliteError);
    expect(err).toMatchObject({ code: 'SQLITE_READONLY' });
    expect(storageErrorOf(err)).toBe(err);
  });
});

describe('storageErrorOf: the store itself failed, as opposed to a query', () => {
  const sqlite = (code: string) => new Database.SqliteError(`sqlite says ${code}`, code);
  const errno = (code: string) => Object.assign(new Error(`fs says ${code}`), { code });
  const wrapped = (inner: unknown, depth: number): unknown => (depth === 0 ? inner : new Error(`wrapper ${depth}`, { cause: wrapped(inner, depth - 1) }));

  test.each(['SQLITE_FULL', 'SQLITE_IOERR', 'SQLITE_IOERR_WRITE', 'SQLITE_READONLY', 'SQLITE_BUSY', 'SQLITE_CORRUPT'])('%s is a storage failure', (code) => {
    const e = sqlite(code);
    expect(storageErrorOf(e)).toBe(e);
    expect(storageErrorOf(e)).toMatchObject({ code, message: `sqlite says ${code}` });
    expect(isStorageError(e)).toBe(true);
  });

  test.each(['SQLITE_CONSTRAINT', 'SQLITE_CONSTRAINT_UNIQUE', 'SQLITE_CONSTRAINT_NOTNULL', 'SQLITE_CONSTRAINT_FOREIGNKEY'])('%s is a query’s fault, not the store’s', (code) => {
    expect(storageErrorOf(sqlite(code))).toBeUndefined();
    expect(isStorageError(sqlite(code))).toBe(false);
    // Even with a file-system code further down its chain: the constraint answers first.
    expect(storageErrorOf(new Error('w', { cause: Object.assign(sqlite(code), { cause: errno('EIO') }) }))).toBeUndefined();
  });

  test.each(['ENOSPC', 'EDQUOT', 'EIO', 'EROFS'])('a file-system %s is a storage failure', (code) => {
    expect(storageErrorOf(errno(code))).toStrictEqual({ code, message: `fs says ${code}` });
    expect(isStorageError(errno(code))).toBe(true);
  });

  test('other errors, and things that are not errors, are not', () => {
    for (const e of [errno('ENOENT'), errno('EACCES'), new Error('plain'), new TypeError('bug'), 'SQLITE_FULL', 42, null, undefined, {}, { code: '' }]) {
      expect(storageErrorOf(e)).toBeUndefined();
      expect(isStorageError(e)).toBe(false);
    }
  });

  test('the cause chain is searched, to four wrappers deep', () => {
    const e = sqlite('SQLITE_FULL');
    expect(storageErrorOf(wrapped(e, 1))).toBe(e);
    expect(storageErrorOf(wrapped(e, 4))).toBe(e);
    expect(storageErrorOf(wrapped(e, 5))).toBeUndefined();
    expect(storageErrorOf(wrapped(errno('ENOSPC'), 4))).toStrictEqual({ code: 'ENOSPC', message: 'fs says ENOSPC' });
    expect(storageErrorOf(wrapped(errno('ENOSPC'), 5))).toBeUndefined();
    // The nearest failure answers.
    expect(storageErrorOf(new Error('w', { cause: Object.assign(errno('EIO'), { cause: sqlite('SQLITE_FULL') }) }))).toMatchObject({ code: 'EIO' });
  });

  test('a real constraint violation through Drizzle is not a storage failure; a real read-only write is', () => {
    const { db, file, store: s } = store();
    s.insert(newRow('p'));
    const dup = (() => {
      try {
        db.insert(schema.predictions).values({ ...newRow('p'), createdAt: T0 }).run();
      } catch (e) {
        return e;
      }
    })();
    expect(dup).toBeDefined();
    expect(storageErrorOf(dup)).toBeUndefined();
    const readonly = new Database(file, { readonly: true });
    onDispose(() => readonly.close());
    const roDb = drizzle(readonly, { schema });
    const ro = (() => {
      try {
        roDb.update(schema.predictions).set({ error: 'x' }).run();
      } catch (e) {
        return e;
      }
    })();
    expect(storageErrorOf(ro)).toMatchObject({ code: 'SQLITE_READONLY' });
  });
});
