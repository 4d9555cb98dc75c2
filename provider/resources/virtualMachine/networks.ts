import * as path from "node:path";
import {
    addressProblem,
    defaultMac,
    formatSubnet,
    hostAddress,
    netmask,
    parseSubnet,
    preferredHostNumber,
    probeOrder,
    renderHosts,
    subnetsOverlap,
    USER_NET,
    type Subnet,
} from "../../core/network";
import type { NicPlan } from "../../core/qemuArgv";
import { defaultHostNumber, serverAddress, serverHostNumber } from "../../core/dhcp";
import { releaseDhcpLease, reloadDhcp, removeDhcpHost, writeDhcpHost } from "../../host/net/dhcpServer";
import { mgmtPath, resetIdlePorts, withSwitchConsole } from "../../host/net/switchControl";
import { InputError, type FieldProblem } from "../../core/validation";
import type { VmSpec } from "../../core/vmSpec";
import {
    acquireLease,
    addressLease,
    identityString,
    macLease,
    readNetworkRecord,
    readRecordAt,
    releaseLease,
    switchProblem,
    type NetworkRecord,
} from "../../host/net/networkStore";
import { checkOurSwitch } from "../../host/net/vdeSwitch";

/**
 * A VM's NICs on private Networks: finding each network in the state directory, judging the
 * VM's addresses against the networks' subnets, taking address and MAC leases at create,
 * registering each NIC with its network's DHCP/DNS server, giving all that back at delete, and
 * telling at read whether each network is still the switch the VM joined.
 */

/** A NIC as attached, recorded in the VM's outputs (`nics`). */
export interface NicOutput {
    network: string;
    networkDir: string;
    switchDir: string;
    /** The switch process the NIC joined (boot id / pid / start time). */
    switchIdentity: string;
    subnet: string;
    mac: string;
    ipv4: string;
    netmask: string;
    hostname: string;
    /** The network runs DHCP/DNS: the guest may ask it for this address, and peers resolve `fqdn`. */
    dhcp?: boolean;
    /** hostname.<the network's domain>, answered by the network's DNS (with dhcp). */
    fqdn?: string;
}

interface Found {
    record: NetworkRecord;
    subnet: Subnet;
}

/**
 * Every problem with the VM's networks that can be seen before anything starts: a network
 * that does not exist or whose switch is not running, an address outside its subnet or on its
 * network/broadcast address, subnets that overlap each other or the user-mode 10.0.2.0/24.
 */
export async function networkProblems(spec: VmSpec, stateDir: string): Promise<FieldProblem[]> {
    return (await findNetworks(spec, stateDir)).problems;
}

async function findNetworks(
    spec: VmSpec,
    stateDir: string,
): Promise<{ found: (Found | undefined)[]; problems: FieldProblem[] }> {
    const nics = spec.networks ?? [];
    const problems: FieldProblem[] = [];
    const found: (Found | undefined)[] = [];
    for (const [i, nic] of nics.entries()) {
        const field = `vm.networks[${i}]`;
        const record = await readNetworkRecord(stateDir, nic.network).catch(() => undefined);
        if (!record) {
            problems.push({
                property: `${field}.network`,
                reason: `there is no network ${nic.network} in the state directory ${stateDir}; give the VM the Network's id and the same stateDir as the Network`,
            });
            found.push(undefined);
            continue;
        }
        const live = await checkOurSwitch(record.switchIdentity, record.pidfile);
        if (!live.alive) {
            problems.push({
                property: `${field}.network`,
                reason: `the switch of network ${nic.network} is not running (${live.reason}); run a refresh so that the network is made again`,
            });
        }
        const subnet = parseSubnet(record.subnet) as Subnet;
        found.push({ record, subnet });
        if (nic.ipv4 !== undefined) {
            const why = addressProblem(subnet, nic.ipv4);
            if (why) problems.push({ property: `${field}.ipv4`, reason: why });
            // The network's DHCP/DNS server answers there: a VM on it would break every VM's DHCP and DNS.
            else if (record.dhcp && nic.ipv4 === serverAddress(subnet))
                problems.push({
                    property: `${field}.ipv4`,
                    reason: `${nic.ipv4} is the address of network ${nic.network}'s DHCP/DNS server (the subnet's last host); pin another, or leave ipv4 out`,
                });
        }
        if (spec.network === "user" && subnetsOverlap(subnet, USER_NET)) {
            problems.push({
                property: `${field}.network`,
                reason: `network ${nic.network}'s subnet ${record.subnet} overlaps the user-mode network ${formatSubnet(USER_NET)} of this VM; use another subnet or network "none"`,
            });
        }
        for (let j = 0; j < i; j++) {
            const other = found[j];
            if (other && other.record.id !== record.id && subnetsOverlap(subnet, other.subnet)) {
                problems.push({
                    property: `${field}.network`,
                    reason: `network ${nic.network}'s subnet ${record.subnet} overlaps ${other.record.subnet} of networks[${j}] (${other.record.id}); a VM on both could not route`,
                });
            }
        }
    }
    return { found, problems };
}

