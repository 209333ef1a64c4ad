import { addressesOf, isPublicAddress, type ResolveHost } from '../validation/address.js';
import { InputError } from '../validation/errors.js';

export const MAX_WEBHOOK_URL_CHARS = 2048;
const FIELD = 'input.webhookUrl';

/**
 * Checks a client's webhook URL as the image-URL guard checks image URLs: http(s), no credentials,
 * and (unless WEBHOOK_ALLOW_PRIVATE) every address its host stands for public, so the gateway can
 * never be made to POST into its own machine or network. Returns the URL as parsed.
 */
export async function checkWebhookUrl(raw: string, resolveHost: ResolveHost, allowPrivate: boolean): Promise<URL> {
  if (raw.trim() === '') throw new InputError('WEBHOOK_URL_INVALID', 'webhookUrl must not be empty', FIELD);
  if (raw.length > MAX_WEBHOOK_URL_CHARS) {
    throw new InputError('WEBHOOK_URL_INVALID', `webhookUrl is longer than ${MAX_WEBHOOK_URL_CHARS} characters`, FIELD);
  }
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new InputError('WEBHOOK_URL_INVALID', 'webhookUrl must be an absolute http(s) URL', FIELD);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new InputError('WEBHOOK_URL_INVALID', `webhookUrl scheme ${url.protocol} is not allowed; use http or https`, FIELD);
  }
  if (url.username || url.password) throw new InputError('WEBHOOK_URL_INVALID', 'webhookUrl must not contain credentials', FIELD);
  if (allowPrivate) return url;
  const blocked = await blockedAddress(url, resolveHost).catch((err: Error) => {
    throw new InputError('WEBHOOK_URL_UNRESOLVABLE', `webhookUrl host ${url.hostname} could not be resolved: ${err.message}`, FIELD);
  });
  if (blocked !== undefined) {
    throw new InputError(
      'WEBHOOK_URL_FORBIDDEN',
      `webhookUrl points at a non-public address (${blocked}); only public hosts are allowed (WEBHOOK_ALLOW_PRIVATE=true lifts this for private deployments)`,
      FIELD,
    );
  }
  return url;
}

/** The first non-public address `url`'s host stands for, undefined when all are public; throws when it has none. */
export async function blockedAddress(url: URL, resolveHost: ResolveHost): Promise<string | undefined> {
  const addresses = await addressesOf(url, resolveHost);
  if (!addresses.length) throw new Error('no address');
  return addresses.find((a) => !isPublicAddress(a));
}
