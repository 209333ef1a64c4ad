import type { IncomingMessage, Server } from 'node:http';
import type { Duplex } from 'node:stream';
import { GraphQLError, type DocumentNode, type ExecutionArgs } from 'graphql';
import { useServer } from 'graphql-ws/use/ws';
import { WebSocket, WebSocketServer } from 'ws';
import type { Connections } from '../auth/connections.js';
import type { Keys } from '../auth/keys.js';
import { authenticate, stillValid, UNAUTHENTICATED_MESSAGE, type Principal } from '../auth/principal.js';
import type { Quotas } from '../auth/quotas.js';
import { MAX_REQUEST_BYTES } from '../validation/limits.js';
import type { OriginPolicy } from './origin.js';
import { type FrameTarget, writeFramesTo } from './shared-execution.js';
import type { Yoga } from './yoga.js';

type EnvelopedRoot = { execute: (a: ExecutionArgs) => unknown; subscribe: (a: ExecutionArgs) => unknown };

export interface WsAccess {
  keys: Keys;
  origins: OriginPolicy;
  connections: Connections;
  quotas: Quotas;
}

/** What each socket carries once its connection_init was accepted. */
type SocketState = {
  principal?: Principal;
  release?: () => void;
  /** The upgrade request as operations see it, without the IncomingMessage (see UpgradeRequest). */
  upgrade?: UpgradeRequest;
  /** The TCP socket under the WebSocket, where SocketFrames writes its frames. */
  raw?: Duplex;
};

/**
 * The upgrade request as operations see it (`req` in their initial context): its URL and parsed
 * headers. graphql-ws keeps `extra.request`, the whole IncomingMessage (stream state, listeners,
 * raw headers and their strings), for the socket's life; onConnect keeps these two and lets it go.
 * Issue 18, 3,000 sockets of one subscription each, heap used after GC: 19.0 → 18.2 KB per socket.
 */
type UpgradeRequest = Pick<IncomingMessage, 'url' | 'headers'>;

/**
 * An operation's frame target (shared-execution.ts): a class, so each operation costs one small
 * object rather than two closures. Arrow functions in an object literal are each a closure, and
 * under tsx (esbuild's keepNames, `npm start`) each also gets its `name` redefined, which gives it a
 * 256-byte property dictionary of its own. Issue 18, 3,000 sockets of one subscription each, heap
 * used after GC: 17.6 → 16.9 KB per subscription.
 *
 * A frame is written as one buffer straight to the TCP socket under the WebSocket (the upgrade
 * request's socket, which ws took over): the WebSocket header, this subscriber's head and the shared
 * tail copied in. Through `WebSocket.send(string)`, ws encoded the whole text again for every
 * subscriber, allocated a header, and corked two writes into a `writev`. The bytes are the same
 * (a final unmasked text frame, as a server sends with ws's defaults: no permessage-deflate), and
 * order holds because ws's own sender writes to the same socket synchronously, so frames from here
 * and from graphql-ws reach the socket in the order they were sent. That holds while ws's sender
 * never queues: no permessage-deflate (pinned off below, and tested), no Blob sent, no fragmented
 * (`fin: false`) message; graphql-ws sends only whole strings and empty pings. The backlog `open()`
 * reads is the socket's write buffer (`writableLength`), which counts these frames and ws's own: it is
 * ws's `bufferedAmount` without its sender's queue, which is empty for the same reasons. Read there,
 * a broadcast does not load each subscriber's ws sender as well.
 */
export class SocketFrames implements FrameTarget {
  constructor(
    readonly id: string,
    private readonly socket: Pick<WebSocket, 'readyState'>,
    private readonly raw: Pick<Duplex, 'write' | 'writableLength'>,
  ) {}
  /**
   * Open, and not holding a backlog: a client that does not read would otherwise collect a copy
   * of every frame in ws's send buffer. Past MAX_BUFFERED_BYTES the subscription goes on through
   * graphql-ws, which waits for each write before taking the next value.
   */
  open(): boolean {
    return this.socket.readyState === WebSocket.OPEN && this.raw.writableLength < MAX_BUFFERED_BYTES;
  }
  send(head: Uint8Array, tail: Uint8Array): void {
    this.raw.write(textFrame(head, tail));
  }
}

/**
 * One final, unmasked WebSocket text frame (RFC 6455 §5.2) whose payload is `head` then `tail`,
 * both UTF-8 bytes: the header's length is 7 bits, or 126 and 16 bits, or 127 and 64 bits.
 */
export function textFrame(head: Uint8Array, tail: Uint8Array): Buffer {
  const length = head.length + tail.length;
  const offset = length < 126 ? 2 : length < 65_536 ? 4 : 10;
  const frame = Buffer.allocUnsafe(offset + length);
  frame[0] = 0x81; // FIN, opcode 1 (text)
  if (length < 126) frame[1] = length;
  else if (length < 65_536) {
    // By hand rather than writeUInt16BE, whose checks showed in the broadcast's profile.
    frame[1] = 126;
    frame[2] = length >>> 8;
    frame[3] = length & 0xff;
  } else {
    frame[1] = 127;
    frame.writeUInt32BE(Math.floor(length / 2 ** 32), 2);
    frame.writeUInt32BE(length % 2 ** 32, 6);
  }
  frame.set(head, offset);
  frame.set(tail, offset + head.length);
  return frame;
}

/** A socket's unsent bytes beyond which its frames are no longer written from inside the publish. */
export const MAX_BUFFERED_BYTES = 1024 * 1024;

