import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

const DATA_URI = /^data:image\/(jpeg|jpg|png);base64,/i;
const NAME = /^[0-9a-f]{64}\.(jpg|png)$/;

export interface StoredImage {
  /** `<sha256>.<ext>` under the store's directory. */
  name: string;
  contentType: 'image/jpeg' | 'image/png';
}

/**
 * First-frame images given as data URIs, kept once as content-addressed files under
 * DATA_DIR/images, never in a database row: a 20 MiB image would otherwise be 27 MB of base64 in
 * SQLite, read back on every submission attempt. The same image sent twice is one file.
 */
export class ImageStore {
  constructor(readonly dir: string) {
    mkdirSync(dir, { recursive: true });
  }

  /** Stores an already validated data URI (see validation/image.ts); returns its name. */
  put(dataUri: string): StoredImage {
    const header = DATA_URI.exec(dataUri);
    if (!header) throw new Error('not a JPEG or PNG data URI');
    const bytes = Buffer.from(dataUri.slice(header[0].length), 'base64');
    const png = header[1]?.toLowerCase() === 'png';
    const name = `${createHash('sha256').update(bytes).digest('hex')}.${png ? 'png' : 'jpg'}`;
    const path = join(this.dir, name);
    if (!existsSync(path)) {
      // Written whole, then renamed: a reader never sees half a file, and a crash leaves only a temp file.
      const tmp = join(this.dir, `.partial-${randomBytes(8).toString('hex')}`);
      try {
        writeFileSync(tmp, bytes);
        renameSync(tmp, path);
      } finally {
        rmSync(tmp, { force: true });
      }
    }
    return { name, contentType: png ? 'image/png' : 'image/jpeg' };
  }

  read(name: string): Buffer {
    if (!NAME.test(name)) throw new Error(`not an image name this store makes: ${name}`);
    try {
      return readFileSync(join(this.dir, name));
    } catch (err) {
      // Said without the server's path, which would reach the prediction's `error`. With several
      // instances on one Postgres, DATA_DIR/images must be a volume they share.
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw new Error(`the image file ${name} is not in this gateway's DATA_DIR/images`);
      throw err;
    }
  }

  contentType(name: string): 'image/jpeg' | 'image/png' {
    return name.endsWith('.png') ? 'image/png' : 'image/jpeg';
  }

  has(name: string): boolean {
    return NAME.test(name) && existsSync(join(this.dir, name));
  }

  remove(name: string): void {
    if (NAME.test(name)) rmSync(join(this.dir, name), { force: true });
  }
}
