import { stat } from "node:fs/promises";
import * as path from "node:path";
import * as diskImage from "../provider/resources/diskImage";
import * as virtualMachine from "../provider/resources/virtualMachine";
import type { VirtualMachineOutputs } from "../provider/resources/virtualMachine";
import { waitUntilGone } from "../provider/host/qemu/qemuProcess";
import { attach } from "../sdk/testing";
import { ensureTestGuest, guestKernelArguments } from "../tests/guest/testGuest";
import { fmtMs, fmtRatio, median, MiB, timed, verdict, withTempDir, type BenchResult, type Row } from "./common";

/**
 * Benchmark: fast resets. For the busybox guest at 256 and 1024 MiB of memory: cold boot to
 * ready (VirtualMachine create: QEMU start, boot, the agent answers and httpd listens on 80
 * inside) against restore to ready (machine.restore — snapshot-load, the clock set over the
 * agent — then the same two checks); the time to take the snapshot, its vmstate size and how
 * much the qcow2 file grew. Target: restore ≤ 0.2× of a cold boot.
 */

const RESTORES = 5;
const WARM_ROUNDS = 3;
const COLD_BOOTS = 3;

export async function runSnapshot(opts: { memories?: number[] } = {}): Promise<BenchResult> {
    const guest = await ensureTestGuest();
    const rows: Row[] = [];
    await withTempDir("pq-bench-snap-", async (dir) => {
        for (const memoryMiB of opts.memories ?? [256, 1024]) {
            const stateDir = path.join(dir, `state-${memoryMiB}`);
            const img = await diskImage.createDiskImage({
                stateDir,
                path: path.join(dir, `data-${memoryMiB}.qcow2`),
                source: { kind: "blank", size: "64M", format: "qcow2" },
            });
            const vm = {
                name: `bench-snap-${memoryMiB}`,
                accel: "tcg",
                agent: "shell",
                memoryMiB,
                network: "none",
                kernel: guest.kernel,
                initrd: guest.initrd,
                kernelArguments: guestKernelArguments({ name: `bench-snap-${memoryMiB}` }),
                disks: [{ path: img.path, format: "qcow2", inputHash: img.inputHash }],
            };
            let outs: VirtualMachineOutputs | undefined;
            try {
                // Cold boots vary with the load of the shared machine: the median of three.
                const colds: number[] = [];
                for (let i = 0; i < COLD_BOOTS; i++) {
                    if (outs) await virtualMachine.remove("", outs);
                    outs = undefined;
                    const c = await timed(() =>
                        virtualMachine.create({
                            vm,
                            ready: { agent: true, guestPort: 80, timeoutSeconds: 180 },
                            stateDir,
                        }),
                    );
                    outs = c.value.outs as VirtualMachineOutputs;
                    colds.push(c.ms);
                }
                const cold = { ms: median(colds) };
                const m = attach(outs!);
                try {
                    const before = (await stat(img.path)).blocks * 512;
                    const save = await timed(() => m.snapshot("ready"));
                    const grew = (await stat(img.path)).blocks * 512 - before;
                    const restores: number[] = [];
                    for (let i = 0; i < RESTORES; i++) {
                        await m.succeed("echo dirty > /tmp/dirty");
                        restores.push(
                            (
                                await timed(async () => {
                                    await m.restore("ready");
                                    await m.waitForOpenPort(80, { timeoutSeconds: 60, intervalMs: 20 });
                                })
                            ).ms,
                        );
                        // Honest figures only: the restore must have worked.
                        await m.fail("test -e /tmp/dirty");
                    }
                    const restoreMs = median(restores);
                    const ratio = restoreMs / cold.ms;
                    rows.push(
                        {
                            bench: "snapshot",
                            measure: `${memoryMiB} MiB guest: restore to ready (median of ${RESTORES})`,
                            provider: fmtMs(restoreMs),
                            reference: `cold boot to ready ${fmtMs(cold.ms)} (median of ${COLD_BOOTS})`,
                            ratio: fmtRatio(ratio),
                            target: "≤ 0.20×",
                            verdict: verdict(ratio <= 0.2),
                        },
                        {
                            bench: "snapshot",
                            measure: `${memoryMiB} MiB guest: take a snapshot`,
                            provider: fmtMs(save.ms),
                            reference: `vmstate ${(save.value.vmStateBytes / MiB).toFixed(1)} MiB, qcow2 grew ${(grew / MiB).toFixed(1)} MiB`,
                        },
                    );
                    await m.deleteSnapshot("ready");
                } finally {
                    m.close();
                }
            } finally {
                if (outs) await virtualMachine.remove("", outs).catch(() => undefined);
            }
        }
        rows.push(...(await warmCreates(dir, guest)));
    });
    return {
        rows,
        notes: [
            "snapshot: cold boot to ready is VirtualMachine create with ready { agent, guestPort: 80 }; restore to ready is machine.restore (QMP snapshot-load of an internal qcow2 snapshot holding disks and vmstate, then the guest clock set over the shell agent) until port 80 listens inside. Guests under TCG; the vmstate holds only the pages the guest touched, which is why it hardly grows with the memory size.",
        ],
    };
}

