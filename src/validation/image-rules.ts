import { MAX_IMAGE_BYTES, MIN_IMAGE_SHORT_SIDE } from './limits.js';

/**
 * The rules an image's real bytes must meet, as a pure function with no Node imports: the server
 * (src/validation/image.ts) and the web page (web/main.ts, bundled for the browser) both call it,
 * so the page refuses exactly what the server would, with the same code and message.
 */
export type ImageRuleCode = 'IMAGE_FORMAT' | 'IMAGE_TOO_SMALL' | 'IMAGE_ASPECT_RATIO' | 'IMAGE_TOO_LARGE';

export interface ImageFacts {
  /** What the magic bytes say: 'jpg', 'png', another format name, or undefined when unknown. */
  type?: string;
  width: number;
  height: number;
  bytes: number;
}

type Violation = { code: ImageRuleCode; message: string } | undefined;

export function imageRuleViolation({ type, width, height, bytes }: ImageFacts): Violation {
  return imageFileViolation({ type, bytes }) ?? imageDimensionViolation(width, height);
}

/** What can be judged before decoding: size and format. */
export function imageFileViolation({ type, bytes }: Pick<ImageFacts, 'type' | 'bytes'>): Violation {
  if (bytes > MAX_IMAGE_BYTES) return { code: 'IMAGE_TOO_LARGE', message: `image is ${bytes} bytes; the limit is ${MAX_IMAGE_BYTES} (20 MiB)` };
  if (type !== 'jpg' && type !== 'png') {
    return { code: 'IMAGE_FORMAT', message: `image is ${type ?? 'of an unknown format'}; only JPEG and PNG are accepted` };
  }
  return undefined;
}

export function imageDimensionViolation(width: number, height: number): Violation {
  if (Math.min(width, height) < MIN_IMAGE_SHORT_SIDE) {
    return { code: 'IMAGE_TOO_SMALL', message: `image is ${width}×${height}; its short side must be over 300 px` };
  }
  // Strictly between 2:5 and 5:2, in integers: 2/5 < w/h < 5/2.
  if (!(5 * width > 2 * height && 2 * width < 5 * height)) {
    return { code: 'IMAGE_ASPECT_RATIO', message: `image is ${width}×${height}; its aspect ratio must be between 2:5 and 5:2` };
  }
  return undefined;
}

/**
 * Format by magic bytes, named as image-size names them, so a refusal reads the same in the
 * browser as from the server ("image is gif; …").
 */
export function sniffImageType(head: Uint8Array): 'jpg' | 'png' | 'gif' | 'webp' | 'bmp' | undefined {
  const starts = (bytes: number[], at = 0) => bytes.every((b, i) => head[at + i] === b);
  if (starts([0xff, 0xd8, 0xff])) return 'jpg';
  if (starts([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a])) return 'png';
  if (starts([0x47, 0x49, 0x46, 0x38])) return 'gif';
  if (starts([0x52, 0x49, 0x46, 0x46]) && starts([0x57, 0x45, 0x42, 0x50], 8)) return 'webp';
  if (starts([0x42, 0x4d])) return 'bmp';
  return undefined;
}
