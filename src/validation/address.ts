import { lookup } from 'node:dns/promises';
import ipaddr from 'ipaddr.js';

/** Resolves a hostname to every address it has. Injected in tests, which must never touch DNS. */
export type ResolveHost = (hostname: string) => Promise<string[]>;

export const systemResolver =
  (timeoutMs = 3000): ResolveHost =>
  async (hostname) => {
    const answers = lookup(hostname, { all: true, verbatim: true });
    const timeout = new Promise<never>((_, reject) => setTimeout(() => reject(new Error('DNS lookup timed out')), timeoutMs).unref());
    return (await Promise.race([answers, timeout])).map((a) => a.address);
  };

/**
 * Only ordinary public unicast addresses pass: not loopback, private, link-local (cloud metadata
 * lives at 169.254.169.254), CGNAT, multicast, reserved, or IPv6 forms that embed an IPv4 address.
 */
export function isPublicAddress(address: string): boolean {
  if (!ipaddr.isValid(address)) return false;
  let ip = ipaddr.parse(address);
  if (ip.kind() === 'ipv6' && (ip as ipaddr.IPv6).isIPv4MappedAddress()) ip = (ip as ipaddr.IPv6).toIPv4Address();
  return ip.range() === 'unicast';
}
