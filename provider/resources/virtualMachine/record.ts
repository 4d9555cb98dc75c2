import { readdir, readFile, rm } from "node:fs/promises";
import * as path from "node:path";
import { writeFileAtomic } from "../../host/files/atomicFile";
import { isProcessIdentity, selfIdentity, stillRunning } from "../../host/process/creator";
import {
    checkOurDaemon,
    identify,
    readPidfile,
    removeRuntimeFiles,
    stopQemu,
    type ProcessIdentity,
} from "../../host/qemu/qemuProcess";
import { removeLauncherFile } from "../../host/files/launcherFile";
import { UEFI_VARS_FILE } from "../../core/firmware";
import { isOwnFileSync, ownDirChain, removeDirIfEmpty } from "../../host/files/stateDir";
import { oncePerInterval } from "../common";

/**
 * The record in each VM's directory (`record.json`), written before QEMU is started:
 *   creating — a create is at work; if its creator is gone, the VM is an orphan of a killed
 *              create (no Pulumi state knows it): its QEMU is stopped and its directory removed;
 *   running  — create finished; the VM belongs to whatever state recorded it;
 *   dead     — refresh found its QEMU gone: only the serial log is kept, for a post-mortem,
 *              for DEAD_VM_RETENTION_MS, and then the directory goes too.
 */

export const RECORD_FILE = "record.json";
/** How long the serial log of a VM found dead is kept (the README says so). */
export const DEAD_VM_RETENTION_MS = 24 * 60 * 60 * 1000;

/** The files the provider puts in a VM's directory, by name. */
export const VM_FILES = {
    pidfile: "qemu.pid",
    qmpSocket: "qmp.sock",
    serialLog: "serial.log",
    launcher: "run-vm.sh",
    agentSocket: "agent.sock",
    uefiVars: UEFI_VARS_FILE,
    nameConfig: "name.cfg",
} as const;

export interface VmRecord {
    tool: "pulumi-qemu";
    resource: "VirtualMachine";
    version: 1;
    state: "creating" | "running" | "dead";
    creator?: ProcessIdentity;
    diedAt?: string;
    /**
     * With `running`: the inputs the VM was made (or last updated) from and the outputs then
     * returned, so `pulumi import` can rebuild its state (virtualMachine/import.ts). Left out when they may
     * hold secrets (`withheld` says why): this file is plain text, if owner-only.
     */
    inputs?: unknown;
    outputs?: unknown;
    withheld?: string;
}

/** What a `running` record keeps for `pulumi import`. */
export type KeptForImport = Pick<VmRecord, "inputs" | "outputs" | "withheld">;

/**
 * Whether the inputs held secrets is known only to the gRPC plugin (the engine sends them
 * marked); the dynamic provider and the testing API get plain values and cannot tell, so then
 * nothing is kept and such a VM cannot be imported.
 */
export function keptForImport(inputs: unknown, outputs: unknown, opts?: { secretInputs?: boolean }): KeptForImport {
    if (opts?.secretInputs === undefined) {
        return {
            withheld:
                "it was created through the dynamic provider or the testing API, which cannot tell secret inputs from others, so its inputs were not written to disk",
        };
    }
    if (opts.secretInputs) return { withheld: "its inputs held secrets, which pulumi-qemu does not write to disk" };
    return { inputs, outputs };
}

export async function writeVmRecord(vmDir: string, state: VmRecord["state"], kept: KeptForImport = {}): Promise<void> {
    const body: VmRecord = {
        tool: "pulumi-qemu",
        resource: "VirtualMachine",
        version: 1,
        state,
        ...(state === "running" ? kept : {}),
    };
    if (state === "creating") body.creator = await selfIdentity();
    if (state === "dead") body.diedAt = new Date().toISOString();
    await writeFileAtomic(path.join(vmDir, RECORD_FILE), JSON.stringify(body, null, 2) + "\n", {
        durable: state !== "dead",
    });
}

/** A running VM's inputs changed in place (update): its record keeps the new ones, if the record is still ours and running. */
export async function rewriteRunningRecord(vmDir: string, kept: KeptForImport): Promise<void> {
    if (!(await ownDirChain(path.dirname(path.dirname(vmDir)), vmDir)).ok) return;
    if ((await readVmRecord(vmDir))?.state !== "running") return;
    await writeVmRecord(vmDir, "running", kept);
}

