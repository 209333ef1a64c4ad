import type { ApiKey, Keys } from './keys.js';

/**
 * Who is calling. `owner` is what their predictions are stored under: the key's id, or null in
 * open mode (no keys in the database, loopback only), where every caller is the same one owner.
 */
export interface Principal {
  owner: string | null;
  /** Absent in open mode; per-key quotas apply only to keys. */
  key?: ApiKey;
}

export const OPEN_MODE: Principal = Object.freeze({ owner: null });

/**
 * The caller behind an `Authorization: Bearer <key>` value (an HTTP header, or graphql-ws
 * `connectionParams.authorization`), or undefined for a missing, malformed, unknown or revoked key.
 */
export function authenticate(keys: Keys, authorization: unknown): Principal | undefined {
  if (keys.isEmpty()) return OPEN_MODE;
  if (typeof authorization !== 'string') return undefined;
  const token = /^Bearer +(\S{1,200})\s*$/i.exec(authorization)?.[1];
  const key = token === undefined ? undefined : keys.verify(token);
  return key && { owner: key.id, key };
}

/** Said to clients that are refused, the same for every reason, so probing tells nothing. */
export const UNAUTHENTICATED_MESSAGE = 'missing, unknown or revoked API key: send Authorization: Bearer <key>';

/**
 * Whether a caller authenticated earlier (a socket, at connection_init) still may act: its key is
 * not revoked, or, in open mode, no key has been created since.
 */
export function stillValid(keys: Keys, principal: Principal): boolean {
  return principal.key ? keys.isLive(principal.key.id) : keys.isEmpty();
}