/**
 * The declared path, `warmStart: true`: VirtualMachine create after the VM's QEMU was killed
 * (restored) against its first create (a cold boot, which also takes the snapshot).
 */
async function warmCreates(dir: string, guest: { kernel: string; initrd: string }): Promise<Row[]> {
    const stateDir = path.join(dir, "state-warm");
    const img = await diskImage.createDiskImage({
        stateDir,
        path: path.join(dir, "warm.qcow2"),
        source: { kind: "blank", size: "64M", format: "qcow2" },
    });
    const inputs = {
        vm: {
            name: "bench-warm",
            accel: "tcg",
            agent: "shell",
            network: "none",
            kernel: guest.kernel,
            initrd: guest.initrd,
            kernelArguments: guestKernelArguments({ name: "bench-warm" }),
            disks: [{ path: img.path, format: "qcow2", inputHash: img.inputHash }],
        },
        ready: { agent: true as const, guestPort: 80, timeoutSeconds: 180 },
        stateDir,
        warmStart: true,
    };
    let outs: VirtualMachineOutputs | undefined;
    const kill = async () => {
        process.kill(outs!.pid, "SIGKILL");
        await waitUntilGone(
            { pid: outs!.pid, startTime: outs!.processStartTime, bootId: outs!.bootId },
            outs!.pidfile,
            10_000,
        );
        await virtualMachine.read("x", outs!);
        outs = undefined;
    };
    try {
        const cold = await timed(() => virtualMachine.create(inputs));
        outs = cold.value.outs as VirtualMachineOutputs;
        if (outs.start !== "cold") throw new Error(`bench warmStart: the first create was ${outs.start}, not cold`);
        const warm: number[] = [];
        for (let i = 0; i < WARM_ROUNDS; i++) {
            await kill();
            const r = await timed(() => virtualMachine.create(inputs));
            outs = r.value.outs as VirtualMachineOutputs;
            if (outs.start !== "restored")
                throw new Error(
                    `bench warmStart: create ${i + 2} was ${outs.start} (${outs.startNote ?? ""}), not restored`,
                );
            warm.push(r.ms);
        }
        const ratio = median(warm) / cold.ms;
        return [
            {
                bench: "snapshot",
                measure: `warmStart, 256 MiB guest: create to ready after kill -9, restored (median of ${WARM_ROUNDS})`,
                provider: fmtMs(median(warm)),
                reference: `first create, cold boot + snapshot ${fmtMs(cold.ms)}`,
                ratio: fmtRatio(ratio),
                target: "≤ 0.20×",
                verdict: verdict(ratio <= 0.2),
            },
        ];
    } finally {
        if (outs) await virtualMachine.remove("", outs).catch(() => undefined);
    }
}
