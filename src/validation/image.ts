import { imageSize } from 'image-size';
import type { ResolveHost } from './address.js';
import { addressesOf, isPublicAddress } from './address.js';
import { InputError } from './errors.js';
import { imageRuleViolation } from './image-rules.js';
import { MAX_IMAGE_BYTES, MAX_IMAGE_URL_CHARS } from './limits.js';

const FIELD = 'input.image';
const DATA_URI = /^data:image\/(jpeg|jpg|png);base64,/i;
const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;

/**
 * Checks an image the way upstream will: a data URI is decoded and its real bytes judged (format by
 * magic bytes, dimensions, size); a URL must be http(s), carry no credentials and resolve only to
 * public addresses. The gateway never fetches a URL image itself (upstream does), so it cannot be
 * turned into a proxy towards private networks.
 */
export async function checkImage(raw: string, resolveHost: ResolveHost): Promise<string> {
  const image = raw.trim();
  if (!image) throw new InputError('BAD_USER_INPUT', 'image must not be empty; leave it out for text-to-video', FIELD);
  if (/^data:/i.test(image)) {
    checkDataUri(image);
    return image;
  }
  await checkImageUrl(image, resolveHost);
  return image;
}

function checkDataUri(uri: string): void {
  const header = DATA_URI.exec(uri);
  if (!header) {
    throw new InputError('IMAGE_FORMAT', 'image data URI must be data:image/jpeg;base64,… or data:image/png;base64,…', FIELD);
  }
  const payload = uri.slice(header[0].length);
  const padding = payload.endsWith('==') ? 2 : payload.endsWith('=') ? 1 : 0;
  const bytes = (payload.length / 4) * 3 - padding;
  if (payload.length % 4 !== 0 || !BASE64.test(payload)) {
    throw new InputError('BAD_USER_INPUT', 'image data URI is not valid base64', FIELD);
  }
  if (bytes > MAX_IMAGE_BYTES) {
    throw new InputError('IMAGE_TOO_LARGE', `image is ${bytes} bytes; the limit is ${MAX_IMAGE_BYTES} (20 MiB)`, FIELD);
  }
  checkImageBytes(Buffer.from(payload, 'base64'));
}

function checkImageBytes(buffer: Buffer): void {
  let size: { type?: string; width?: number; height?: number };
  try {
    size = imageSize(buffer);
  } catch {
    throw new InputError('IMAGE_FORMAT', 'image is not a readable JPEG or PNG', FIELD);
  }
  const violation = imageRuleViolation({ type: size.type, width: size.width ?? 0, height: size.height ?? 0, bytes: buffer.length });
  if (violation) throw new InputError(violation.code, violation.message, FIELD);
}

async function checkImageUrl(raw: string, resolveHost: ResolveHost): Promise<void> {
  if (raw.length > MAX_IMAGE_URL_CHARS) {
    throw new InputError('IMAGE_URL_INVALID', `image URL is longer than ${MAX_IMAGE_URL_CHARS} characters`, FIELD);
  }
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new InputError('IMAGE_URL_INVALID', 'image must be a data:image/…;base64 URI or an http(s) URL', FIELD);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new InputError('IMAGE_URL_INVALID', `image URL scheme ${url.protocol} is not allowed; use http or https`, FIELD);
  }
  if (url.username || url.password) throw new InputError('IMAGE_URL_INVALID', 'image URL must not contain credentials', FIELD);
  const host = url.hostname;
  let addresses: string[];
  try {
    addresses = await addressesOf(url, resolveHost);
  } catch (err) {
    throw new InputError('IMAGE_URL_UNRESOLVABLE', `image URL host ${host} could not be resolved: ${(err as Error).message}`, FIELD);
  }
  if (!addresses.length) throw new InputError('IMAGE_URL_UNRESOLVABLE', `image URL host ${host} has no address`, FIELD);
  const blocked = addresses.find((a) => !isPublicAddress(a));
  if (blocked !== undefined) {
    throw new InputError('IMAGE_URL_FORBIDDEN', `image URL points at a non-public address (${blocked}); only public hosts are allowed`, FIELD);
  }
}
