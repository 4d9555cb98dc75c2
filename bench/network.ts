import execa from "execa";
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, readFile, rename, writeFile } from "node:fs/promises";
import * as path from "node:path";
import { readPidfile } from "../provider/host/qemu/qemuProcess";
import * as network from "../provider/resources/network";
import type { NetworkOutputs } from "../provider/resources/network";
import * as virtualMachine from "../provider/resources/virtualMachine";
import type { VirtualMachineOutputs } from "../provider/resources/virtualMachine";
import { ensureTestGuest, guestKernelArguments, READY_MARKER } from "../tests/guest/testGuest";
import { fmtMs, fmtRatio, mbPerSecond, median, MiB, timed, withTempDir, type BenchResult, type Row } from "./common";

/**
 * Benchmark 6: private networks. Network create against starting the same vde_switch by hand;
 * between two guests, ping round trip, HTTP request round trip and a 64 MiB transfer over the
 * private network against the same pair talking through host-forwarded user-mode ports (the
 * guest reaches its peer at 10.0.2.2:HOSTPORT); a fleet of VMs on one network against as many
 * isolated VMs, create to ready.
 *
 * The guest-side figures are taken inside the guest (busybox ping, wget, /proc/uptime at 10 ms
 * resolution). The transfer is an HTTP GET of a 64 MiB file from busybox httpd: Debian's busybox
 * nc stops after its first buffer when its input is a pipe or file, so it cannot move 64 MiB.
 */

const BULK_BYTES = 64 * MiB;
const GETS = 20;
/** Bulk transfers alternate between the two paths this many times each; the median counts. */
const BULK_ROUNDS = 3;
const READY_TIMEOUT_S = 240;

/** The source guest waits for /mnt/t/go, runs it, and leaves its output in /mnt/t/result. */
const RUNNER = `#!/bin/sh
(
    i=0
    while [ ! -f /mnt/t/go ] && [ $i -lt 2400 ]; do sleep 0.1; i=$((i+1)); done
    sh /mnt/t/go > /mnt/t/result.tmp 2>&1
    mv /mnt/t/result.tmp /mnt/t/result
) &
`;

const SERVER = `#!/bin/sh
head -c ${BULK_BYTES} /dev/zero > /www/big
`;

function measureScript(peer: string, forwarded: string): string {
    return `up() { cut -d' ' -f1 /proc/uptime; }
ping -c 3 ${peer} > /dev/null 2>&1
echo "ping $(ping -c 20 -i 0.2 ${peer} | tail -1)"
for via in ${peer}:80 ${forwarded}; do
    wget -q -O /dev/null http://$via/
    t0=$(up); i=0
    while [ $i -lt ${GETS} ]; do wget -q -O /dev/null http://$via/; i=$((i+1)); done
    t1=$(up)
    echo "rtt $via $t0 $t1"
done
r=0
while [ $r -lt ${BULK_ROUNDS} ]; do
    for via in ${peer}:80 ${forwarded}; do
        t0=$(up); wget -q -O /dev/null http://$via/big; rc=$?; t1=$(up)
        echo "bulk $via $t0 $t1 $rc"
    done
    r=$((r+1))
done
`;
}

