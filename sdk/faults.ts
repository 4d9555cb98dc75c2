import { readFileSync } from "node:fs";
import { checkOurDaemon, parseProcStat } from "../provider/host/qemu/qemuProcess";
import { siteOf, type VmSite } from "../provider/resources/virtualMachine/site";
import { attach, MachineError, type MachineOutputs } from "./machine";

/**
 * Faults beyond a cut link, on one VM of a running fleet: each is made over QMP or with signals
 * to our own QEMU (pid + start time + boot id checked first), so none needs root, and each is a
 * `Fault` that `undo()` takes back. Faults inside QEMU (throttles, failing-disk filters, a pause)
 * go with its process, so deleting the VM undoes them too; the two made with signals (freeze,
 * CPU starvation) are also undone when this process exits, and a VM's delete sends SIGCONT
 * before it stops QEMU.
 *
 * What the guest sees, fault by fault, is in docs/fleet-testing.md and on each method.
 */

export interface Fault {
    /** What was done, for messages: "slow disk virtio0 at 1048576 B/s". */
    readonly description: string;
    /** Takes the fault back; a second call does nothing. */
    undo(): Promise<void>;
}

/** A disk of the VM: its index in vm.disks (0 is the first), or its host file (the path or the overlay QEMU opened). */
export type DiskRef = number | string;

export interface Faults {
    /**
     * QEMU stops (SIGSTOP): the guest gets no CPU at all and answers nothing, not even QMP. On
     * thaw (SIGCONT) its clocks jump forward by the time frozen, as on a hypervisor that hung:
     * timers fire late at once, TCP peers may have timed out. VMs on this machine only.
     */
    freeze(): Promise<Fault>;
    /**
     * QMP `stop`: the guest stops and so does its virtual clock; after `cont` it runs on as if
     * nothing happened, its clock behind the host's by the pause (set it again with
     * `setGuestClock`). Peers see it silent meanwhile.
     */
    pause(): Promise<Fault>;
    /** Reads and writes of the disk throttled (QMP block_set_io_throttle): I/O just takes longer. */
    slowDisk(disk: DiskRef, rate: { bytesPerSecond: number; iops?: number }): Promise<Fault>;
    /**
     * Reads and/or writes of the disk fail with EIO in the guest (a blkdebug filter put under the
     * disk's format layer with blockdev-reopen): the kernel logs I/O errors, `dd` fails with
     * "I/O error", a file system may turn read-only. Data already in the guest's page cache is
     * still read from there.
     */
    failingDisk(disk: DiskRef, which?: { reads?: boolean; writes?: boolean }): Promise<Fault>;
    /** The guest's clock set `seconds` away from the host's (over its agent); undo sets it right. */
    clockSkew(seconds: number): Promise<Fault>;
    /**
     * Power cut: the guest stops at once (QMP stop) and its machine is reset (system_reset), so
     * whatever it had not written to its disks is lost. `undo` is power on: it boots again from
     * its disks, as the same QEMU process, the same resource with the same outputs.
     */
    powerCut(): Promise<Fault>;
    /**
     * CPU starvation without cgroups: QEMU is stopped and continued (SIGSTOP/SIGCONT) in a duty
     * cycle, `share` of every `periodMs` running (default 0.25 of 100 ms). The guest's clock
     * runs on while it gets no CPU: it sees time pass in jumps, and work takes 1/share as long
     * in wall time. VMs on this machine only.
     */
    starveCpu(opts?: { share?: number; periodMs?: number }): Promise<Fault>;
    /** The faults made here and not yet undone. */
    active(): Fault[];
    /** Undoes every active fault, newest first. */
    undoAll(): Promise<void>;
}

const VIRTIO_EIO = 5;

