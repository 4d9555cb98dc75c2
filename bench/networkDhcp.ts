import * as path from "node:path";
import { vmAddress } from "../provider/core/dhcp";
import { writeDhcpHost } from "../provider/host/net/dhcpServer";
import * as network from "../provider/resources/network";
import type { NetworkOutputs } from "../provider/resources/network";
import { runOnSwitch } from "../tests/support/netnsClient";
import { heal, isolate } from "../sdk/partitions";
import { fmtMs, fmtRatio, median, timed, verdict, withTempDir, type BenchResult, type Row } from "./common";

/**
 * Benchmark 6b: a network's DHCP/DNS server. Network create with DHCP (switch + dnsmasq in its
 * own namespace, answering) against without (the bare switch); from a client on the switch (an
 * unprivileged namespace plugged in by vde_plug2tap, busybox tools — what a guest runs, without
 * TCG's slowness), the time from DHCPDISCOVER to the bound lease and the DNS round trip, the
 * latter against the same loop running `busybox true` (the process start both pay); and how long
 * a partition (isolate) and a heal take to apply through the switch's management console.
 */

const CREATES = 5;
const LOOKUPS = 50;

export async function runNetworkDhcp(): Promise<BenchResult> {
    const rows: Row[] = [];
    const notes: string[] = [];
    return withTempDir("pq-bench-dhcp-", async (dir) => {
        const stateDir = path.join(dir, "state");
        const made: NetworkOutputs[] = [];
        try {
            const withDhcp: number[] = [];
            const without: number[] = [];
            for (let i = 0; i < CREATES; i++) {
                for (const [dhcp, into] of [
                    [true, withDhcp],
                    [false, without],
                ] as const) {
                    const { ms, value } = await timed(() => network.create({ stateDir, dhcp }));
                    made.push(value.outs as NetworkOutputs);
                    into.push(ms);
                }
            }
            const [w, wo] = [median(withDhcp), median(without)];
            rows.push({
                bench: "6b dhcp",
                measure: `Network create with DHCP/DNS (switch + dnsmasq answering) vs without (median of ${CREATES})`,
                provider: fmtMs(w),
                reference: fmtMs(wo),
                ratio: fmtRatio(w / wo),
            });

            const net = made[0];
            const id = path.basename(net.networkDir);
            const client = vmAddress({ id, subnet: net.subnet, domain: net.domain, dhcp: true }, "client");
            // Registered as a VM would be, so that the client's MAC gets its reservation.
            await writeDhcpHost(
                net.networkDir,
                { mac: client.mac, ipv4: client.ipv4, hostname: "client" },
                net.domain!,
            );
            const loop = (cmd: string) =>
                `t0=$(date +%s%N); i=0; while [ $i -lt ${LOOKUPS} ]; do ${cmd}; i=$((i+1)); done; t1=$(date +%s%N); echo $(( (t1-t0)/1000 ))`;
            const r = await runOnSwitch(
                net.switchDir,
                client.mac,
                [
                    "t0=$(date +%s%N)",
                    'busybox udhcpc -i tap0 -n -q -t 10 -T 1 -s "$UDHCPC_SCRIPT" >/dev/null 2>&1',
                    't1=$(date +%s%N); echo "lease $(( (t1-t0)/1000 ))"',
                    `echo "dns $(${loop(`busybox nslookup client.${net.domain} >/dev/null`)})"`,
                    `echo "spawn $(${loop("busybox true")})"`,
                ].join("\n"),
            );
            const us = (k: string) => Number(new RegExp(`^${k} (\\d+)$`, "m").exec(r.stdout)?.[1] ?? NaN);
            if (Number.isNaN(us("lease"))) throw new Error(`the DHCP client failed: ${r.stdout} ${r.stderr}`);
            rows.push({
                bench: "6b dhcp",
                measure: "DHCP lease, DISCOVER to bound (busybox udhcpc on the switch, incl. its start)",
                provider: fmtMs(us("lease") / 1000),
            });
            const dns = us("dns") / LOOKUPS / 1000;
            const spawn = us("spawn") / LOOKUPS / 1000;
            rows.push({
                bench: "6b dhcp",
                measure: `DNS lookup round trip, busybox nslookup NAME.DOMAIN (mean of ${LOOKUPS}) vs busybox true (process start only)`,
                provider: fmtMs(dns),
                reference: fmtMs(spawn),
                ratio: fmtRatio(dns / spawn),
            });
            notes.push(`DNS lookup without the process start: about ${fmtMs(dns - spawn)}.`);

            // Partitions: the server's own plug is a port with a pid, like a VM's QEMU.
            const member = { pid: net.dhcpIdentity!.plug.pid };
            const cut: number[] = [];
            const healed: number[] = [];
            for (let i = 0; i < 20; i++) {
                cut.push((await timed(() => isolate(net, member))).ms);
                healed.push((await timed(() => heal(net))).ms);
            }
            rows.push({
                bench: "6b dhcp",
                measure: "isolate one VM (port to its own VLAN; call to the switch's answer, median of 20)",
                provider: fmtMs(median(cut)),
                target: "< 100 ms",
                verdict: verdict(median(cut) < 100),
            });
            rows.push({
                bench: "6b dhcp",
                measure: "heal (every port back, VLANs removed; median of 20)",
                provider: fmtMs(median(healed)),
                target: "< 100 ms",
                verdict: verdict(median(healed) < 100),
            });
            notes.push(
                "In a TCG busybox guest (tests/integration/networkDhcpGuests.test.ts): the lease comes ~19–21 s after kernel start (the guest's whole boot up to init's network step), a lookup ~60 ms (busybox nslookup under TCG).",
            );
            return { rows, notes };
        } finally {
            for (const outs of made) await network.remove("", outs).catch(() => undefined);
        }
    });
}