/**
 * Takes an address and a MAC on each network for the VM in `vmDir`: the one asked for, or the
 * first free host number from the one its name prefers — on a DHCP network exactly the one its
 * name gives (core/dhcp.ts `vmAddress`, what a program may have computed at preview), refused
 * rather than moved when another VM holds it. Each NIC is registered with its network's DHCP/DNS.
 * Everything taken is given back if any NIC fails.
 */
export async function attachNics(spec: VmSpec, stateDir: string, vmDir: string): Promise<NicOutput[]> {
    const nics = spec.networks ?? [];
    if (nics.length === 0) return [];
    const { found, problems } = await findNetworks(spec, stateDir);
    if (problems.length) throw new InputError(problems);
    const vm = spec.name!;
    const holder = { vmDir, vm, pidfile: path.join(vmDir, "qemu.pid") };
    const out: NicOutput[] = [];
    try {
        for (const [i, nic] of nics.entries()) {
            const { record, subnet } = found[i]!;
            const field = `vm.networks[${i}]`;
            let ipv4: string | undefined;
            if (nic.ipv4 !== undefined) {
                const k = out.findIndex((o) => o.network === record.id && o.ipv4 === nic.ipv4);
                if (k >= 0)
                    throw new InputError([
                        {
                            property: `${field}.ipv4`,
                            reason: `${nic.ipv4} is already this VM's address on network ${record.id} (networks[${k}] got it by default); choose another or put this NIC first`,
                        },
                    ]);
                const holderName = await acquireLease(record.networkDir, addressLease(nic.ipv4), holder);
                if (holderName !== undefined)
                    throw new InputError([
                        {
                            property: `${field}.ipv4`,
                            reason: `${nic.ipv4} is already used by VM ${holderName} on network ${record.id}; choose another address or leave ipv4 out`,
                        },
                    ]);
                ipv4 = nic.ipv4;
            } else {
                // This VM's own earlier NICs on the network hold their leases already: skip them.
                const mine = new Set(out.filter((o) => o.network === record.id).map((o) => o.ipv4));
                const exact = record.dhcp ? hostAddress(subnet, defaultHostNumber(subnet, vm, true)) : undefined;
                if (exact !== undefined && !mine.has(exact)) {
                    const holderName = await acquireLease(record.networkDir, addressLease(exact), holder);
                    if (holderName !== undefined) {
                        throw new InputError([
                            {
                                property: `${field}.network`,
                                reason: `${exact}, the address VM ${vm} gets by its name on network ${record.id}, is already used by VM ${holderName} (their names prefer one address, and a DHCP network never moves it: it is what a program may have computed at preview); rename one of them, or set ipv4 for one`,
                            },
                        ]);
                    }
                    ipv4 = exact;
                }
                // Probed only without DHCP, or for a second NIC of this VM on one DHCP network.
                for (const n of ipv4 !== undefined ? [] : probeOrder(subnet, preferredHostNumber(subnet, vm))) {
                    if (record.dhcp && n === serverHostNumber(subnet)) continue;
                    const candidate = hostAddress(subnet, n);
                    if (mine.has(candidate)) continue;
                    if ((await acquireLease(record.networkDir, addressLease(candidate), holder)) === undefined) {
                        ipv4 = candidate;
                        break;
                    }
                }
                if (ipv4 === undefined)
                    throw new InputError([
                        {
                            property: `${field}.network`,
                            reason: `network ${record.id}'s subnet ${record.subnet} has no free address left; use a larger subnet`,
                        },
                    ]);
            }
            // Recorded before the MAC, so a failure below gives the address back too.
            const mac = nic.mac ?? defaultMac(record.id, ipv4);
            const hostname = nic.hostname ?? vm;
            const dhcp = record.dhcp ? { dhcp: true, fqdn: `${hostname}.${record.dhcp.domain}` } : {};
            out.push({
                network: record.id,
                networkDir: record.networkDir,
                switchDir: record.switchDir,
                switchIdentity: identityString(record.switchIdentity),
                subnet: record.subnet,
                mac,
                ipv4,
                netmask: netmask(subnet),
                hostname,
                ...dhcp,
            });
            const macHolder = await acquireLease(record.networkDir, macLease(mac), holder);
            if (macHolder !== undefined) {
                // releaseNics only drops leases this VM holds, so the other VM's MAC stays its own.
                throw new InputError([
                    {
                        property: `${field}.mac`,
                        reason: `MAC ${mac} is already used by VM ${macHolder} on network ${record.id}; choose another MAC or leave mac out`,
                    },
                ]);
            }
            // Written once the MAC is ours: the host files are named by MAC, so no other VM's is overwritten.
            if (record.dhcp) await writeDhcpHost(record.networkDir, { mac, ipv4, hostname }, record.dhcp.domain);
        }
        // A port a crashed VM left partitioned would pass its VLAN to this VM: reset idle ports before QEMU plugs in.
        for (const dir of new Set(out.map((o) => o.networkDir)))
            await withSwitchConsole(mgmtPath(dir), resetIdlePorts, { timeoutMs: 2000 }).catch(() => undefined);
        return out;
    } catch (err) {
        await releaseNics(out, vmDir);
        throw err;
    }
}

