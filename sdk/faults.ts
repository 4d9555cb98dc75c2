import { readFileSync } from "node:fs";
import { checkOurDaemon, parseProcStat, readCmdline } from "../provider/host/qemu/qemuProcess";
import { shellQuote } from "../provider/core/shellQuote";
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
    /**
     * The host's disk under this VM disk is full: the next write that reaches it gets ENOSPC (a
     * blkdebug filter under the disk's format layer, as for `failingDisk`), and QEMU does what it
     * does by default when the disk under a VM fills up: it pauses the VM (QMP status
     * "io-error", the disk's io-status "nospace", a BLOCK_IO_ERROR event) with the write kept.
     * The guest sees nothing, it just stops, its clock with it; reads before that write work.
     * `undo` is space freed: the filter goes, QEMU continues the VM and retries the write, which
     * succeeds, so nothing is lost and the guest runs on (its clock behind by the pause).
     */
    fullDisk(disk: DiskRef): Promise<Fault>;
    /**
     * The guest's own file system that holds `guestPath` filled up, over its agent: a file of
     * all its free space is allocated (fallocate, then zeros until ENOSPC), leaving
     * `leaveBytes` free (default 0). Programs in the guest get ENOSPC ("No space left on
     * device") from write(2), root's reserved blocks included, and `df` shows it full. `undo`
     * deletes the file. Needs an agent. The file is on the guest's disk: deleting the VM leaves it
     * there (its image keeps it), so undo first or delete the image too.
     */
    fillFileSystem(guestPath: string, opts?: { leaveBytes?: number }): Promise<Fault>;
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
     * cycle, `share` of every `periodMs` running (default 0.25 of 100 ms); a running phase that
     * overran (our timers late on a busy host) is made up by stops up to one period longer, so
     * the share holds over the run unless this process stalls for long. The guest's clock
     * runs on while it gets no CPU: it sees time pass in jumps, and work takes 1/share as long
     * in wall time. VMs on this machine only.
     */
    starveCpu(opts?: { share?: number; periodMs?: number }): Promise<Fault>;
    /** The faults made here and not yet undone. */
    active(): Fault[];
    /** Undoes every active fault, newest first. */
    undoAll(): Promise<void>;
}

