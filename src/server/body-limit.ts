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

/** The same request with a body that errors once more than `limit` bytes have passed. */
function countedBody(request: Request, stream: ReadableStream<Uint8Array>, limit: number): Request {
  let bytes = 0;
  const body = stream.pipeThrough(
    new TransformStream<Uint8Array, Uint8Array>({
      transform(chunk, controller) {
        bytes += chunk.byteLength;
        if (bytes > limit) controller.error(tooLarge());
        else controller.enqueue(chunk);
      },
    }),
  );
  return new Request(request.url, { method: request.method, headers: request.headers, signal: request.signal, body, duplex: 'half' } as RequestInit);
}
