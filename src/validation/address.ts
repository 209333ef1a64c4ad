import { Resolver } from 'node:dns/promises';
import ipaddr from 'ipaddr.js';

/** Resolves a hostname to every address it has. Injected in tests, which must never touch DNS. */
export type ResolveHost = (hostname: string) => Promise<string[]>;

/**
 * DNS through c-ares (`dns.Resolver`), not `dns.lookup`: lookup runs on libuv's four-thread pool,
 * which slow or hostile names could fill, stalling file I/O; the resolver is asynchronous and
 * gives up after `timeoutMs`. It does not read /etc/hosts, so `localhost` is answered here (RFC 6761).
 */
export const systemResolver = (timeoutMs = 3000): ResolveHost => {
  const resolver = new Resolver({ timeout: timeoutMs, tries: 1 });
  return async (hostname) => {
    if (hostname === 'localhost' || hostname.endsWith('.localhost')) return ['127.0.0.1', '::1'];
    const [v4, v6] = await Promise.allSettled([resolver.resolve4(hostname), resolver.resolve6(hostname)]);
    const addresses = [v4, v6].flatMap((r) => (r.status === 'fulfilled' ? r.value : []));
    if (!addresses.length) throw v4.status === 'rejected' ? v4.reason : new Error('no address');
    return addresses;
  };
};

/**
 * Only ordinary public unicast addresses pass: not loopback, private, link-local (cloud metadata
 * lives at 169.254.169.254), CGNAT, multicast or reserved IPv4, and for IPv6 only global unicast
 * (2000::/3), which leaves out every form that embeds an IPv4 address (::ffff:…, ::a.b.c.d, 64:ff9b::…).
 */
export function isPublicAddress(address: string): boolean {
  if (!ipaddr.isValid(address)) return false;
  const ip = ipaddr.parse(address);
  if (ip.kind() === 'ipv4') return ip.range() === 'unicast';
  const v6 = ip as ipaddr.IPv6;
  if (v6.isIPv4MappedAddress()) return isPublicAddress(v6.toIPv4Address().toString());
  const [first = 0] = v6.parts;
  return v6.range() === 'unicast' && first >= 0x2000 && first <= 0x3fff;
}

/**
 * The addresses a URL's host stands for: an IP literal itself, or every address DNS gives for a
 * name. WHATWG URL has already normalised odd IPv4 spellings (0x7f.1, 2130706433) to dotted quads.
 */
export async function addressesOf(url: URL, resolveHost: ResolveHost): Promise<string[]> {
  const host = url.hostname.replace(/^\[(.*)\]$/, '$1');
  if (/^[\d.]+$/.test(host) || host.includes(':')) return [host];
  return resolveHost(host);
}
