import { request } from 'node:http';
import { connect } from 'node:net';

/** An answer as node:http's client received it. */
export interface RawAnswer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  /** Names as sent, in the order sent: name, value, name, value… */
  rawHeaders: string[];
  text: string;
}

/**
 * One request over node:http, so Host, Origin, Content-Length and Transfer-Encoding are sent exactly
 * as given (fetch sets some of them itself, as a browser would). POST /graphql unless told otherwise.
 */
export function rawRequest(
  url: string,
  opts: { method?: string; path?: string; headers?: Record<string, string>; body?: string | Buffer } = {},
): Promise<RawAnswer> {
  return new Promise((resolve, reject) => {
    const req = request(`${url}${opts.path ?? '/graphql'}`, { method: opts.method ?? 'POST', headers: opts.headers }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d) => (text += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, rawHeaders: res.rawHeaders, text }));
    });
    req.on('error', reject);
    req.end(opts.body);
  });
}

/** POST /graphql as HTTP/1.0 without a Host header (node:http always sends one), over a raw socket. */
export function postWithoutHost(url: string, query: string, variables: Record<string, unknown>, headers: Record<string, string>) {
  const { port } = new URL(url);
  const body = JSON.stringify({ query, variables });
  const head = Object.entries({ 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(body)), ...headers })
    .map(([k, v]) => `${k}: ${v}\r\n`)
    .join('');
  return new Promise<{ status: number; body: string }>((resolve, reject) => {
    const socket = connect(Number(port), '127.0.0.1', () => socket.end(`POST /graphql HTTP/1.0\r\n${head}\r\n${body}`));
    let text = '';
    socket.setEncoding('utf8');
    socket.on('data', (d) => (text += d));
    socket.on('error', reject);
    // HTTP/1.0: the server closes the connection after its answer.
    socket.on('end', () => resolve({ status: Number(text.split(' ', 2)[1]), body: text.slice(text.indexOf('\r\n\r\n') + 4) }));
  });
}

/**
 * One POST /graphql of `body`: with its Content-Length, or chunked (no Content-Length), which the
 * gateway's early paths (server/early-answer.ts, early-execution.ts) never read, so yoga answers it.
 */
export function postBody(url: string, body: string, headers: Record<string, string> = { 'content-type': 'application/json' }, chunked = false): Promise<RawAnswer> {
  return rawRequest(url, { body, headers: { ...headers, ...(chunked ? { 'transfer-encoding': 'chunked' } : { 'content-length': String(Buffer.byteLength(body)) }) } });
}

/** Headers that differ between any two answers (a new id and date each time, the connection's own). */
const PER_RESPONSE = new Set(['date', 'x-request-id', 'connection', 'keep-alive']);

/**
 * An answer as two answers are compared: status, every other header as sent (name's spelling, value,
 * order) and the body. With `mask` (ids, times), the body masked, and Content-Length checked against
 * the masked body (`length`) rather than compared: a masked body may differ in length only where ids
 * of one length were replaced.
 */
export function comparable(r: RawAnswer, mask?: (text: string) => string) {
  const body = mask ? mask(r.text) : r.text;
  return {
    status: r.status,
    headers: r.rawHeaders.flatMap((name, i) => {
      if (i % 2 === 1 || PER_RESPONSE.has(name.toLowerCase())) return [];
      return [`${name}: ${mask && name.toLowerCase() === 'content-length' ? '(length)' : r.rawHeaders[i + 1]}`];
    }),
    ...(mask ? { length: Number(r.headers['content-length']) - r.text.length + body.length } : {}),
    body,
  };
}
