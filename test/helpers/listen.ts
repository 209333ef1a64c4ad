import { createServer, type RequestListener } from 'node:http';
import type { AddressInfo } from 'node:net';
import { onDispose } from './dispose.js';

/** A throwaway loopback HTTP server for the length of one test (a stub upstream, say). */
export async function listen(handler: RequestListener): Promise<string> {
  const server = createServer(handler);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  onDispose(
    () =>
      new Promise((r) => {
        server.closeAllConnections();
        server.close(r);
      }),
  );
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}
