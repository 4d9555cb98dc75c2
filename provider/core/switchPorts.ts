/**
 * What vde_switch's management console prints about its ports, parsed: which port is in which
 * (untagged) VLAN, whether something is plugged in, and the pids of the programs plugged in
 * (libvdeplug tells the switch `prog: user=… pid=…` for each endpoint). Partitions move ports
 * between VLANs; these facts say which ports belong to which VM.
 */

export interface SwitchPort {
    port: number;
    vlan: number;
    active: boolean;
    /** Pids of the processes whose endpoints are on this port (a QEMU, a vde_plug2tap). */
    pids: number[];
}

/** Parses the data lines of `port/allprint` (or `port/print`). */
export function parsePortPrint(lines: readonly string[]): SwitchPort[] {
    const ports: SwitchPort[] = [];
    for (const line of lines) {
        const head = /^Port (\d+) untagged_vlan=(\d+) (ACTIVE|INACTIVE)/.exec(line);
        if (head) {
            ports.push({ port: Number(head[1]), vlan: Number(head[2]), active: head[3] === "ACTIVE", pids: [] });
            continue;
        }
        const ep = /^\s*-- endpoint .*\bpid=(\d+)/.exec(line);
        if (ep && ports.length) ports[ports.length - 1].pids.push(Number(ep[1]));
    }
    return ports;
}

/** Parses the data lines of `vlan/allprint`: the VLAN tags that exist. */
export function parseVlanPrint(lines: readonly string[]): number[] {
    return lines.map((l) => /^VLAN (\d+)/.exec(l)).flatMap((m) => (m ? [Number(m[1])] : []));
}

/** The untagged VLAN every port starts in; the network's DHCP/DNS stays there. */
export const DEFAULT_VLAN = 0;
/** vde_switch's default VLAN table size is 4096 tags; partitions use tags from here up. */
export const FIRST_PARTITION_VLAN = 100;
export const LAST_VLAN = 4095;