export async function readVmRecord(vmDir: string): Promise<VmRecord | undefined> {
    const file = path.join(vmDir, RECORD_FILE);
    if (!isOwnFileSync(file)) return undefined;
    try {
        const r = JSON.parse(await readFile(file, "utf8")) as Partial<VmRecord>;
        if (r.tool !== "pulumi-qemu" || r.resource !== "VirtualMachine" || r.version !== 1) return undefined;
        if (r.state === "creating" && !isProcessIdentity(r.creator)) return undefined;
        if (r.state !== "creating" && r.state !== "running" && r.state !== "dead") return undefined;
        return r as VmRecord;
    } catch {
        return undefined;
    }
}

/** Stops the QEMU whose pidfile is in `vmDir`, if one runs and its command line names that pidfile. */
async function stopQemuOf(vmDir: string): Promise<void> {
    const pidfile = path.join(vmDir, VM_FILES.pidfile);
    const pid = await readPidfile(pidfile);
    const identity = pid === undefined ? undefined : await identify(pid);
    if (!identity || !(await checkOurDaemon(identity, pidfile)).alive) return;
    await stopQemu({ identity, pidfile, qmpSocket: path.join(vmDir, VM_FILES.qmpSocket) }, { powerdownMs: 0 });
}

/** Removes the provider's files from a VM directory (all but the serial log when `keepLog`), then the directory if empty. */
export async function clearVmDir(
    vmDir: string,
    opts: { keepLog?: boolean; launcherPath?: string } = {},
): Promise<void> {
    const f = (name: string) => path.join(vmDir, name);
    // The UEFI variable store is the VM's own (its launcher copied it into this directory): it goes with the VM.
    await removeRuntimeFiles([
        f(VM_FILES.pidfile),
        f(VM_FILES.qmpSocket),
        f(VM_FILES.agentSocket),
        f(VM_FILES.uefiVars),
        ...(opts.keepLog ? [] : [f(VM_FILES.serialLog)]),
    ]);
    await rm(f(VM_FILES.nameConfig), { force: true });
    await removeLauncherFile(opts.launcherPath ?? f(VM_FILES.launcher));
    if (!opts.keepLog) await rm(f(RECORD_FILE), { force: true });
    await removeDirIfEmpty(vmDir);
}

/** Refresh found the VM's QEMU gone: keep the serial log for a post-mortem, and say when it died. */
export async function markVmDead(vmDir: string, launcherPath: string): Promise<void> {
    if (!(await ownDirChain(path.dirname(path.dirname(vmDir)), vmDir)).ok) return;
    await clearVmDir(vmDir, { keepLog: true, launcherPath });
    await writeVmRecord(vmDir, "dead");
}

/**
 * Orphans of killed creates and long-dead VMs in `vms`, looked for at most every 30 s per
 * process (a refresh of hundreds of resources sweeps once). Every create in a state directory
 * calls it — a VM's, a Network's, a DiskImage's — so an orphan never outlives the next one.
 */
export function sweepVmsSometimes(vmsDir: string): Promise<void> {
    return oncePerInterval(`vms:${vmsDir}`, 30_000, () => sweepVmDirs(vmsDir));
}

/** The sweep for the state directory `stateDir` (nothing when it has no `vms` yet). */
export function sweepVmsOf(stateDir: string): Promise<void> {
    return sweepVmsSometimes(path.join(stateDir, "vms"));
}

/**
 * Cleans `vms`: orphans of killed creates (QEMU stopped, directory removed) and VMs found dead
 * longer ago than the retention. Directories without a record of ours are left as they are.
 */
export async function sweepVmDirs(vmsDir: string, now = Date.now()): Promise<string[]> {
    const names = await readdir(vmsDir).catch(() => [] as string[]);
    const removed: string[] = [];
    for (const name of names) {
        const vmDir = path.join(vmsDir, name);
        if (!(await ownDirChain(path.dirname(vmsDir), vmDir)).ok) continue;
        const record = await readVmRecord(vmDir);
        if (!record) continue;
        if (record.state === "creating" && !(await stillRunning(record.creator!))) {
            await stopQemuOf(vmDir);
            await clearVmDir(vmDir);
            removed.push(name);
        } else if (record.state === "dead" && now - Date.parse(record.diedAt ?? "") > DEAD_VM_RETENTION_MS) {
            await clearVmDir(vmDir);
            removed.push(name);
        }
    }
    return removed;
}
