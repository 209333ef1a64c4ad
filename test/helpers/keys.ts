import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { must } from './must.js';

const root = fileURLToPath(new URL('../..', import.meta.url));

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs the package's `cinegraph` bin as a user would, on the database in `dataDir`. */
export function cli(dataDir: string, args: string[], env: Record<string, string> = {}): Promise<CliResult> {
  return new Promise((resolve) => {
    execFile(process.execPath, ['bin/cinegraph.mjs', ...args], { cwd: root, env: { ...process.env, DATA_DIR: dataDir, ...env } }, (err, stdout, stderr) =>
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    );
  });
}

/** `cinegraph keys create --name NAME ...`; the key is the last line of stdout. */
export async function createKey(dataDir: string, name: string, extra: string[] = []): Promise<string> {
  const r = await cli(dataDir, ['keys', 'create', '--name', name, ...extra]);
  if (r.code !== 0) throw new Error(`keys create failed (${r.code}): ${r.stderr}`);
  return must(r.stdout.trimEnd().split('\n').at(-1));
}

export const bearer = (key: string) => ({ authorization: `Bearer ${key}` });
