import { GraphQLError } from 'graphql';
import type { Plugin } from 'graphql-yoga';

const tooLarge = () =>
  new GraphQLError('Request body too large', { extensions: { code: 'REQUEST_ENTITY_TOO_LARGE', http: { status: 413 } } });
const badLength = () => new GraphQLError('Content-Length header is invalid.', { extensions: { code: 'BAD_REQUEST', http: { status: 400 } } });

/**
 * The request-body limit, judged on Content-Length when there is one, and on the stream only for a
 * body without it (chunked). Yoga's own `maxRequestBodySize` pipes every body through a
 * TransformStream, and Node's stream pipeline builds an AbortController and a DOMException per
 * request: ~40% of the server's time on a `prediction(id)` query (../shared/PERFORMANCE.md). Node's
 * HTTP parser never hands over more bytes than Content-Length says (what follows is parsed as the
 * next request, and a request carrying both Content-Length and chunked encoding is refused with
 * 400), so the header alone bounds such a body. Same errors and codes as yoga's (413
 * REQUEST_ENTITY_TOO_LARGE, 400 for a malformed length); register it last, after the parsers.
 */
export function useBodyLimit(limit: number): Plugin {
  return {
    onRequestParse({ request, requestParser, setRequestParser }) {
      const contentLength = request.headers.get('content-length');
      if (contentLength !== null) {
        if (!/^\d+$/.test(contentLength)) throw badLength();
        if (Number(contentLength) > limit) throw tooLarge();
        return;
      }
      if (!requestParser || !request.body) return;
      const parse = requestParser;
      setRequestParser((req) => (req.body ? parse(countedBody(req, req.body, limit)) : parse(req)));
    },
  };
}

/**
 * How long a refused chunked body is still read (and thrown away) after the 413. Cancelling the body
 * at once destroys the socket with the client's bytes unread, and the kernel answers those with a
 * reset that can reach the client before it has read the 413 (CI saw `write ECONNRESET` instead of
 * the answer). Reading on until the client stops, for at most this long, is nginx's lingering close.
 */
export const LINGER_MS = 5_000;

/**
 * The same request with a body that errors once more than `limit` bytes have passed; the rest of
 * the body is then drained for up to LINGER_MS before the connection is let go.
 */
function countedBody(request: Request, stream: ReadableStream<Uint8Array>, limit: number): Request {
  const reader = stream.getReader();
  let bytes = 0;
  const body = new ReadableStream<Uint8Array>({
    async pull(controller) {
      const { done, value } = await reader.read();
      if (done) return controller.close();
      bytes += value.byteLength;
      if (bytes <= limit) return controller.enqueue(value);
      controller.error(tooLarge());
      void linger(reader);
    },
    cancel: (reason) => reader.cancel(reason),
  });
  return new Request(request.url, { method: request.method, headers: request.headers, signal: request.signal, body, duplex: 'half' } as RequestInit);
}

async function linger(reader: ReadableStreamDefaultReader<Uint8Array>): Promise<void> {
  const timer = setTimeout(() => void reader.cancel().catch(() => {}), LINGER_MS);
  timer.unref();
  try {
    while (!(await reader.read()).done) {}
  } catch {
    // The client went away or the timer cancelled the read: either way there is nothing left to drain.
  } finally {
    clearTimeout(timer);
  }
}
