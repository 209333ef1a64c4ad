import { request } from 'node:http';

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
