import type { IncomingMessage, ServerResponse } from 'node:http';

/** A GraphQL-shaped error body for failures that happen before yoga sees the request. */
export function replyGraphqlError(res: ServerResponse, status: number, code: string, message: string): void {
  const body = JSON.stringify({ errors: [{ message, extensions: { code } }] });
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(body) });
  res.end(body);
}

/**
 * Refuses a body over `limit` bytes with 413 PAYLOAD_TOO_LARGE before anything parses it.
 * A declared Content-Length is judged at once; a chunked body is buffered up to the limit and
 * handed to yoga as `req.body`. Returns false when the request was answered here.
 */
export async function enforceBodyLimit(req: IncomingMessage, res: ServerResponse, limit: number): Promise<boolean> {
  const tooLarge = (size: string) => {
    // Drain what is still coming so the client reads our answer instead of a reset connection.
    req.resume();
    replyGraphqlError(res, 413, 'PAYLOAD_TOO_LARGE', `request body is ${size} bytes; the limit is ${limit} (room for a 20 MiB image as base64)`);
    return false;
  };
  const declared = req.headers['content-length'];
  if (declared !== undefined) return Number(declared) > limit ? tooLarge(declared) : true;
  if (req.headers['transfer-encoding'] === undefined) return true;
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > limit) return tooLarge(`over ${limit}`);
    chunks.push(chunk);
  }
  (req as IncomingMessage & { body?: Buffer }).body = Buffer.concat(chunks);
  return true;
}
