import * as path from "node:path";
import { createDiskImage, removeImage } from "../provider/resources/diskImage";
import type { DiskImageOutputs } from "../provider/resources/diskImage";
import * as network from "../provider/resources/network";
import type { NetworkOutputs } from "../provider/resources/network";
import * as virtualMachine from "../provider/resources/virtualMachine";
import type { VirtualMachineOutputs } from "../provider/resources/virtualMachine";
import { fleet, type Fleet } from "../sdk/testing";
import { debianOverlay, debianVm, ensureDebianGuest } from "../tests/guest/debianGuest";
import { fmtMs, median, timed, withTempDir, type BenchResult, type Row } from "./common";
import { measureFleetRestores } from "./fleetRestores";

/**
 * Benchmark: resetting a fleet of real distributions. Three Debian 12 guests under TCG (768 MiB
 * each, `vm.agent: "qga"`, root on a qcow2 overlay of the cached image, a cloud-init seed each)
 * on one private Network with DHCP and no user-mode NIC, so that the Network's NIC is the only
 * one and cloud-init's fallback configuration asks it for a lease. Cold boot: every
 * VirtualMachine created at once until each is ready as the other Debian benches define it —
 * cloud-init's final stage finished on the console and qemu-ga answers. Then one fleet snapshot
 * and three fleet restores (the loop shared with bench/fleet.ts), each checked: clocks set,
 * dirty markers gone, and every guest pinging its neighbour on the Network (timed apart).
 * Target: restore ≤ 0.1× of the fleet's cold boot, as for the busybox fleets.
 */

const NAMES = ["deb1", "deb2", "deb3"];
const RESTORES = 3;
/** A cold boot of three Debian guests at once on two TCG cores takes minutes; this bounds it. */
const BOOT_TIMEOUT_SECONDS = 900;

export async function runFleetDebian(): Promise<BenchResult> {
    const guest = await ensureDebianGuest();
    return withTempDir("pq-bench-fleetdeb-", async (dir) => {
        const stateDir = path.join(dir, "state");
        const created = await network.create({ name: "benchdeb", stateDir });
        const net = created.outs as NetworkOutputs;
        const images: DiskImageOutputs[] = [];
        const outs: Record<string, VirtualMachineOutputs> = {};
        let f: Fleet | undefined;
        try {
            const disks = await Promise.all(
                NAMES.map(async (name) => {
                    const overlay = await debianOverlay(guest, stateDir);
                    const seed = await createDiskImage({
                        stateDir,
                        source: {
                            kind: "cloudInit",
                            userData: { hostname: name },
                            metaData: { "local-hostname": name },
                        },
                    });
                    images.push(overlay, seed);
                    return { overlay, seed };
                }),
            );
            const cold = await timed(() =>
                Promise.all(
                    NAMES.map(async (name, i) => {
                        const r = await virtualMachine.create({
                            stateDir,
                            vm: debianVm(guest, name, disks[i].overlay, disks[i].seed, {
                                agent: "qga",
                                network: "none",
                                networks: [{ network: created.id }],
                            }),
                            ready: {
                                serialPattern: "/Cloud-init v\\. \\S+ finished at/",
                                agent: true,
                                timeoutSeconds: BOOT_TIMEOUT_SECONDS,
                            },
                        });
                        outs[name] = r.outs as VirtualMachineOutputs;
                    }),
                ),
            );
            f = fleet(Object.fromEntries(NAMES.map((n) => [n, outs[n]])));
            // Before the snapshot: each guest has its lease and has reached its neighbour, so the
            // snapshot holds an ARP cache as a running fleet's would.
            const reach = await timed(() => pingRing(f!, outs, 120));
            const afterRestore: number[] = [];
            const rows: Row[] = await measureFleetRestores(f, {
                bench: "fleetDebian",
                fleetLabel: `${NAMES.length} Debian 12 VMs, 768 MiB each`,
                coldMs: cold.ms,
                coldLabel: "the fleet's cold boot to ready (cloud-init done, qemu-ga answers)",
                dirtyPath: "/var/tmp/pq-bench-dirty",
                restores: RESTORES,
                target: 0.1,
                check: async (fl) => {
                    afterRestore.push((await timed(() => pingRing(fl, outs, 30))).ms);
                },
            });
            return {
                rows,
                notes: [
                    `fleetDebian: ${NAMES.length} Debian 12 guests under TCG (768 MiB each, qemu-ga, root on a qcow2 overlay of the cached image, a cloud-init seed each) on one private Network with DHCP and no user-mode NIC. Cold boot is every VirtualMachine created at once (images made before) until each one's console shows cloud-init's final stage finished and its qemu-ga answers; restore is fleet.restore (all paused, snapshot-load of each in parallel, all resumed, each clock set over qemu-ga). After each restore every dirty marker is checked gone and every guest pings its neighbour's DHCP address on the Network: ${afterRestore.map(fmtMs).join(", ")} for the whole ring (median ${fmtMs(median(afterRestore))}; before the snapshot, lease and first pings took ${fmtMs(reach.ms)}), not counted in the restore.`,
                ],
            };
        } finally {
            f?.close();
            await Promise.all(Object.values(outs).map((o) => virtualMachine.remove("", o).catch(() => undefined)));
            for (const i of images) await removeImage(i).catch(() => undefined);
            await network.remove("", net).catch(() => undefined);
        }
    });
}

/** Every guest pings the next one's address on the Network (busybox ping: the image has no iputils). */
async function pingRing(f: Fleet, outs: Record<string, VirtualMachineOutputs>, timeoutSeconds: number): Promise<void> {
    await Promise.all(
        NAMES.map((name, i) => {
            const next = outs[NAMES[(i + 1) % NAMES.length]].nics![0].ipv4;
            return f
                .machine(name)
                .waitUntilSucceeds(`busybox ping -c 1 -W 2 ${next} >/dev/null`, { timeoutSeconds, intervalMs: 200 });
        }),
    );
}
