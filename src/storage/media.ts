import { createHash, randomBytes } from 'node:crypto';
import { createWriteStream, existsSync, mkdirSync } from 'node:fs';
import { rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { isRetryableStatus, withTimeout } from '../upstream/wavespeed.js';

export interface MediaStoreOptions {
  dir: string;
  /** Largest file accepted. */
  maxBytes: number;
  /** Covers the whole download. */
  timeoutMs: number;
  fetch?: typeof fetch;
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
    const doFetch = this.o.fetch ?? fetch;
    const tmp = join(this.dir, `.partial-${randomBytes(8).toString('hex')}`);
    try {
      const res = await doFetch(url, { signal: withTimeout(this.o.timeoutMs, signal) }).catch((err: Error) => {
        throw new MediaError(`downloading ${url}: ${err.message}`, true);
      });
      if (!res.ok || !res.body) {
        await res.body?.cancel(); // release the connection now, not at garbage collection
        throw new MediaError(`downloading ${url}: HTTP ${res.status}`, isRetryableStatus(res.status));
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
        throw err instanceof MediaError ? err : new MediaError(`downloading ${url}: ${err.message}`, true);
      });
      const type = (res.headers.get('content-type') ?? '').split(';')[0]!.trim();
      const name = `${hash.digest('hex')}.${EXTENSIONS[type] ?? 'bin'}`;
      await rename(tmp, join(this.dir, name));
      return name;
    } finally {
      await rm(tmp, { force: true });
    }
  }

  /** Whether `name` is a kept file; false for any name this store would never have made. */
  has(name: string): boolean {
    return NAME.test(name) && existsSync(join(this.dir, name));
  }
}
