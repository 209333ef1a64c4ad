import type { ServerResponse } from 'node:http';

/** Ends the response with `body` as JSON, with its length so the connection can be kept alive. */
export function sendJson(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const payload = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(payload), ...headers }).end(payload);
}
