import { stat } from "node:fs/promises";
import { tcpAnswers } from "../provider/host/net/ports";
import { runTool } from "../provider/host/process/toolRun";
import { attach, type Machine } from "../sdk/testing";
import { bootDebianQga, type DebianQgaVm } from "../tests/guest/debianQga";
import { fmtMs, fmtRatio, median, MiB, timed, verdict, withTempDir, type BenchResult, type Row } from "./common";

/**
 * Benchmark: fast resets on a real distribution. One Debian 12 guest under TCG (768 MiB,
 * `vm.agent: "qga"`, its root a qcow2 overlay on the cached image, the cloud-init seed a
 * read-only raw disk, no shares), booted once — a cold boot takes minutes, so one is the
 * reference: boot to ready is the whole of `bootDebianQga` (overlay and seed made, QEMU
 * started, cloud-init's final stage done, qemu-ga answers, sshd sends its banner on the
 * forwarded port). Then a snapshot (time, vmstate size, overlay growth) and three restores to
 * ready: `machine.restore` (snapshot-load, then the clock set over qemu-ga — so the agent
 * answers) until sshd listens on 22 inside and its banner comes back on the forwarded port.
 * Each restore is checked afterwards: a file written after the snapshot is gone, and ssh logs
 * in. Target: restore ≤ 0.2× of the cold boot.
 */

const RESTORES = 3;
const DIRTY = "/var/tmp/pq-bench-dirty";

export async function runSnapshotDebian(): Promise<BenchResult> {
    return withTempDir("pq-bench-snapdeb-", async (dir) => {
        let deb: DebianQgaVm | undefined;
        let m: Machine | undefined;
        try {
            const cold = await timed(() => bootDebianQga(dir, "bench-snapdeb"));
            deb = cold.value;
            m = attach(deb.outs);
            // The root disk, the overlay that holds the snapshot (bootDebianQga puts it first).
            const overlay = (deb.outs.vm as { disks: Array<{ path: string }> }).disks[0].path;
            const sshPort = deb.sshPort;
            const before = (await stat(overlay)).blocks * 512;
            const save = await timed(() => m!.snapshot("ready"));
            const grew = (await stat(overlay)).blocks * 512 - before;
            const restores: number[] = [];
            for (let i = 0; i < RESTORES; i++) {
                await m.succeed(`echo dirty > ${DIRTY} && sync`);
                restores.push(
                    (
                        await timed(async () => {
                            await m!.restore("ready");
                            await m!.waitForOpenPort(22, { timeoutSeconds: 60, intervalMs: 20 });
                            await waitForBanner(sshPort, 60_000);
                        })
                    ).ms,
                );
                // Honest figures only: the restore must have put disk and memory back, and sshd must serve.
                await m.fail(`test -e ${DIRTY}`);
                await sshTrue(deb.sshArgs);
            }
            await m.deleteSnapshot("ready");
            const restoreMs = median(restores);
            const ratio = restoreMs / cold.ms;
            const rows: Row[] = [
                {
                    bench: "snapshotDebian",
                    measure: `Debian 12 guest, 768 MiB: restore to ready (median of ${RESTORES}: ${restores.map(fmtMs).join(", ")})`,
                    provider: fmtMs(restoreMs),
                    reference: `cold boot to ready ${fmtMs(cold.ms)} (one boot)`,
                    ratio: fmtRatio(ratio),
                    target: "≤ 0.20×",
                    verdict: verdict(ratio <= 0.2),
                },
                {
                    bench: "snapshotDebian",
                    measure: "Debian 12 guest, 768 MiB: take a snapshot",
                    provider: fmtMs(save.ms),
                    reference: `vmstate ${(save.value.vmStateBytes / MiB).toFixed(1)} MiB, qcow2 overlay grew ${(grew / MiB).toFixed(1)} MiB`,
                },
            ];
            return {
                rows,
                notes: [
                    "snapshotDebian: one Debian 12 guest under TCG (768 MiB, qemu-ga, root on a qcow2 overlay of the cached image, cloud-init seed read-only raw). Cold boot to ready is the whole boot helper: overlay and seed made, QEMU started, cloud-init's final stage finished on the console, qemu-ga answers and sshd's banner comes back on the forwarded 127.0.0.1 port. Restore to ready is machine.restore (QMP snapshot-load, then the guest clock set over qemu-ga) until port 22 listens inside and sshd's banner comes back on the forwarded port; after each restore a file written after the snapshot is checked gone and ssh logs in.",
                ],
            };
        } finally {
            m?.close();
            await deb?.stop();
        }
    });
}

/** Until sshd sends its banner through the forwarded port (a connect alone proves nothing under user networking). */
async function waitForBanner(port: number, timeoutMs: number): Promise<void> {
    const until = Date.now() + timeoutMs;
    while (!(await tcpAnswers("127.0.0.1", port, Math.max(500, Math.min(5000, until - Date.now()))))) {
        if (Date.now() > until)
            throw new Error(`sshd gave no banner on 127.0.0.1:${port} within ${timeoutMs / 1000} s after the restore`);
        await new Promise((r) => setTimeout(r, 20));
    }
}

async function sshTrue(sshArgs: string[]): Promise<void> {
    const r = await runTool("ssh", [...sshArgs, "tester@127.0.0.1", "true"], {
        timeoutMs: 60_000,
        label: "ssh tester@127.0.0.1 true",
    });
    if (r.exitCode !== 0)
        throw new Error(`ssh tester@127.0.0.1 true after the restore exited ${r.exitCode}: ${r.stderr}`);
}
