import jpeg from 'jpeg-js';
import { PNG } from 'pngjs';
import { must } from './must.js';

/** A real PNG of the given size (flat grey, fast to encode). */
export function png(width: number, height: number): Buffer {
  const image = new PNG({ width, height });
  image.data.fill(128);
  return PNG.sync.write(image, { deflateLevel: 1 });
}

/** A real baseline JPEG. */
export function jpg(width: number, height: number): Buffer {
  return Buffer.from(jpeg.encode({ data: Buffer.alloc(width * height * 4, 128), width, height }, 50).data);
}

export const gif1x1 = Buffer.from('R0lGODlhAQABAIAAAAAAAP///ywAAAAAAQABAAACAUwAOw==', 'base64');

const crcTable = Array.from({ length: 256 }, (_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c >>> 0;
});
function crc32(buf: Buffer): number {
  let c = 0xffffffff;
  for (const b of buf) c = must(crcTable[(c ^ b) & 0xff]) ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

/**
 * Grows a PNG to exactly `size` bytes with a private ancillary chunk before IEND, so the file
 * stays a valid PNG that decoders read (and skip the padding of).
 */
export function pngOfSize(width: number, height: number, size: number): Buffer {
  const base = png(width, height);
  const iend = base.length - 12;
  const dataLength = size - base.length - 12;
  if (dataLength < 0) throw new Error('target size below the bare PNG');
  const chunk = Buffer.alloc(12 + dataLength);
  chunk.writeUInt32BE(dataLength, 0);
  chunk.write('prVt', 4, 'latin1');
  chunk.writeUInt32BE(crc32(chunk.subarray(4, 8 + dataLength)), 8 + dataLength);
  return Buffer.concat([base.subarray(0, iend), chunk, base.subarray(iend)]);
}

export const dataUri = (bytes: Buffer, mime = 'image/png') => `data:${mime};base64,${bytes.toString('base64')}`;
