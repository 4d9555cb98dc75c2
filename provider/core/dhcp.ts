import {
    defaultMac,
    hostAddress,
    hostCount,
    netmask,
    parseSubnet,
    preferredHostNumber,
    probeOrder,
    type Subnet,
} from "./network";

/**
 * DHCP and DNS on a private Network, the pure part: which address the network's own dnsmasq
 * takes, the address and MAC a named VM gets (the same function the VM's create uses, so a
 * program can know them at preview), the per-network DNS domain, and the lines dnsmasq reads
 * from its host directories. The process itself is provider/host/dhcpServer.ts.
 */

/**
 * The host number the network's DHCP/DNS server takes: the last host of the subnet, so that the
 * low numbers a user is likely to pin stay free. VMs never get it by default.
 */
export function serverHostNumber(s: Subnet): number {
    return hostCount(s);
}

export function serverAddress(s: Subnet): string {
    return hostAddress(s, serverHostNumber(s));
}

/**
 * The server's MAC, fixed by the network's id: a server started again (after it died) answers
 * from the same MAC, so guests' ARP caches stay right and DNS works again at once.
 */
export function serverMac(networkId: string, s: Subnet): string {
    return defaultMac(networkId, serverAddress(s));
}

/**
 * The DNS domain of a network: its name (or id) as one lowercase DNS label, so that VM `web` on
 * network `lab` is `web.lab`. Characters a label cannot hold become '-'.
 */
export function networkDomain(nameOrId: string): string {
    const label = nameOrId
        .toLowerCase()
        .replace(/[^a-z0-9-]/g, "-")
        .replace(/^-+|-+$/g, "")
        .slice(0, 63);
    return label.length ? label : "net";
}

/** What a VM NIC gets on a network by default: exactly what DHCP hands out and `nics` reports. */
export interface PlannedNic {
    ipv4: string;
    mac: string;
    netmask: string;
    hostname: string;
    /** hostname.domain, answered by the network's DNS (only when the network has `dhcp`). */
    fqdn: string;
}

/** What `vmAddress` needs of a Network's outputs (all known at preview once the network exists). */
export interface NetworkFacts {
    /** The network's id. */
    id: string;
    subnet: string;
    /** The network's DNS domain (its `domain` output); defaults to the id's. */
    domain?: string;
    /** Whether the network runs DHCP (its server address is then never a VM's). */
    dhcp?: boolean;
}

/**
 * The default host number of VM `vmName` on a subnet: the one its name prefers, or on a DHCP
 * network the next one when that is the server's. Pure, so that it is the same at preview, at
 * create and in dnsmasq's reservation.
 */
export function defaultHostNumber(s: Subnet, vmName: string, dhcp: boolean): number {
    for (const n of probeOrder(s, preferredHostNumber(s, vmName))) {
        if (!dhcp || n !== serverHostNumber(s)) return n;
    }
    throw new Error("a subnet has at least two hosts");
}

/**
 * The address, MAC and names VM `vmName` gets on network `net` when its NIC pins neither ipv4 nor
 * mac: a pure function of the network's outputs and the VM's name. On a DHCP network a VM whose
 * default address another VM already holds is refused at create (never moved silently), so
 * this is always what the VM ends up with.
 */
export function vmAddress(net: NetworkFacts, vmName: string, hostname: string = vmName): PlannedNic {
    const s = parseSubnet(net.subnet);
    if (typeof s === "string") throw new Error(s);
    const ipv4 = hostAddress(s, defaultHostNumber(s, vmName, net.dhcp ?? false));
    const domain = net.domain ?? networkDomain(net.id);
    return { ipv4, mac: defaultMac(net.id, ipv4), netmask: netmask(s), hostname, fqdn: `${hostname}.${domain}` };
}

/** One VM NIC as dnsmasq knows it. */
export interface DhcpHost {
    mac: string;
    ipv4: string;
    hostname: string;
}

/**
 * A `--dhcp-hostsdir` line: this MAC always gets this address. No name here: given one, dnsmasq
 * would also answer it from the lease, which outlives the VM (a reload forgets host files, never
 * leases). dnsmasq still sends the guest its hostname, found for the address in the hosts
 * directory (`dnsHostLine`), which is also where DNS answers come from.
 */
export function dhcpHostLine(h: Pick<DhcpHost, "mac" | "ipv4">): string {
    return `${h.mac.toLowerCase()},${h.ipv4}\n`;
}

/** A `--hostsdir` line: the bare hostname and hostname.domain both answer with the address. */
export function dnsHostLine(h: DhcpHost, domain: string): string {
    return `${h.ipv4} ${h.hostname} ${h.hostname}.${domain}\n`;
}

/** The file name of one VM NIC's entries in the host directories: its MAC, which is unique on a network. */
export function hostEntryName(mac: string): string {
    return `mac-${mac.toLowerCase().replace(/:/g, "-")}`;
}

export interface DnsmasqFiles {
    pidfile: string;
    hostsDir: string;
    dnsDir: string;
    leaseFile: string;
}

/**
 * dnsmasq's command line for one network, run inside the network's own namespace where `tap`
 * is its only interface. `--no-daemon`: in a user namespace it cannot drop to another user or
 * group (setgroups is denied there), which it does only when it daemonizes; the caller detaches
 * it instead. No upstream servers, no /etc/hosts, no router option (a private network has no
 * gateway; guests keep their own default route): it answers only for this network's VMs.
 * Leases never expire, so a partitioned guest keeps its address.
 */
export function dnsmasqArgv(files: DnsmasqFiles, s: Subnet, domain: string, tap: string): string[] {
    return [
        "dnsmasq",
        "--no-daemon",
        "--conf-file=/dev/null",
        "-x",
        files.pidfile,
        `--interface=${tap}`,
        "--bind-interfaces",
        "--no-resolv",
        "--no-hosts",
        "--no-poll",
        `--dhcp-range=${hostAddress(s, 1)},static,${netmask(s)},infinite`,
        "--dhcp-authoritative",
        "--dhcp-option=option:router",
        `--dhcp-hostsdir=${files.hostsDir}`,
        // Names come from the hosts directory only, never from what a client says it is called.
        "--dhcp-ignore-names",
        `--hostsdir=${files.dnsDir}`,
        `--dhcp-leasefile=${files.leaseFile}`,
        `--domain=${domain}`,
        `--local=/${domain}/`,
        "--domain-needed",
        // To stderr, which the caller sends to an owner-only file (dnsmasq makes its own log file group-readable).
        "--log-facility=-",
    ];
}