const EIO = 5;
const ENOSPC = 28;

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
                // Gone from active() only once it is undone: one whose undo failed can be undone
                // again (undoAll tries it), and still blocks a second fault of its kind.
                await undo();
                done = true;
                live.splice(live.indexOf(fault), 1);
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
                EIO,
                false,
                `failing disk ${d.device} (${d.file}): ${iotypes.filter((t) => t !== "write-zeroes").join(" and ")} get EIO`,
                async () => undefined,
            );
        },

        async fullDisk(disk) {
            const d = await findDisk(site, outputs, disk);
            return insertErrors(
                d,
                ["write", "write-zeroes"],
                ENOSPC,
                true,
                `full disk under ${d.device} (${d.file}): the next write gets ENOSPC and QEMU pauses the VM`,
                async () => {
                    // Space is back: the VM paused on the write (and only such a pause) goes on,
                    // and QEMU retries the write it kept.
                    const st = (await qmp("query-status")) as { status: string };
                    if (st.status === "io-error") await qmp("cont");
                },
            );
        },

        async fillFileSystem(guestPath, opts = {}) {
            const leave = opts.leaveBytes ?? 0;
            if (!Number.isInteger(leave) || leave < 0)
                throw new Error(`fillFileSystem: leaveBytes must be a whole number of bytes ≥ 0, got ${leave}`);
            if (!guestPath.startsWith("/"))
                throw new Error(`fillFileSystem: guestPath must be an absolute path in the guest, got ${guestPath}`);
            const file = `${guestPath.replace(/\/+$/, "")}/.pulumi-qemu-fill.${process.pid}.${Date.now()}`;
            const files = `${shellQuote(file)} ${shellQuote(file + ".rest")}`;
            // The shell agent takes each command through files in /tmp: with /tmp's own file
            // system full it could not even take the undo.
            if (outputs.agent === "shell") {
                const same = await machine.execute(
                    `[ "$(stat -c %d /tmp)" = "$(stat -c %d ${shellQuote(guestPath)})" ]`,
                );
                if (same.exitCode === 0)
                    throw new Error(
                        `fillFileSystem: ${guestPath} is on the file system that holds /tmp, where the shell agent works; filled, it could take no command, the undo included. Fill another file system (a data disk), or use agent "qga"`,
                    );
            }
            try {
                await machine.succeed(fillScript(guestPath, file, leave), { timeoutSeconds: 600 });
            } catch (err) {
                // Whatever was written so far must not stay behind a fault that was never made.
                await machine.execute(`rm -f ${files}`, { timeoutSeconds: 60 }).catch(() => undefined);
                throw err;
            }
            return track(`file system of ${guestPath} filled (${file})`, async () => {
                // Checked, not assumed: an agent that could not take the command must not pass for an undo.
                const out = await machine.succeed(
                    `rm -f ${files}; sync; test ! -e ${shellQuote(file)} && echo PQ-FREED`,
                );
                if (!out.includes("PQ-FREED"))
                    throw new MachineError(
                        `fillFileSystem undo: ${file} could not be removed (the guest said ${JSON.stringify(out)})`,
                    );
            });
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
            // A VM with onReboot "stop" runs with -no-reboot, which turns even QMP's reset into an
            // exit: a reset must reset here, and the VM's own action comes back at power on.
            const ownAction = await rebootAction(outputs, site);
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
                if (ownAction === "shutdown") await qmp("set-action", { reboot: "shutdown" });
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
            // Time spent in each phase so far. On a busy host our timers fire late, which
            // stretches whichever phase is on; the next stop is lengthened to make up for an
            // overrun, so the share holds over the run and not just on an idle machine.
            let ran = 0;
            let held = 0;
            let since = Date.now();
            const step = () => {
                try {
                    process.kill(pid, stopped ? "SIGCONT" : "SIGSTOP");
                } catch {
                    return; // QEMU is gone: nothing left to starve
                }
                const now = Date.now();
                if (stopped) held += now - since;
                else ran += now - since;
                since = now;
                stopped = !stopped;
                // The make-up is at most one period more: a long stall of ours must not
                // freeze the VM for many periods in one go.
                const next = stopped
                    ? Math.min(
                          (2 - share) * periodMs,
                          Math.max((1 - share) * periodMs, (ran * (1 - share)) / share - held),
                      )
                    : share * periodMs;
                timer = setTimeout(step, next);
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
     * Puts a blkdebug node that fails `iotypes` with `errno` (each only once if `once`) between
     * the disk's format layer and its file (blockdev-reopen of the format node with a new
     * `file`), and takes it out again on undo. It needs the node names the provider gives each
     * disk at launch (pq-disk<N> and pq-disk<N>-file): QEMU refuses to reopen nodes with
     * generated names.
     */
    async function insertErrors(
        d: DiskNode,
        iotypes: string[],
        errno: number,
        once: boolean,
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
        if (names.includes(filter))
            // (d.file is QEMU's json: description of the filter by now: the device names it.)
            throw new Error(`disk ${d.device} already has a failing-disk or full-disk fault; undo it first`);
        await qmp("blockdev-add", {
            driver: "blkdebug",
            "node-name": filter,
            image: fileNode,
            // `once` for a full disk: the VM pauses on the first ENOSPC, and a rule that kept
            // failing would fail the flush that taking the filter out does (qcow2 writes back
            // metadata it holds), so undo could never succeed.
            "inject-error": iotypes.map((iotype) => ({ event: "none", iotype, errno, once })),
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
            // Reopening flushes the format layer through the filter. A once-rule still armed (a
            // full disk whose write-zeroes rule fired but whose write rule did not) fails that
            // flush, and is spent by it: the second try goes through.
            for (let attempt = 1; ; attempt++) {
                try {
                    await reopen(fileNode);
                    break;
                } catch (err) {
                    if (!once || attempt >= iotypes.length + 1) throw err;
                }
            }
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

/**
 * What a reset does in this VM's QEMU: "shutdown" when it runs with -no-reboot (onReboot "stop",
 * and every VM made before onReboot existed), else "reset". QMP cannot tell, so it is read from
 * the command line of our own QEMU here; a VM on a far host goes by its onReboot input.
 */
async function rebootAction(outputs: MachineOutputs, site: VmSite): Promise<"shutdown" | "reset"> {
    const pid = site.where ? undefined : await ourLocalPid(outputs, site, "powerCut").catch(() => undefined);
    const argv = pid === undefined ? undefined : await readCmdline(pid);
    if (argv) {
        // The last word wins, as QEMU reads its options in order: -no-reboot, or -action reboot=… (extraArgs).
        let action: "shutdown" | "reset" = "reset";
        argv.forEach((a, i) => {
            if (a === "-no-reboot" || a === "--no-reboot") action = "shutdown";
            const m =
                (a === "-action" || a === "--action") &&
                /(?:^|,)reboot=(shutdown|reset)(?:,|$)/.exec(argv[i + 1] ?? "");
            if (m) action = m[1] as "shutdown" | "reset";
        });
        return action;
    }
    const onReboot = (outputs.vm as { onReboot?: string } | undefined)?.onReboot;
    return onReboot === "stop" ? "shutdown" : "reset";
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

/**
 * The guest script that fills the file system holding `file`: fallocate of what df says is
 * available (fast where the file system has it), then zeros until ENOSPC, since root may also
 * write the blocks ext4 keeps in reserve; then `leave` bytes given back by shortening the file.
 * Busybox and coreutils alike: df -P, dd, stat -c, truncate -s.
 */
function fillScript(dir: string, file: string, leave: number): string {
    const f = shellQuote(file);
    const rest = shellQuote(file + ".rest");
    return [
        `set -e`,
        `avail=$(df -P -k ${shellQuote(dir)} | awk 'NR==2 {print $4}')`,
        `fallocate -l $((avail * 1024)) ${f} 2>/dev/null || : > ${f}`,
        `dd if=/dev/zero of=${rest} bs=64k 2>/dev/null || true`,
        `dd if=/dev/zero bs=4k 2>/dev/null >> ${rest} || true`,
        `dd if=/dev/zero bs=512 2>/dev/null >> ${rest} || true`,
        `sync`,
        ...(leave > 0
            ? [
                  `size=$(stat -c %s ${f}); rsize=$(stat -c %s ${rest})`,
                  `if [ "$rsize" -ge ${leave} ]; then truncate -s $((rsize - ${leave})) ${rest}; else : > ${rest}; truncate -s $((size - (${leave} - rsize))) ${f}; fi`,
                  `sync`,
              ]
            : []),
    ].join("\n");
}
