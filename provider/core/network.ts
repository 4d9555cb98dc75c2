import { sha256Hex } from "./hash";

/**
 * Private networks, the pure part: IPv4 subnets and addresses as numbers, the default subnet a
 * network gets from its identity, the default host number a VM gets from its name, MAC rules,
 * and /etc/hosts text. Nothing here touches the host; the leases that make addresses unique on
 * a live network are kept by provider/host/networkLeases.ts.
 */

export interface Subnet {
    /** The network address as an unsigned 32-bit number. */
    base: number;
    prefix: number;
}

/** QEMU's user-mode network, which every VM with `network: "user"` already has on its first NIC. */
export const USER_NET: Subnet = { base: ipv4ToNumber("10.0.2.0"), prefix: 24 };

/** Prefixes we accept: a /30 still has two hosts; anything wider than /8 is a mistake here. */
export const MIN_PREFIX = 8;
export const MAX_PREFIX = 30;

export function ipv4ToNumber(text: string): number {
    const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(text);
    if (!m) throw new Error(`${JSON.stringify(text)} is not an IPv4 address such as 10.1.2.3`);
    const parts = m.slice(1).map(Number);
    if (parts.some((p) => p > 255)) throw new Error(`${JSON.stringify(text)} has a part above 255`);
    return ((parts[0] << 24) | (parts[1] << 16) | (parts[2] << 8) | parts[3]) >>> 0;
}

export function numberToIpv4(n: number): string {
    return [24, 16, 8, 0].map((s) => (n >>> s) & 255).join(".");
}

function mask(prefix: number): number {
    return prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
}

/**
 * Why a Network cannot have `subnet`: besides parseSubnet's reasons, overlapping 10.0.2.0/24,
 * which every VM with network "user" (the default) already has, so such a VM could not route to
 * it. Only for new networks: records of existing ones are read with parseSubnet alone.
 */
export function networkSubnetProblem(text: string): string | undefined {
    const s = parseSubnet(text);
    if (typeof s === "string") return s;
    if (subnetsOverlap(s, USER_NET)) {
        return `subnet ${text} overlaps the user-mode network ${formatSubnet(USER_NET)} that every VM with network "user" (the default) has, so such a VM could not route to it; choose another, such as 10.77.1.0/24`;
    }
    return undefined;
}

/** Why `text` is not a subnet we accept, or the subnet. */
export function parseSubnet(text: string): Subnet | string {
    const m = /^([0-9.]+)\/(\d{1,2})$/.exec(text);
    if (!m) return `subnet must be an IPv4 CIDR such as "10.77.1.0/24" (got ${JSON.stringify(text)})`;
    let base: number;
    try {
        base = ipv4ToNumber(m[1]);
    } catch (err) {
        return `subnet: ${(err as Error).message}`;
    }
    const prefix = Number(m[2]);
    if (prefix < MIN_PREFIX || prefix > MAX_PREFIX)
        return `subnet prefix must be between /${MIN_PREFIX} and /${MAX_PREFIX} (got /${prefix})`;
    if ((base & mask(prefix)) >>> 0 !== base) {
        return `subnet ${text} has host bits set; write its network address, ${numberToIpv4((base & mask(prefix)) >>> 0)}/${prefix}`;
    }
    if (base >>> 24 === 0)
        return `subnet ${text} is in 0.0.0.0/8, which means "this host" to IP and is no network; use private space such as 10.0.0.0/8 or 192.168.0.0/16`;
    if (base >>> 24 === 127 || base >>> 28 >= 14)
        return `subnet ${text} is loopback, multicast or reserved space; use private space such as 10.0.0.0/8 or 192.168.0.0/16`;
    return { base, prefix };
}

export function formatSubnet(s: Subnet): string {
    return `${numberToIpv4(s.base)}/${s.prefix}`;
}

export function netmask(s: Subnet): string {
    return numberToIpv4(mask(s.prefix));
}

export function subnetsOverlap(a: Subnet, b: Subnet): boolean {
    const p = Math.min(a.prefix, b.prefix);
    return (a.base & mask(p)) >>> 0 === (b.base & mask(p)) >>> 0;
}

/** Host numbers run from 1 to hostCount: the network (0) and broadcast addresses are not hosts. */
export function hostCount(s: Subnet): number {
    return 2 ** (32 - s.prefix) - 2;
}

export function hostAddress(s: Subnet, hostNumber: number): string {
    return numberToIpv4((s.base + hostNumber) >>> 0);
}

