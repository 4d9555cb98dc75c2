import { DEFAULT_VLAN, FIRST_PARTITION_VLAN, LAST_VLAN, type SwitchPort } from "../provider/core/switchPorts";
import {
    healAll,
    listPorts,
    listVlans,
    mgmtPath,
    setPortVlan,
    withSwitchConsole,
    type SwitchConsole,
} from "../provider/host/net/switchControl";

/**
 * Partitions on a private Network, for tests of distributed systems: cut a VM off, split the
 * network into groups that cannot reach each other, and heal it — with the switch's own
 * controls. Each VM's switch ports (found by its QEMU's pid, which libvdeplug tells the switch)
 * are moved to an untagged VLAN of their own; the switch forwards nothing between VLANs. The
 * guest sees no link change (unlike `setLink`): packets simply stop arriving, as when a cable
 * is cut further away. Each call returns once the switch has applied it.
 *
 * The network's DHCP/DNS server stays in the default VLAN, with every VM no group names:
 * partitioned VMs keep their addresses (leases never expire) but cannot resolve names until
 * healed. `heal` undoes everything; deleting a VM gives its ports back to the default VLAN
 * (the VM's delete resets idle ports), and deleting the network ends them all.
 *
 * A pair of VMs cannot be blocked while both still reach a third through one switch with
 * untagged VLANs: partitions are groups.
 */

/** The Network outputs partitions need (a stack output of the resource has them). */
export interface PartitionNetwork {
    networkDir: string;
    host?: string;
}

/** The VirtualMachine outputs partitions need: its QEMU's pid, which names its switch ports. */
export interface PartitionMember {
    pid: number;
    vmDir?: string;
    host?: string;
}

async function onSwitch<T>(net: PartitionNetwork, body: (c: SwitchConsole) => Promise<T>): Promise<T> {
    if (net.host)
        throw new Error(`partitions work on this host's networks; network ${net.networkDir} is on ${net.host}`);
    return withSwitchConsole(mgmtPath(net.networkDir), body);
}

function portsOf(ports: SwitchPort[], vm: PartitionMember): SwitchPort[] {
    const mine = ports.filter((p) => p.active && p.pids.includes(vm.pid));
    if (!mine.length)
        throw new Error(
            `VM ${vm.vmDir ?? `pid ${vm.pid}`} has no port on this network's switch (is it running, and on this network?)`,
        );
    return mine;
}

/**
 * Splits the network: the VMs of each group reach each other and nothing outside their group;
 * VMs no group names stay together with the network's DHCP/DNS. Replaces any earlier partition.
 */
export async function partition(net: PartitionNetwork, groups: PartitionMember[][]): Promise<void> {
    await onSwitch(net, async (c) => {
        const ports = await listPorts(c);
        const plan = groups.map((g) => g.flatMap((vm) => portsOf(ports, vm)));
        const named = new Set(plan.flat().map((p) => p.port));
        // Everything not named goes back to the default VLAN first: a fresh partition, not a merge.
        for (const p of ports)
            if (!named.has(p.port) && p.vlan !== DEFAULT_VLAN) await c.run(`port/setvlan ${p.port} ${DEFAULT_VLAN}`);
        for (const [i, group] of plan.entries()) {
            const vlan = FIRST_PARTITION_VLAN + i;
            if (vlan > LAST_VLAN) throw new Error(`at most ${LAST_VLAN - FIRST_PARTITION_VLAN + 1} groups`);
            for (const p of group) if (p.vlan !== vlan) await setPortVlan(c, p.port, vlan);
        }
    });
}

/** Cuts one VM off the network (it reaches no one there, no one reaches it), keeping any other partition. */
export async function isolate(net: PartitionNetwork, vm: PartitionMember): Promise<void> {
    await onSwitch(net, async (c) => {
        const ports = await listPorts(c);
        const used = new Set([...ports.map((p) => p.vlan), ...(await listVlans(c))]);
        let vlan = FIRST_PARTITION_VLAN;
        while (used.has(vlan)) vlan++;
        if (vlan > LAST_VLAN) throw new Error("the switch has no free VLAN left; heal first");
        for (const p of portsOf(ports, vm)) await setPortVlan(c, p.port, vlan);
    });
}

/** Ends every partition on the network: all ports back together, the extra VLANs removed. */
export async function heal(net: PartitionNetwork): Promise<void> {
    await onSwitch(net, healAll);
}

/** Which VMs are apart: each port's VLAN, for assertions and debugging. */
export async function switchPorts(net: PartitionNetwork): Promise<SwitchPort[]> {
    return onSwitch(net, listPorts);
}
