import { createHash, randomBytes } from 'node:crypto';
import { createWriteStream, existsSync, mkdirSync, rmSync } from 'node:fs';
import { rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { isRetryableStatus, withTimeout } from '../http-helpers.js';
import { addressesOf, isPublicAddress, type ResolveHost } from '../validation/address.js';

export interface MediaStoreOptions {
  dir: string;
  /** Largest file accepted. */
  maxBytes: number;
  /** Covers the whole download. */
  timeoutMs: number;
  fetch?: typeof fetch;
  /** DNS for the address guard; tests inject a table. */
  resolveHost: ResolveHost;
  /**
   * Hosts (`host:port`) trusted whatever their address: the configured upstream's own, which may be
   * this machine (the sandbox) or a private network. Late-bound: the sandbox's port is known only once listening.
   */
  trustedHosts: () => readonly string[];
}

export class MediaError extends Error {
  constructor(
    message: string,
    /** Worth another try later (network trouble, 5xx) rather than a lost cause (404, too large). */
    readonly transient: boolean,
  ) {
    super(message);
    this.name = 'MediaError';
  }
}

const EXTENSIONS: Record<string, string> = { 'video/mp4': 'mp4', 'video/webm': 'webm', 'video/quicktime': 'mov' };
const NAME = /^[0-9a-f]{64}\.(mp4|webm|mov|bin)$/;
/** Redirects followed per download; outputs normally sit behind one at most (a CDN). */
export const MAX_REDIRECTS = 3;

/** A URL fit for an error message or a log: no query string or fragment (signed URLs carry tokens there). */
export function redact(url: string): string {
  try {
    const u = new URL(url);
    return `${u.origin}${u.pathname}`;
  } catch {
    return '(an invalid URL)';
  }
}

/**
 * Content-addressed copies of outputs under DATA_DIR/media, named `<sha256>.<ext>`: a retried
 * download or two predictions with the same bytes end in one file, and a name never changes meaning.
 */
export class MediaStore {
  readonly dir: string;

  constructor(private readonly o: MediaStoreOptions) {
    this.dir = o.dir;
    mkdirSync(this.dir, { recursive: true });
  }

  /** Downloads `url` and returns the kept file's name; `signal` cancels (shutdown). */
  async keep(url: string, signal?: AbortSignal): Promise<string> {
    const tmp = join(this.dir, `.partial-${randomBytes(8).toString('hex')}`);
    try {
      const res = await this.fetchGuarded(url, withTimeout(this.o.timeoutMs, signal));
      if (!res.ok || !res.body) {
        await res.body?.cancel(); // release the connection now, not at garbage collection
        throw new MediaError(`downloading ${redact(url)}: HTTP ${res.status}`, isRetryableStatus(res.status));
      }
      const declared = Number(res.headers.get('content-length') ?? 0);
      if (declared > this.o.maxBytes) {
        await res.body.cancel();
        throw new MediaError(`output is ${declared} bytes; the limit is ${this.o.maxBytes}`, false);
      }
      const hash = createHash('sha256');
      let size = 0;
      const maxBytes = this.o.maxBytes;
      const meter = new Transform({
        transform(chunk: Buffer, _enc, done) {
          size += chunk.length;
          if (size > maxBytes) return done(new MediaError(`output is over the limit of ${maxBytes} bytes`, false));
          hash.update(chunk);
          done(null, chunk);
        },
      });
      await pipeline(Readable.fromWeb(res.body as never), meter, createWriteStream(tmp)).catch((err: Error) => {
        throw err instanceof MediaError ? err : new MediaError(`downloading ${redact(url)}: ${err.message}`, true);
      });
      const [mediaType = ''] = (res.headers.get('content-type') ?? '').split(';');
      const type = mediaType.trim();
      const name = `${hash.digest('hex')}.${EXTENSIONS[type] ?? 'bin'}`;
      await rename(tmp, join(this.dir, name));
      return name;
    } finally {
      await rm(tmp, { force: true });
    }
  }

  /**
   * GETs `url`, following at most MAX_REDIRECTS redirects by hand, and checks every hop before
   * connecting: http(s) only, and either a trusted host or one whose every address is public. An
   * upstream answer (or a redirect) pointing into this machine or its network is refused, never fetched.
   * (A name that resolves differently between the check and the connection is not caught here.)
   */
  private async fetchGuarded(url: string, signal: AbortSignal): Promise<Response> {
    const doFetch = this.o.fetch ?? fetch;
    let current = url;
    for (let hop = 0; ; hop++) {
      await this.checkHop(current);
      const res = await doFetch(current, { signal, redirect: 'manual' }).catch((err: Error) => {
        throw new MediaError(`downloading ${redact(current)}: ${err.message}`, true);
      });
      const location = res.status >= 300 && res.status < 400 ? res.headers.get('location') : null;
      if (location === null) return res;
      await res.body?.cancel();
      if (hop >= MAX_REDIRECTS) throw new MediaError(`downloading ${redact(url)}: more than ${MAX_REDIRECTS} redirects`, false);
      current = URL.canParse(location, current) ? new URL(location, current).toString() : location; // checkHop refuses a bad one
    }
  }

  private async checkHop(raw: string): Promise<void> {
    const refuse = (why: string) => new MediaError(`refusing to download ${redact(raw)}: ${why}`, false);
    let url: URL;
    try {
      url = new URL(raw);
    } catch {
      throw refuse('not a URL');
    }
    if (url.protocol !== 'http:' && url.protocol !== 'https:') throw refuse(`scheme ${url.protocol} is not allowed`);
    if (this.o.trustedHosts().includes(url.host)) return;
    let addresses: string[];
    try {
      addresses = await addressesOf(url, this.o.resolveHost);
    } catch (err) {
      throw new MediaError(`downloading ${redact(raw)}: host could not be resolved: ${(err as Error).message}`, true);
    }
    const blocked = addresses.find((a) => !isPublicAddress(a));
    if (blocked !== undefined || !addresses.length) throw refuse(`it points at a non-public address (${blocked ?? 'none'})`);
  }

  /** Removes a kept file; false for a name this store would never have made, or one already gone. */
  remove(name: string): boolean {
    if (!this.has(name)) return false;
    rmSync(join(this.dir, name), { force: true });
    return true;
  }

  /** Whether `name` is a kept file; false for any name this store would never have made. */
  has(name: string): boolean {
    return NAME.test(name) && existsSync(join(this.dir, name));
  }
}
