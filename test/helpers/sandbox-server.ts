import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { SandboxUpstream } from '../../src/upstream/sandbox.js';
import { tempDir } from './app.js';
import { onDispose } from './dispose.js';

export interface SandboxServer {
  /** The base URL every gateway of a test points WAVESPEED_BASE_URL at (…/sandbox). */
  url: string;
  sandbox: SandboxUpstream;
  /** Where the sandbox keeps its tasks (one row per task created upstream). */
  tasksFile: string;
}

/**
 * One upstream for several gateways (scale-out tests): the sandbox on a loopback port of its own,
 * as an instance's embedded one would be. `intercept` may answer a request itself (a 429, say) and
 * return true; it sees every request first, with the path relative to /sandbox.
 */
export async function sandboxServer(
  taskSeconds: number,
  intercept?: (req: IncomingMessage, res: ServerResponse, path: string) => boolean,
): Promise<SandboxServer> {
  const dir = tempDir();
  const tasksFile = join(dir, 'tasks.sqlite');
  const sandbox = new SandboxUpstream({ taskSeconds, tasksFile, uploadsDir: join(dir, 'uploads') });
  const server = createServer((req, res) => {
    const path = (req.url ?? '/').replace(/^\/sandbox/, '') || '/';
    if (intercept?.(req, res, path)) return;
    void sandbox.handle(req, res, path, url);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/sandbox`;
  onDispose(async () => {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
    sandbox.close();
  });
  return { url, sandbox, tasksFile };
}