/** Faults on the VM with these outputs (a VirtualMachine's outputs). */
export function faults(outputs: MachineOutputs): Faults {
    const site = siteOf(outputs as MachineOutputs & { serialLog: string });
    const machine = attach(outputs);
    const live: Fault[] = [];

    const track = (description: string, undo: () => Promise<void>): Fault => {
        let done = false;
        const fault: Fault = {
            description,
            async undo() {
                if (done) return;
                done = true;
                live.splice(live.indexOf(fault), 1);
                await undo();
            },
        };
        live.push(fault);
        return fault;
    };

    const qmp = (command: string, args?: Record<string, unknown>) => site.qmp(command, args, 30_000);

    return {
        async freeze() {
            const pid = await ourLocalPid(outputs, site, "freeze");
            process.kill(pid, "SIGSTOP");
            const release = holdStopped(pid);
            return track(`freeze (SIGSTOP of QEMU pid ${pid})`, async () => {
                release();
                await signalIfStillOurs(outputs, "SIGCONT");
            });
        },

        async pause() {
            await qmp("stop");
            return track("pause (QMP stop)", async () => void (await qmp("cont")));
        },

        async slowDisk(disk, rate) {
            const bps = rate.bytesPerSecond;
            if (!Number.isInteger(bps) || bps < 1)
                throw new Error(
                    `slowDisk: rate.bytesPerSecond must be a whole number of bytes per second ≥ 1, got ${bps}`,
                );
            const iops = rate.iops ?? 0;
            if (!Number.isInteger(iops) || iops < 0)
                throw new Error(`slowDisk: rate.iops must be a whole number ≥ 0 (0: no limit), got ${iops}`);
            const d = await findDisk(site, outputs, disk);
            const throttle = (b: number, i: number) =>
                qmp("block_set_io_throttle", {
                    device: d.device,
                    bps: b,
                    bps_rd: 0,
                    bps_wr: 0,
                    iops: i,
                    iops_rd: 0,
                    iops_wr: 0,
                });
            await throttle(bps, iops);
            return track(
                `slow disk ${d.device} (${d.file}) at ${bps} B/s${iops ? `, ${iops} IOPS` : ""}`,
                async () => void (await throttle(0, 0)),
            );
        },

        async failingDisk(disk, which = { reads: true, writes: true }) {
            const iotypes = [
                ...(which.reads !== false ? ["read"] : []),
                ...(which.writes !== false ? ["write", "write-zeroes"] : []),
            ];
            if (!iotypes.length)
                throw new Error(
                    "failingDisk: which.reads and which.writes are both false; leave one out or set it true",
                );
            const d = await findDisk(site, outputs, disk);
            return insertErrors(
                d,
                iotypes,
                VIRTIO_EIO,
                `failing disk ${d.device} (${d.file}): ${iotypes.filter((t) => t !== "write-zeroes").join(" and ")} get EIO`,
                async () => undefined,
            );
        },

        async clockSkew(seconds) {
            if (!Number.isInteger(seconds) || seconds === 0)
                throw new Error(
                    `clockSkew: seconds must be a whole, non-zero number of seconds (negative: behind), got ${seconds}`,
                );
            await machine.succeed(`date -u -s @${Math.floor(Date.now() / 1000) + seconds} >/dev/null`);
            return track(`clock skew ${seconds > 0 ? "+" : ""}${seconds} s`, async () => {
                await machine.succeed(`date -u -s @${Math.floor(Date.now() / 1000)} >/dev/null`);
            });
        },

        async powerCut() {
            // QEMU runs with -no-reboot, which turns a reset into an exit: a reset must reset here.
            await qmp("set-action", { reboot: "reset" });
            await qmp("stop");
            await qmp("system_reset");
            // The guest's end of the channel is gone with its memory.
            machine.close();
            return track("power cut (QMP stop + system_reset)", async () => {
                await qmp("cont");
                // The first start after a reset may itself reset (seen with direct kernel boot
                // under TCG): -no-reboot's exit comes back only once the guest is up again.
                if (outputs.agent) await machine.waitUntilSucceeds("true", { timeoutSeconds: 300, intervalMs: 1000 });
                else await new Promise((r) => setTimeout(r, 10_000));
                await qmp("set-action", { reboot: "shutdown" });
            });
        },

        async starveCpu(opts = {}) {
            const share = opts.share ?? 0.25;
            const periodMs = opts.periodMs ?? 100;
            if (!(share > 0 && share < 1))
                throw new Error(
                    `starveCpu: share must be between 0 and 1 (exclusive), the part of each period the VM runs; got ${share}`,
                );
            if (!Number.isInteger(periodMs) || periodMs < 20 || periodMs > 10_000)
                throw new Error(`starveCpu: periodMs must be a whole number of ms from 20 to 10000, got ${periodMs}`);
            const pid = await ourLocalPid(outputs, site, "starveCpu");
            const release = holdStopped(pid);
            let stopped = false;
            let timer: NodeJS.Timeout | undefined;
            const step = () => {
                try {
                    process.kill(pid, stopped ? "SIGCONT" : "SIGSTOP");
                } catch {
                    return; // QEMU is gone: nothing left to starve
                }
                stopped = !stopped;
                timer = setTimeout(step, stopped ? (1 - share) * periodMs : share * periodMs);
                timer.unref();
            };
            step();
            return track(
                `CPU starvation: ${Math.round(share * 100)}% of every ${periodMs} ms (SIGSTOP/SIGCONT of QEMU pid ${pid})`,
                async () => {
                    clearTimeout(timer);
                    release();
                    await signalIfStillOurs(outputs, "SIGCONT");
                },
            );
        },

        active: () => [...live],

        async undoAll() {
            const errors: string[] = [];
            for (const f of [...live].reverse())
                await f.undo().catch((e: Error) => errors.push(`${f.description}: ${e.message}`));
            machine.close();
            if (errors.length) throw new MachineError(`undoing faults failed: ${errors.join("; ")}`);
        },
    };

    /**
     * Puts a blkdebug node that fails `iotypes` with `errno` between the disk's format layer and
     * its file (blockdev-reopen of the format node with a new `file`), and takes it out again on
     * undo. It needs the node names the provider gives each disk at launch (pq-disk<N> and
     * pq-disk<N>-file): QEMU refuses to reopen nodes with generated names.
     */
    async function insertErrors(
        d: DiskNode,
        iotypes: string[],
        errno: number,
        description: string,
        afterUndo: () => Promise<void>,
    ): Promise<Fault> {
        const fileNode = `${d.node}-file`;
        const names = ((await qmp("query-named-block-nodes", { flat: true })) as { "node-name": string }[]).map(
            (n) => n["node-name"],
        );
        if (!d.node.startsWith("pq-") || !names.includes(fileNode)) {
            throw new Error(
                `disk ${d.file} has no named block nodes (node ${d.node}): QEMU can only put a fault under disks started by a pulumi-qemu that names them; replace the VM to get them`,
            );
        }
        const filter = `pq-fault-${d.node}`;
        if (names.includes(filter)) throw new Error(`disk ${d.file} already has a failing-disk fault; undo it first`);
        await qmp("blockdev-add", {
            driver: "blkdebug",
            "node-name": filter,
            image: fileNode,
            "inject-error": iotypes.map((iotype) => ({ event: "none", iotype, errno })),
        });
        const reopen = (file: string) =>
            qmp("blockdev-reopen", {
                options: [{ driver: d.format, "node-name": d.node, file, "read-only": d.readOnly }],
            });
        try {
            await reopen(filter);
        } catch (err) {
            await qmp("blockdev-del", { "node-name": filter }).catch(() => undefined);
            throw err;
        }
        return track(description, async () => {
            await reopen(fileNode);
            await qmp("blockdev-del", { "node-name": filter });
            await afterUndo();
        });
    }
}

