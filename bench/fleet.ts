import * as path from "node:path";
import * as diskImage from "../provider/resources/diskImage";
import * as network from "../provider/resources/network";
import type { NetworkOutputs } from "../provider/resources/network";
import * as virtualMachine from "../provider/resources/virtualMachine";
import type { VirtualMachineOutputs } from "../provider/resources/virtualMachine";
import { fleet } from "../sdk/testing";
import { ensureTestGuest, guestKernelArguments } from "../tests/guest/testGuest";
import { timed, withTempDir, type BenchResult, type Row } from "./common";
import { measureFleetRestores } from "./fleetRestores";

/**
 * Benchmark: resetting a whole fleet. For 4 and for 8 busybox VMs on one private Network, each
 * with a qcow2 disk and the shell agent: the fleet's cold boot to ready (every VirtualMachine
 * created at once, ready when its agent answers) against `fleet.restore` — every VM paused,
 * loaded in parallel, resumed together, and its clock set over its agent, so the fleet is back
 * and answering on its guest channels. Target: restore ≤ 0.1× of the cold boot.
 */

const RESTORES = 3;

export async function runFleet(opts: { sizes?: number[] } = {}): Promise<BenchResult> {
    const guest = await ensureTestGuest();
    const rows: Row[] = [];
    for (const size of opts.sizes ?? [4, 8]) {
        await withTempDir(`pq-bench-fleet${size}-`, async (dir) => {
            const stateDir = path.join(dir, "state");
            const created = await network.create({ name: `bench${size}`, stateDir });
            const net = created.outs as NetworkOutputs;
            const outs: Record<string, VirtualMachineOutputs> = {};
            try {
                const names = Array.from({ length: size }, (_, i) => `b${size}-${i + 1}`);
                const disks = await Promise.all(
                    names.map((name) =>
                        diskImage.createDiskImage({
                            stateDir,
                            path: path.join(dir, `${name}.qcow2`),
                            source: { kind: "blank", size: "64M", format: "qcow2" },
                        }),
                    ),
                );
                const cold = await timed(() =>
                    Promise.all(
                        names.map(async (name, i) => {
                            const r = await virtualMachine.create({
                                vm: {
                                    name,
                                    accel: "tcg",
                                    agent: "shell",
                                    kernel: guest.kernel,
                                    initrd: guest.initrd,
                                    kernelArguments: guestKernelArguments({ name }),
                                    disks: [{ path: disks[i].path, format: "qcow2", inputHash: disks[i].inputHash }],
                                    networks: [{ network: created.id }],
                                },
                                ready: { agent: true, timeoutSeconds: 600 },
                                stateDir,
                            });
                            outs[name] = r.outs as VirtualMachineOutputs;
                        }),
                    ),
                );
                const f = fleet(Object.fromEntries(names.map((n) => [n, outs[n]])));
                try {
                    rows.push(
                        ...(await measureFleetRestores(f, {
                            bench: "fleet",
                            fleetLabel: `${size} busybox VMs`,
                            coldMs: cold.ms,
                            coldLabel: "the fleet's cold boot to ready",
                            dirtyPath: "/tmp/dirty",
                            restores: RESTORES,
                            target: 0.1,
                        })),
                    );
                } finally {
                    f.close();
                }
            } finally {
                await Promise.all(Object.values(outs).map((o) => virtualMachine.remove("", o).catch(() => undefined)));
                await network.remove("", net).catch(() => undefined);
            }
        });
    }
    return {
        rows,
        notes: [
            "fleet: cold boot is every VirtualMachine of the fleet created at once until each one's agent answers; restore is fleet.restore (every VM paused, snapshot-load of each in parallel, all resumed, each guest clock set over its agent — so every agent has answered). TCG guests, 256 MiB each, on a 2-core machine shared with other work: the cold boot of 8 is CPU-bound, the restore mostly so.",
        ],
    };
}
