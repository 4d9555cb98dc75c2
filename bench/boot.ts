import execa from "execa";
import { mkdtemp, readFile } from "node:fs/promises";
import * as path from "node:path";
import { buildQemuArgv } from "../provider/core/qemuArgv";
import { parseVmSpec } from "../provider/core/vmSpec";
import { identify, readPidfile, stopQemu } from "../provider/host/qemu/qemuProcess";
import * as virtualMachine from "../provider/resources/virtualMachine";
import type { VirtualMachineOutputs } from "../provider/resources/virtualMachine";
import { ensureTestGuest, guestKernelArguments, READY_MARKER } from "../tests/guest/testGuest";
import { fmtMs, fmtRatio, median, timed, verdict, withTempDir, type BenchResult, type Row } from "./common";

/**
 * Benchmark 4: the test guest to its ready marker on the serial console, through
 * VirtualMachine's create and by hand: the very argv the provider builds, run directly, with
 * the console log polled every 10 ms. Runs alternate so both see the same load. Then 4 VMs
 * created at once against 4 one after another.
 */

const HAND_POLL_MS = 10;
const BOOT_TIMEOUT_MS = 180_000;

export async function runBoot(opts: { runs?: number; fleet?: number } = {}): Promise<BenchResult> {
    const runs = opts.runs ?? 5;
    const fleet = opts.fleet ?? 4;
    const guest = await ensureTestGuest();
    const vm = (name: string) => ({
        name,
        accel: "tcg",
        kernel: guest.kernel,
        initrd: guest.initrd,
        kernelArguments: guestKernelArguments({ name }),
    });
    const live: VirtualMachineOutputs[] = [];
    const created = async (stateDir: string, name: string): Promise<VirtualMachineOutputs> => {
        const r = await virtualMachine.create({
            vm: vm(name),
            ready: { serialPattern: READY_MARKER, timeoutSeconds: BOOT_TIMEOUT_MS / 1000 },
            stateDir,
        });
        live.push(r.outs as VirtualMachineOutputs);
        return r.outs as VirtualMachineOutputs;
    };
    const removeAll = async () => {
        await Promise.all(live.splice(0).map((outs) => virtualMachine.remove("", outs).catch(() => undefined)));
    };

    return withTempDir("pq-bench-boot-", async (dir) => {
        try {
            const byHand = async (): Promise<number> => {
                const sub = await mkdtemp(path.join(dir, "hand-"));
                const runtime = {
                    pidfile: path.join(sub, "qemu.pid"),
                    qmpSocket: path.join(sub, "qmp.sock"),
                    serialLog: path.join(sub, "serial.log"),
                };
                const argv = buildQemuArgv(parseVmSpec(vm("hand")), { accel: "tcg" }, runtime);
                const t0 = Date.now();
                try {
                    await execa(argv[0], argv.slice(1));
                    while (!(await readFile(runtime.serialLog, "utf8").catch(() => "")).includes(READY_MARKER)) {
                        if (Date.now() - t0 > BOOT_TIMEOUT_MS)
                            throw new Error(`no ${READY_MARKER} by hand within ${BOOT_TIMEOUT_MS / 1000} s`);
                        await new Promise((r) => setTimeout(r, HAND_POLL_MS));
                    }
                    return Date.now() - t0;
                } finally {
                    const pid = await readPidfile(runtime.pidfile);
                    const identity = pid === undefined ? undefined : await identify(pid);
                    if (identity)
                        await stopQemu(
                            { identity, pidfile: runtime.pidfile, qmpSocket: runtime.qmpSocket },
                            { powerdownMs: 0 },
                        );
                }
            };
            const viaProvider = async (): Promise<{ ms: number; readyMs: number }> => {
                const { ms, value } = await timed(() => created(path.join(dir, "one"), "prov"));
                await removeAll();
                return { ms, readyMs: value.readySeconds * 1000 };
            };

            const hand: number[] = [];
            const provider: number[] = [];
            for (let i = 0; i < runs; i++) {
                hand.push(await byHand());
                provider.push((await viaProvider()).ms);
            }
            const h = median(hand);
            const p = median(provider);

            const sequential = await timed(async () => {
                for (let i = 0; i < fleet; i++) await created(path.join(dir, "seq"), `seq-${i}`);
            });
            await removeAll();
            const parallel = await timed(() =>
                Promise.all(Array.from({ length: fleet }, (_, i) => created(path.join(dir, "par"), `par-${i}`))),
            );
            const readyEach = parallel.value.map((o) => o.readySeconds * 1000);
            await removeAll();

            const rows: Row[] = [
                {
                    bench: "4 boot",
                    measure: `test guest to ${READY_MARKER}: VirtualMachine create vs the same argv by hand (median of ${runs}, alternating)`,
                    provider: fmtMs(p),
                    reference: fmtMs(h),
                    ratio: fmtRatio(p / h),
                    target: "< 1.1×",
                    verdict: verdict(p / h < 1.1),
                },
                {
                    bench: "4 boot",
                    measure: "… every run, provider / by hand",
                    provider: provider.map((x) => (x / 1000).toFixed(2)).join(", ") + " s",
                    reference: hand.map((x) => (x / 1000).toFixed(2)).join(", ") + " s",
                },
                {
                    bench: "4 boot",
                    measure: `${fleet} VMs created at once vs ${fleet} one after another (wall time, ${2} cores, TCG)`,
                    provider: fmtMs(parallel.ms),
                    reference: fmtMs(sequential.ms),
                    ratio: fmtRatio(parallel.ms / sequential.ms),
                },
                {
                    bench: "4 boot",
                    measure: `… each VM's readySeconds when ${fleet} boot at once`,
                    provider: readyEach.map((x) => (x / 1000).toFixed(2)).join(", ") + " s",
                    reference: `one alone ${fmtMs(p)}`,
                },
            ];
            const notes: string[] = [];
            if (p / h >= 1.1) {
                notes.push(
                    `Boot overhead ${fmtRatio(p / h)} (${fmtMs(p - h)} per VM). VirtualMachine.create polls readiness every READY_POLL_MS = 100 ms (provider/resources/virtualMachine.ts waitReady), ` +
                        "re-reading the whole serial log and /proc each tick, then opens a QMP connection for query-status; by hand polls every 10 ms. See the per-run figures for how much is noise.",
                );
            }
            return { rows, notes };
        } finally {
            await removeAll();
        }
    });
}
