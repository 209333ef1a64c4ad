import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import Database from 'better-sqlite3';

export interface SandboxTaskInput {
  prompt: string;
  image?: string;
  enable_prompt_expansion?: boolean;
}

/**
 * What the sandbox remembers of its tasks beyond their ids: the input, for the list endpoint
 * (`POST /api/v3/predictions`), whose records carry it. A file under DATA_DIR, so a restarted
 * server still lists the tasks a reconciling gateway looks for. Plain better-sqlite3: this is the
 * stand-in upstream's own storage, not the gateway's, and it has one table and three statements.
 */
export class SandboxTaskStore {
  private readonly db: Database.Database;
  private readonly insertStmt;
  private readonly pageStmt;
  private readonly deleteStmt;
  private readonly deletedStmt;

  constructor(file = ':memory:') {
    if (file !== ':memory:') mkdirSync(dirname(file), { recursive: true });
    this.db = new Database(file);
    this.db.pragma('journal_mode = WAL');
    this.db.exec('CREATE TABLE IF NOT EXISTS tasks (seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, created_at INTEGER NOT NULL, input TEXT NOT NULL)');
    // Files written before deletions existed lack the column.
    if (!(this.db.prepare('PRAGMA table_info(tasks)').all() as { name: string }[]).some((c) => c.name === 'deleted_at')) {
      this.db.exec('ALTER TABLE tasks ADD COLUMN deleted_at INTEGER');
    }
    this.insertStmt = this.db.prepare('INSERT INTO tasks (id, created_at, input) VALUES (?, ?, ?)');
    this.pageStmt = this.db.prepare('SELECT id, input FROM tasks WHERE created_at >= ? AND deleted_at IS NULL ORDER BY seq DESC LIMIT ? OFFSET ?');
    this.deleteStmt = this.db.prepare('UPDATE tasks SET deleted_at = ? WHERE id = ? AND deleted_at IS NULL');
    this.deletedStmt = this.db.prepare('SELECT 1 FROM tasks WHERE id = ? AND deleted_at IS NOT NULL').pluck();
  }

  add(id: string, createdAt: number, input: SandboxTaskInput): void {
    this.insertStmt.run(id, createdAt, JSON.stringify(input));
  }

  /** Tasks created since `oldest`, newest first; `page` counts from 1. */
  page(page: number, pageSize: number, oldest: number): { id: string; input: SandboxTaskInput }[] {
    const rows = this.pageStmt.all(oldest, pageSize, (page - 1) * pageSize) as { id: string; input: string }[];
    return rows.map((r) => ({ id: r.id, input: JSON.parse(r.input) as SandboxTaskInput }));
  }

  /** Marks tasks deleted (they stop, and read as not found); returns how many were live. */
  delete(ids: string[], at: number): number {
    let n = 0;
    for (const id of ids) n += this.deleteStmt.run(at, id).changes;
    return n;
  }

  isDeleted(id: string): boolean {
    return this.deletedStmt.get(id) !== undefined;
  }

  close(): void {
    this.db.close();
  }
}