interface DiskNode {
    device: string;
    node: string;
    file: string;
    format: string;
    readOnly: boolean;
}

/** The disk `ref` names, as QMP knows it (query-block): by index in vm.disks, or by host file. */
async function findDisk(site: VmSite, outputs: MachineOutputs, ref: DiskRef): Promise<DiskNode> {
    const devices = (await site.qmp("query-block", undefined, 10_000)) as Array<{
        device: string;
        inserted?: { "node-name": string; file: string; ro: boolean; drv: string; image?: { filename: string } };
    }>;
    const nodes: DiskNode[] = devices
        .filter((d) => d.inserted)
        .map((d) => ({
            device: d.device,
            node: d.inserted!["node-name"],
            file: d.inserted!.image?.filename ?? d.inserted!.file,
            format: d.inserted!.drv,
            readOnly: d.inserted!.ro,
        }));
    let file: string | undefined;
    if (typeof ref === "number") {
        const disks = (outputs.vm as { disks?: Array<{ path: string; overlay?: string }> } | undefined)?.disks;
        if (!disks)
            throw new Error(
                "a disk by index needs the VM's vm output (pass a VirtualMachine's outputs), or name it by its file",
            );
        const disk = disks[ref];
        if (!Number.isInteger(ref) || !disk)
            throw new Error(`disk ${ref}: the VM has ${disks.length} disk(s) in vm.disks, numbered from 0`);
        file = disk.overlay ?? disk.path;
    } else file = ref;
    // A disk with a fault under it shows QEMU's json: filename; its node name still says which it is.
    const found =
        (typeof ref === "number" ? nodes.find((n) => n.node === `pq-disk${ref}`) : undefined) ??
        nodes.find((n) => n.file === file);
    if (!found)
        throw new Error(
            `disk ${JSON.stringify(ref)}: QEMU has no disk ${file} (its disks: ${nodes.map((n) => `${n.device} ${n.file}`).join(", ") || "none"})`,
        );
    return found;
}

