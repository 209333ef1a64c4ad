import { createServer, type RequestListener, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { onDispose } from './dispose.js';

/** A throwaway loopback HTTP server for the length of one test (a stub upstream, say). */
export async function listen(handler: RequestListener): Promise<string> {
  return `http://127.0.0.1:${await listenOnLoopback(createServer(handler))}`;
}

/** Makes `server` listen on a free loopback port until the test ends (its connections cut then); the port. */
export async function listenOnLoopback(server: Server): Promise<number> {
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  onDispose(
    () =>
      new Promise((r) => {
        server.closeAllConnections();
        server.close(r);
      }),
  );
  return (server.address() as AddressInfo).port;
}