/**
 * Gives back the VM's leases and DHCP/DNS entries (the server forgets them on reload), and puts
 * the switch ports it left back in the default VLAN (a partition would otherwise pass to the
 * next VM the switch gives that port). A network already gone is fine.
 */
export async function releaseNics(nics: readonly NicOutput[] | undefined, vmDir: string): Promise<void> {
    for (const nic of nics ?? []) {
        await releaseLease(nic.networkDir, addressLease(nic.ipv4), vmDir).catch(() => undefined);
        const macWasOurs = await releaseLease(nic.networkDir, macLease(nic.mac), vmDir).catch(() => false);
        if (macWasOurs && nic.dhcp) {
            await removeDhcpHost(nic.networkDir, nic.mac).catch(() => undefined);
            const rec = await readRecordAt(nic.networkDir).catch(() => undefined);
            if (rec?.dhcp) {
                await releaseDhcpLease(rec.dhcp.identity, nic.networkDir, nic).catch(() => undefined);
                await reloadDhcp(rec.dhcp.identity, nic.networkDir).catch(() => undefined);
            }
        }
    }
    for (const dir of new Set((nics ?? []).map((n) => n.networkDir))) {
        await withSwitchConsole(mgmtPath(dir), resetIdlePorts, { timeoutMs: 2000 }).catch(() => undefined);
    }
}

export function nicPlans(nics: readonly NicOutput[]): NicPlan[] {
    return nics.map((n) => ({
        sock: n.switchDir,
        mac: n.mac,
        ipv4: n.ipv4,
        netmask: n.netmask,
        hostname: n.hostname,
        ...(n.dhcp ? { dhcp: true } : {}),
    }));
}

/** The VM's own /etc/hosts entries; a fleet's are joined with `mergeHosts`. */
export function hostsOf(nics: readonly NicOutput[]) {
    return renderHosts(nics.map((n) => ({ hostname: n.hostname, address: n.ipv4 })));
}

/** Why some network the VM joined is no longer that switch, running; undefined when all are. */
export async function networkDrift(nics: readonly NicOutput[] | undefined): Promise<string | undefined> {
    const problems: string[] = [];
    for (const [i, nic] of (nics ?? []).entries()) {
        const rec = await readRecordAt(nic.networkDir).catch(() => undefined);
        const why = await switchProblem(rec, nic.network, nic.switchIdentity);
        if (why) problems.push(`networks[${i}]: ${why}`);
    }
    return problems.length ? `${problems.join("; ")}; the next up replaces this VM` : undefined;
}