/** The QEMU pid, once it is checked to be ours and on this machine (signals cannot cross to a far host). */
async function ourLocalPid(outputs: MachineOutputs, site: VmSite, what: string): Promise<number> {
    if (site.where)
        throw new Error(`${what} signals QEMU and works on VMs on this machine only; this one is on ${site.where}`);
    if (outputs.pid === undefined || !outputs.processStartTime || !outputs.bootId || !outputs.pidfile)
        throw new Error(
            `${what} needs the VM's pid, processStartTime, bootId and pidfile outputs (pass a VirtualMachine's outputs)`,
        );
    const live = await checkOurDaemon(
        { pid: outputs.pid, startTime: outputs.processStartTime, bootId: outputs.bootId },
        outputs.pidfile,
    );
    if (!live.alive) throw new Error(`${what}: the VM's QEMU is not running (${live.reason})`);
    return outputs.pid;
}

async function signalIfStillOurs(outputs: MachineOutputs, signal: NodeJS.Signals): Promise<void> {
    const live = await checkOurDaemon(
        { pid: outputs.pid!, startTime: outputs.processStartTime!, bootId: outputs.bootId! },
        outputs.pidfile!,
    );
    if (live.alive) process.kill(outputs.pid!, signal);
}

/**
 * While a fault keeps `pid` stopped, an exit of this process (a test that threw, Ctrl-C)
 * continues it, so no QEMU is left stopped behind a finished test.
 */
const stoppedByUs = new Map<number, { holds: number; startTime: string }>();
let exitHook = false;
function holdStopped(pid: number): () => void {
    const held = stoppedByUs.get(pid);
    stoppedByUs.set(pid, { holds: (held?.holds ?? 0) + 1, startTime: held?.startTime ?? procStartTime(pid) ?? "" });
    if (!exitHook) {
        exitHook = true;
        process.on("exit", () => {
            for (const [p, { startTime }] of stoppedByUs) {
                try {
                    // Synchronous here (an exit hook cannot wait): the same process, by its start time.
                    if (procStartTime(p) === startTime) process.kill(p, "SIGCONT");
                } catch {
                    // already gone
                }
            }
        });
    }
    return () => {
        const held = stoppedByUs.get(pid);
        if (!held || held.holds <= 1) stoppedByUs.delete(pid);
        else held.holds--;
    };
}

function procStartTime(pid: number): string | undefined {
    try {
        return parseProcStat(readFileSync(`/proc/${pid}/stat`, "utf8")).startTime;
    } catch {
        return undefined;
    }
}
