import net from 'node:net';
import { onDispose } from './dispose.js';

export interface TcpProxy {
  port: number;
  /** Connections accepted and closed at once while resetting (each a reconnect attempt seen). */
  readonly resets: number;
  /** Closes the port: new connections are refused, open ones reset. */
  refuse(): Promise<void>;
  /** Stops passing bytes on open connections and accepts new ones without ever answering. */
  blackhole(): void;
  /** Resets every open connection, then accepts new ones and closes each at once (counted in `resets`). */
  reset(): void;
  /** Resets every open connection and goes back to forwarding on the same port. */
  forward(): Promise<void>;
}

/**
 * A loopback TCP proxy in front of a server (Postgres, Redis) on `targetPort`, for cutting a client
 * off it and back. Closed when the test ends.
 */
export async function tcpProxy(targetPort: number): Promise<TcpProxy> {
  const sockets = new Set<net.Socket>();
  const pairs = new Set<[net.Socket, net.Socket]>();
  let mode: 'forward' | 'blackhole' | 'reset' = 'forward';
  let resets = 0;
  const track = (s: net.Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => {});
  };
  const server = net.createServer((client) => {
    track(client);
    if (mode === 'blackhole') return;
    if (mode === 'reset') {
      resets++;
      client.destroy();
      return;
    }
    const toServer = net.connect(targetPort, '127.0.0.1');
    track(toServer);
    const pair: [net.Socket, net.Socket] = [client, toServer];
    pairs.add(pair);
    client.on('close', () => {
      pairs.delete(pair);
      toServer.destroy();
    });
    toServer.on('close', () => client.destroy());
    client.pipe(toServer).pipe(client);
  });
  const listen = (port: number) => new Promise<void>((resolve, reject) => server.once('error', reject).listen(port, '127.0.0.1', () => resolve()));
  await listen(0);
  const port = (server.address() as net.AddressInfo).port;
  const cutAll = () => {
    for (const s of sockets) s.destroy();
  };
  let listening = true;
  onDispose(async () => {
    cutAll();
    if (listening) await new Promise((resolve) => server.close(resolve));
  });
  return {
    port,
    get resets() {
      return resets;
    },
    async refuse() {
      listening = false;
      const closed = new Promise((resolve) => server.close(resolve));
      cutAll();
      await closed;
    },
    blackhole() {
      mode = 'blackhole';
      for (const [client, toServer] of pairs) {
        client.unpipe(toServer);
        toServer.unpipe(client);
      }
    },
    reset() {
      mode = 'reset';
      cutAll();
    },
    async forward() {
      mode = 'forward';
      cutAll();
      if (!listening) {
        await listen(port);
        listening = true;
      }
    },
  };
}