/** Why `address` cannot be a host on `s`, or undefined when it can. */
export function addressProblem(s: Subnet, address: string): string | undefined {
    const n = ipv4ToNumber(address);
    if ((n & mask(s.prefix)) >>> 0 !== s.base) return `${address} is outside the network's subnet ${formatSubnet(s)}`;
    const host = n - s.base;
    if (host === 0)
        return `${address} is the network address of ${formatSubnet(s)}; hosts are .1 to ${hostAddress(s, hostCount(s))}`;
    if (host === hostCount(s) + 1)
        return `${address} is the broadcast address of ${formatSubnet(s)}; hosts are ${hostAddress(s, 1)} to ${hostAddress(s, hostCount(s))}`;
    return undefined;
}

function hashNumber(text: string): number {
    return parseInt(sha256Hex(text).slice(0, 8), 16);
}

/**
 * The /24 a network gets when it names none: 10.A.B.0/24 with A in 64–127, from the network's
 * identity and the attempt number (the caller tries again when it overlaps a live network).
 * Never 10.0.2.0/24, the user-mode network every guest already has.
 */
export function defaultSubnet(identity: string, attempt = 0): Subnet {
    const h = hashNumber(`pulumi-qemu subnet\0${identity}\0${attempt}`);
    const a = 64 + ((h >>> 8) % 64);
    const b = h & 255;
    return { base: ipv4ToNumber(`10.${a}.${b}.0`), prefix: 24 };
}

/**
 * Where a VM's address search starts: a host number from its name alone, so that adding or
 * removing another VM never moves it. Two names may start at one number; the lease decides
 * and the later one takes the next free number (see `probeOrder`).
 */
export function preferredHostNumber(s: Subnet, vmName: string): number {
    return 1 + (hashNumber(`pulumi-qemu host\0${vmName}`) % hostCount(s));
}

/** Every host number once, starting at `start` and wrapping around. */
export function* probeOrder(s: Subnet, start: number): Generator<number> {
    const n = hostCount(s);
    for (let i = 0; i < n; i++) yield 1 + ((start - 1 + i) % n);
}

const MAC_RE = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/;

/** Why `mac` cannot be a NIC's address, or undefined when it can. Compare MACs lowercased. */
export function macProblem(mac: string): string | undefined {
    if (!MAC_RE.test(mac.toLowerCase()))
        return `mac must be six hex pairs separated by colons, such as "02:00:0a:4d:01:05" (got ${JSON.stringify(mac)})`;
    const first = parseInt(mac.slice(0, 2), 16);
    if (first & 1)
        return `mac ${mac} is a multicast address (the lowest bit of its first byte is set); a NIC needs a unicast one, e.g. starting with 02`;
    if (/^(00:){5}00$/.test(mac.toLowerCase())) return "mac 00:00:00:00:00:00 is not a usable address";
    return undefined;
}

/**
 * A NIC's default MAC: locally administered and unicast (02), one byte from the network's
 * identity, then the four bytes of the NIC's address. Addresses are unique on a network, so
 * these MACs are too; the network byte keeps one VM's NICs on two networks apart.
 */
export function defaultMac(networkId: string, address: string): string {
    const netByte = hashNumber(`pulumi-qemu mac\0${networkId}`) & 255;
    const n = ipv4ToNumber(address);
    return [0x02, netByte, (n >>> 24) & 255, (n >>> 16) & 255, (n >>> 8) & 255, n & 255]
        .map((b) => b.toString(16).padStart(2, "0"))
        .join(":");
}

/** A hostname label as /etc/hosts and the kernel's ip= accept: letters, digits and hyphens. */
export const HOSTNAME_RE = /^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$/;

export interface HostsEntry {
    hostname: string;
    address: string;
}

/** The /etc/hosts lines for `entries`, in their order, and a name → address map (first address wins). */
export function renderHosts(entries: readonly HostsEntry[]): { text: string; names: Record<string, string> } {
    const names: Record<string, string> = {};
    for (const e of entries) names[e.hostname] ??= e.address;
    return { text: entries.map((e) => `${e.address} ${e.hostname}\n`).join(""), names };
}

/** Several VMs' `hosts` outputs as one /etc/hosts text and map, e.g. for a fleet's seed or share. */
export function mergeHosts(all: ReadonlyArray<{ text: string; names: Record<string, string> }>): {
    text: string;
    names: Record<string, string>;
} {
    const names: Record<string, string> = {};
    for (const h of all) for (const [k, v] of Object.entries(h.names)) names[k] ??= v;
    return { text: all.map((h) => h.text).join(""), names };
}