export async function runNetwork(opts: { creates?: number; fleet?: number } = {}): Promise<BenchResult> {
    const creates = opts.creates ?? 11;
    const fleet = opts.fleet ?? 6;
    const rows: Row[] = [];
    const notes: string[] = [];
    const guest = await ensureTestGuest();
    const nets: NetworkOutputs[] = [];
    const vms: VirtualMachineOutputs[] = [];

    return withTempDir("pq-bench-net-", async (dir) => {
        const stateDir = path.join(dir, "s");
        try {
            // 1. Network create, against the same switch started by hand.
            const viaProvider: number[] = [];
            const byHand: number[] = [];
            for (let i = 0; i < creates; i++) {
                const { ms, value } = await timed(() => network.create({ stateDir }));
                viaProvider.push(ms);
                await network.remove(value.id, value.outs as NetworkOutputs);
                const hand = await mkdtemp(path.join(dir, "hand-"));
                const pidfile = path.join(hand, "pid");
                const t0 = process.hrtime.bigint();
                await execa("vde_switch", [
                    "-d",
                    "-s",
                    path.join(hand, "sw"),
                    "-p",
                    pidfile,
                    "--dirmode",
                    "0700",
                    "--mode",
                    "0600",
                ]);
                while ((await readPidfile(pidfile)) === undefined) await new Promise((r) => setTimeout(r, 1));
                byHand.push(Number(process.hrtime.bigint() - t0) / 1e6);
                process.kill((await readPidfile(pidfile))!, "SIGTERM");
            }
            const p = median(viaProvider);
            const h = median(byHand);
            rows.push({
                bench: "6 network",
                measure: `Network create (switch running, record written) vs vde_switch -d by hand (median of ${creates})`,
                provider: fmtMs(p),
                reference: fmtMs(h),
                ratio: fmtRatio(p / h),
            });

            // 2. Two guests: over the private network vs through forwarded user-mode ports.
            const lan = (await network.create({ stateDir, name: "bench" })).outs as NetworkOutputs;
            nets.push(lan);
            const lanId = path.basename(lan.networkDir);
            const share = async (name: string, script: string) => {
                const d = path.join(dir, `share-${name}`);
                await mkdir(d);
                await writeFile(path.join(d, "pq-init.sh"), script);
                return d;
            };
            const vmInputs = (name: string, shareDir: string, memoryMiB: number) => ({
                vm: {
                    name,
                    accel: "tcg",
                    memoryMiB,
                    kernel: guest.kernel,
                    initrd: guest.initrd,
                    kernelArguments: guestKernelArguments({ name, mounts: [{ tag: "pqt", at: "/mnt/t" }] }),
                    shares: [{ source: shareDir, mountTag: "pqt" }],
                    portForwards: [{ guest: 80 }],
                    networks: [{ network: lanId }],
                },
                ready: { serialPattern: READY_MARKER, tcpPort: 80, timeoutSeconds: READY_TIMEOUT_S },
                stateDir,
            });
            const srcShare = await share("src", RUNNER);
            const [src, dst] = await Promise.all([
                virtualMachine.create(vmInputs("src", srcShare, 256)),
                virtualMachine.create(vmInputs("dst", await share("dst", SERVER), 384)),
            ]);
            vms.push(src.outs, dst.outs);
            const peer = dst.outs.nics![0].ipv4;
            const forwarded = `10.0.2.2:${dst.outs.ports!["80"]}`;
            await writeFile(path.join(srcShare, "go.tmp"), measureScript(peer, forwarded));
            await rename(path.join(srcShare, "go.tmp"), path.join(srcShare, "go"));
            const result = path.join(srcShare, "result");
            const until = Date.now() + 180_000;
            while (!existsSync(result)) {
                if (Date.now() > until) throw new Error("the source guest wrote no measurements within 180 s");
                await new Promise((r) => setTimeout(r, 200));
            }
            const lines = (await readFile(result, "utf8")).trim().split("\n");
            const ping = /round-trip min\/avg\/max = ([\d.]+)\/([\d.]+)\/([\d.]+) ms/.exec(
                lines.find((l) => l.startsWith("ping")) ?? "",
            );
            /** Every figure of one kind through one path, in ms. */
            const spans = (kind: string, via: string) => {
                const found = lines.filter((l) => l.startsWith(`${kind} ${via} `)).map((l) => l.split(" "));
                if (!found.length) throw new Error(`no ${kind} figure for ${via} in: ${lines.join(" | ")}`);
                for (const f of found)
                    if (kind === "bulk" && f[4] !== "0")
                        throw new Error(`the 64 MiB GET through ${via} failed (wget status ${f[4]})`);
                return found.map((f) => (Number(f[3]) - Number(f[2])) * 1000);
            };
            const span = (kind: string, via: string) => median(spans(kind, via));
            const rttPrivate = span("rtt", `${peer}:80`) / GETS;
            const rttForwarded = span("rtt", forwarded) / GETS;
            const bulkPrivate = span("bulk", `${peer}:80`);
            const bulkForwarded = span("bulk", forwarded);
            rows.push({
                bench: "6 network",
                measure: "ping round trip between two guests over the private network (avg of 20, TCG)",
                provider: ping ? `${ping[2]} ms` : lines[0],
                reference: "no ICMP through forwarded ports",
                ratio: "",
            });
            rows.push({
                bench: "6 network",
                measure: `HTTP GET round trip guest to guest (busybox wget, mean of ${GETS}): private network vs the peer's forwarded port via 10.0.2.2`,
                provider: fmtMs(rttPrivate),
                reference: fmtMs(rttForwarded),
                ratio: fmtRatio(rttPrivate / rttForwarded),
            });
            rows.push({
                bench: "6 network",
                measure: `64 MiB guest to guest (busybox httpd → wget), throughput, median of ${BULK_ROUNDS} alternating: private network vs forwarded user-mode port (ratio: private ÷ forwarded)`,
                provider: `${mbPerSecond(BULK_BYTES, bulkPrivate).toFixed(1)} MB/s (${fmtMs(bulkPrivate)})`,
                reference: `${mbPerSecond(BULK_BYTES, bulkForwarded).toFixed(1)} MB/s (${fmtMs(bulkForwarded)})`,
                ratio: fmtRatio(bulkForwarded / bulkPrivate),
            });
            notes.push(
                `Network: guest clocks read from /proc/uptime (10 ms steps); each HTTP round trip includes starting busybox wget in the guest, the same on both paths. Raw guest lines: ${lines.join(" | ")}`,
            );
            await Promise.all(vms.splice(0).map((o) => virtualMachine.remove("", o)));

            // 3. A fleet on one network against as many isolated VMs, create to ready.
            const fleetVm = (name: string, onLan: boolean) => ({
                vm: {
                    name,
                    accel: "tcg",
                    kernel: guest.kernel,
                    initrd: guest.initrd,
                    kernelArguments: guestKernelArguments({ name }),
                    ...(onLan ? { networks: [{ network: lanId }] } : {}),
                },
                ready: { serialPattern: READY_MARKER, timeoutSeconds: READY_TIMEOUT_S },
                stateDir,
            });
            const bootFleet = async (onLan: boolean) => {
                const { ms } = await timed(() =>
                    Promise.all(
                        Array.from({ length: fleet }, (_, i) =>
                            virtualMachine
                                .create(fleetVm(`${onLan ? "lan" : "iso"}${i}`, onLan))
                                .then((r) => vms.push(r.outs)),
                        ),
                    ),
                );
                await Promise.all(vms.splice(0).map((o) => virtualMachine.remove("", o)));
                return ms;
            };
            const isolated = await bootFleet(false);
            const onLan = await bootFleet(true);
            rows.push({
                bench: "6 network",
                measure: `${fleet} VMs created at once, create to ready: all on one network vs all isolated (2 cores, TCG)`,
                provider: fmtMs(onLan),
                reference: fmtMs(isolated),
                ratio: fmtRatio(onLan / isolated),
            });
            return { rows, notes };
        } finally {
            await Promise.all(vms.map((o) => virtualMachine.remove("", o).catch(() => undefined)));
            await Promise.all(nets.map((n) => network.remove("", n).catch(() => undefined)));
        }
    });
}