/** graphql-ws's own code for "not authenticated"; the reason carries our error code. */
const UNAUTHORIZED = 4401;
/** Beyond MAX_SOCKETS_PER_KEY: 4429, as HTTP's 429, in graphql-ws's application range. */
const TOO_MANY = 4429;

/**
 * graphql-ws on the same port and path as HTTP. Operations go through yoga's envelope so they get
 * the same context, plugins and limits as HTTP requests. A socket is authenticated once, by its
 * connection_init; it is closed when its key is revoked (see auth/connections.ts).
 * @returns a disposer that closes every socket and the WebSocket server.
 */
export function attachGraphqlWs(server: Server, yoga: Yoga, { keys, origins, connections, quotas }: WsAccess): () => Promise<void> {
  // The same body limit as HTTP: a createVideo over the socket carries the same image.
  const wss = new WebSocketServer({
    server,
    path: yoga.graphqlEndpoint,
    maxPayload: MAX_REQUEST_BYTES,
    // Off (ws's default for servers), and it must stay off: SocketFrames writes uncompressed frames
    // straight to the socket, and a deflating sender would also queue its own frames behind them.
    perMessageDeflate: false,
    // Browsers let any page open a WebSocket anywhere; only the Origin tells them apart.
    verifyClient: ({ req }, done) => {
      const verdict = origins.check(req, keys.isEmpty());
      if (verdict.ok) done(true);
      else done(false, 403, verdict.code);
    },
  });
  const disposable = useServer<Record<string, unknown> | undefined, SocketState>(
    {
      // The key rides in connection_init (browsers cannot set headers on a WebSocket).
      onConnect: (ctx) => {
        const socket = ctx.extra.socket;
        // Operations read the upgrade request's URL and headers (baseUrl: its Host); the rest goes.
        const { url, headers, socket: raw } = ctx.extra.request;
        ctx.extra.upgrade = { url, headers };
        ctx.extra.raw = raw;
        (ctx.extra as { request?: IncomingMessage }).request = undefined;
        const principal = authenticate(keys, ctx.connectionParams?.authorization);
        if (!principal) {
          socket.close(UNAUTHORIZED, 'UNAUTHENTICATED');
          return false;
        }
        const max = quotas.maxSockets(principal);
        if (max !== undefined && connections.count(principal.owner) >= max) {
          socket.close(TOO_MANY, 'TOO_MANY_SOCKETS');
          return false;
        }
        ctx.extra.principal = principal;
        ctx.extra.release = connections.track(principal.owner, () => {
          socket.close(UNAUTHORIZED, 'UNAUTHENTICATED');
          // A client that never answers the close frame must not keep its subscriptions alive.
          setTimeout(() => socket.terminate(), 1000).unref();
        });
        return true;
      },
      onClose: (ctx) => ctx.extra.release?.(),
      execute: (args) => (args.rootValue as EnvelopedRoot).execute(args) as never,
      subscribe: (args) => (args.rootValue as EnvelopedRoot).subscribe(args) as never,
      onSubscribe: async (ctx, id, payload) => {
        // Revocation counts from the next operation, even before the watcher closes the socket.
        if (!ctx.extra.principal || !stillValid(keys, ctx.extra.principal)) {
          ctx.extra.socket.close(UNAUTHORIZED, 'UNAUTHENTICATED');
          return [new GraphQLError(UNAUTHENTICATED_MESSAGE, { extensions: { code: 'UNAUTHENTICATED' } })];
        }
        // Counts this operation too (graphql-ws registers it before asking us).
        const open = Object.keys(ctx.subscriptions).length;
        if (open > quotas.settings.maxSubscriptionsPerSocket) {
          return [
            new GraphQLError(`at most ${quotas.settings.maxSubscriptionsPerSocket} operations at once on one socket (MAX_SUBSCRIPTIONS_PER_SOCKET)`, {
              extensions: { code: 'TOO_MANY_SUBSCRIPTIONS' },
            }),
          ];
        }
        // The initial context becomes the operation's context (envelop assigns ours onto it), and it
        // lives as long as the subscription: only what yoga, its plugins and app.ts's context factory
        // read. Not graphql-ws's own ctx (connectionParams, the socket's subscriptions, extra), which
        // no resolver or plugin reads and which made the context a 21-property dictionary (832 bytes
        // of properties alone). Issue 18, 3,000 sockets of one subscription each, heap used after GC:
        // 18.2 → 17.6 KB per subscription.
        const { schema, execute, subscribe, contextFactory, parse, validate } = yoga.getEnveloped({
          req: ctx.extra.upgrade,
          socket: ctx.extra.socket,
          principal: ctx.extra.principal,
          params: payload,
        });
        // A syntax error (or a token-limit refusal) is this operation's error; thrown, graphql-ws
        // would close the whole socket and every other subscription on it.
        let document: DocumentNode;
        try {
          document = parse(payload.query);
        } catch (err) {
          if (err instanceof GraphQLError) return [err];
          throw err;
        }
        const errors = validate(schema, document);
        if (errors.length) return errors;
        const contextValue = await contextFactory();
        // A subscription's `next` frames are written from inside the publish (shared-execution.ts).
        if (ctx.extra.raw) writeFramesTo(contextValue, new SocketFrames(id, ctx.extra.socket, ctx.extra.raw));
        return {
          schema,
          operationName: payload.operationName,
          document,
          variableValues: payload.variables,
          contextValue,
          rootValue: { execute, subscribe } satisfies EnvelopedRoot,
        };
      },
    },
    wss,
  );
  return async () => {
    await disposable.dispose();
    await new Promise<void>((resolve) => wss.close(() => resolve()));
  };
}
