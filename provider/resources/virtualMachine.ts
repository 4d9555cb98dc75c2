import { placed } from "./placement";
import type * as pulumi from "@pulumi/pulumi";
import { chmod, mkdtemp } from "node:fs/promises";
import * as path from "node:path";
import {
    acceptedArgvHashes,
    nameConfigText,
    nameFitsConfig,
    specArgvHash,
    USER_NIC_MAC,
    type DaemonRuntime,
    type Resolved,
} from "../core/qemuArgv";
import { assertFirmwareInstalled } from "../host/qemu/firmwareFiles";
import { parseVmSpec, type VmSpec } from "../core/vmSpec";
import { resolveAccel } from "../host/qemu/accel";
import { writeLauncherFile } from "../host/files/launcherFile";
import { writeFileAtomic } from "../host/files/atomicFile";
import { processesHolding } from "../host/process/fileHolders";
import { assertHostPortsFree, type HostPortRequest } from "../host/net/ports";
import {
    checkOurDaemon,
    QemuStartError,
    startDaemonized,
    stopQemu,
    type ProcessIdentity,
} from "../host/qemu/qemuProcess";
import { ensureOwnDir, ensureStateDir, ownDirChain, resolveStateDir } from "../host/files/stateDir";
import { checkWith, hasUnknown, withoutUndefined } from "./common";
import { warn } from "../host/progress";
import { explainHostFileError } from "../host/files/hostErrors";
export { cleanConsole, serialMatcher } from "../core/serialPattern";
import { isEmptyState, requireState, VM_STATE } from "./stateGuard";
import {
    clearVmDir,
    keptForImport,
    markVmDead,
    rewriteRunningRecord,
    sweepVmDirs,
    sweepVmsSometimes,
    VM_FILES,
    writeVmRecord,
} from "./virtualMachine/record";
import { findVmToImport } from "./virtualMachine/import";
import { ShellChannel } from "../host/guest/shellChannel";
import { launcherText } from "../core/launcher";
import {
    attachNics,
    hostsOf,
    networkDrift,
    networkProblems,
    nicPlans,
    releaseNics,
    type NicOutput,
} from "./virtualMachine/networks";
import { pickHostPorts, portOutputs } from "./virtualMachine/ports";
import { removeSnapshotsOf } from "../host/qemu/snapshots";
import { pruneWarmRecords, saveWarm, tryWarmRestore } from "../host/qemu/warmStart";
import { parseInputs, type Parsed } from "./virtualMachine/inputs";
import { qmpStatus, waitReady } from "./virtualMachine/ready";
import type { VirtualMachineInputs, VirtualMachineOutputs } from "./virtualMachine/state";
// What this module has exported since 0.1 (its built path is frozen in users' state).
export { DEFAULT_READY_TIMEOUT_SECONDS } from "./virtualMachine/inputs";
export { serialTail } from "./virtualMachine/ready";
export type { ReadyInputs, VirtualMachineInputs, VirtualMachineOutputs } from "./virtualMachine/state";

/**
 * VirtualMachine: a running guest. Create writes the VM's own launcher into a private directory
 * of its own, runs it (QEMU detaches), and waits until the guest is ready; every later call
 * finds the process again by its recorded identity and talks to it over QMP.
 *
 * Readiness (`ready`):
 * - `serialPattern`: plain text is looked for as a substring of the serial console; text
 *   written `/…/flags` is a JavaScript regular expression. Either is matched against the log
 *   with terminal escape sequences and carriage returns removed, since SeaBIOS clears the screen
 *   and the console ends lines with CRLF. A substring is the default because console markers
 *   such as `[  OK  ]` mean something else as a regular expression.
 * - `tcpPort`: a forwarded host port that must give an application-level answer (some bytes
 *   back); user networking accepts connections before the guest listens, so a connect alone
 *   proves nothing.
 * - With neither, the VM is ready once QEMU has started and answers QMP.
 */

/** The kernel's limit on a unix socket path (sun_path is 108 bytes including the NUL). */
const MAX_SOCKET_PATH_BYTES = 107;

async function checkHere(_olds: unknown, news: any): Promise<pulumi.dynamic.CheckResult> {
    if (hasUnknown(news)) return { inputs: news };
    let parsed: Parsed | undefined;
    const result = checkWith(() => (parsed = parseInputs(news)), news);
    if (!parsed?.spec.networks?.length) return result;
    // Networks are judged against their records (subnet, switch) once the spec itself is sound.
    const problems = await networkProblems(parsed.spec, resolveStateDir(parsed.stateDir));
    return problems.length ? { inputs: news, failures: problems } : result;
}

/**
 * Replace when what QEMU runs changes (or where its state lives); `ready` alone is an update.
 * Replacement stops the old VM first when both could not run at once: forwarded host ports
 * (one listener per port) and disks opened for writing (QEMU's image lock).
 */
async function diffHere(
    _id: string,
    olds: VirtualMachineOutputs,
    news: VirtualMachineInputs,
): Promise<pulumi.dynamic.DiffResult> {
    requireState("VirtualMachine", "diff", olds, { argvHash: "string" });
    const oldSpec = safeSpec(olds.vm);
    if (hasUnknown(news.vm) || hasUnknown(news.stateDir)) {
        return { changes: true, replaces: ["vm"], deleteBeforeReplace: true };
    }
    const next = parseInputs(news);
    const replaces: string[] = [];
    // A VM made before onReboot existed keeps its hash while the program leaves onReboot out.
    if (!acceptedArgvHashes(next.spec, news.vm).includes(olds.argvHash)) replaces.push("vm");
    // A network that died or was remade under the VM (found by read) leaves it cut off.
    if (olds.networkDrift !== undefined && !replaces.includes("vm")) replaces.push("vm");
    if ((next.stateDir ?? null) !== (olds.stateDir ?? null)) replaces.push("stateDir");
    if (replaces.length) {
        const exclusive = holdsExclusive(next.spec) || (oldSpec !== undefined && holdsExclusive(oldSpec));
        return { changes: true, replaces, deleteBeforeReplace: exclusive };
    }
    const readyChanged = JSON.stringify(withoutUndefined(news.ready ?? {})) !== JSON.stringify(olds.ready ?? {});
    const warmChanged = (news.warmStart ?? false) !== (olds.warmStart ?? false);
    return { changes: readyChanged || warmChanged };
}

function safeSpec(vm: unknown): VmSpec | undefined {
    try {
        return parseVmSpec(vm);
    } catch {
        return undefined;
    }
}

function holdsExclusive(spec: VmSpec): boolean {
    const writesDisk = !spec.volatile && spec.disks.some((d) => !d.readOnly);
    // Addresses and MACs on a network are leased to one VM at a time, as host ports are.
    return spec.portForwards.length > 0 || writesDisk || (spec.networks?.length ?? 0) > 0;
}

/** `secretInputs`: whether the inputs held secrets, when the caller can tell (the gRPC plugin); see keptForImport. */
export interface LifecycleOptions {
    secretInputs?: boolean;
}

async function createHere(inputs: VirtualMachineInputs, opts?: LifecycleOptions): Promise<pulumi.dynamic.CreateResult> {
    const p = parseInputs(inputs);
    const { accel, reason } = await resolveAccel(p.spec.accel, {
        qemu: p.spec.qemu,
        cacheDir: resolveStateDir(p.stateDir),
    });
    if (p.spec.accel === "auto" && accel === "tcg") {
        warn(
            `KVM is not usable on this host, so this VM runs under TCG emulation, many times slower: ${reason}. Fix that to boot with KVM, or set vm.accel "tcg" to say TCG is meant.`,
        );
    }
    const vmDir = await makeVmDir(p.stateDir).catch(async (err) =>
        Promise.reject(await explainHostFileError(err, "stateDir", resolveStateDir(p.stateDir))),
    );
    const runtime: DaemonRuntime = {
        pidfile: path.join(vmDir, VM_FILES.pidfile),
        qmpSocket: path.join(vmDir, VM_FILES.qmpSocket),
        serialLog: path.join(vmDir, VM_FILES.serialLog),
        ...(p.spec.agent !== "none" ? { agentSocket: path.join(vmDir, VM_FILES.agentSocket) } : {}),
        // The launcher copies OVMF's variable store here (owner-only) before QEMU starts.
        ...(p.spec.firmware === "uefi" ? { uefiVars: path.join(vmDir, VM_FILES.uefiVars) } : {}),
        ...(p.spec.name && nameFitsConfig(p.spec.name) ? { nameConfig: path.join(vmDir, VM_FILES.nameConfig) } : {}),
    };
    const launcherPath = path.join(vmDir, VM_FILES.launcher);
    let identity: ProcessIdentity | undefined;
    let nics: NicOutput[] = [];
    try {
        // Intent first: if this process is killed from here on, the next sweep of `vms` finds
        // a create whose creator is gone, stops its QEMU and removes the directory.
        await writeVmRecord(vmDir, "creating");
        // The name (which may be secret) is read from this 0600 file, not from QEMU's command line.
        if (runtime.nameConfig) await writeFileAtomic(runtime.nameConfig, nameConfigText(p.spec.name!));
        assertSocketPathFits(runtime.qmpSocket);
        if (p.spec.firmware === "uefi") await assertFirmwareInstalled();
        if (runtime.agentSocket) assertSocketPathFits(runtime.agentSocket);
        await assertHostPortsFree(portRequests(p.spec));
        const stateDir = resolveStateDir(p.stateDir);
        nics = await attachNics(p.spec, stateDir, vmDir);
        let picked = await pickHostPorts(p.spec, stateDir);
        let resolved: Resolved = { nics: nics.length ? nicPlans(nics) : undefined, hostPorts: picked.hostPorts };
        let t0 = Date.now();
        for (let attempt = 0; ; attempt++) {
            await writeLauncherFile(launcherPath, launcherText(p.spec, accel, runtime, resolved).text);
            t0 = Date.now();
            try {
                identity = await startDaemonized([launcherPath], runtime.pidfile);
                break;
            } catch (err) {
                const locked = lockedDisk(err, p.spec);
                if (locked) {
                    // The sweep before this create may have been skipped (once per 30 s): an orphan of a
                    // killed create may be what holds the disk. Swept now, unthrottled, and tried once more.
                    if (attempt === 0 && (await sweepVmDirs(path.dirname(vmDir))).length > 0) continue;
                    throw await explainLockedDisk(locked, err as QemuStartError);
                }
                // Another process took a port we picked between the pick and QEMU's bind: pick again.
                const clash = autoPortClash(err, p.spec, picked.hostPorts);
                if (clash === undefined || attempt >= 2) throw explainStartError(err, p.spec);
                picked = await pickHostPorts(p.spec, stateDir, new Set([clash]));
                resolved = { ...resolved, hostPorts: picked.hostPorts };
            }
        }
        const startedAt = new Date(t0).toISOString();
        // The directory already keeps others out; the socket and console log (which may show
        // secrets a guest prints) are tightened too, in case the directory is ever loosened.
        await Promise.all([
            chmod(runtime.qmpSocket, 0o600),
            chmod(runtime.serialLog, 0o600),
            ...(runtime.agentSocket ? [chmod(runtime.agentSocket, 0o600)] : []),
        ]);
        // warmStart: the guest has only just begun to boot; a valid snapshot of this very VM
        // identity replaces that boot (snapshot-load reverts the disks and loads the memory).
        const warm = p.warmStart
            ? { stateDir, argvHash: specArgvHash(p.spec), qmpSocket: runtime.qmpSocket }
            : undefined;
        const warmTimeoutMs = p.ready.timeoutSeconds * 1000;
        if (warm) await pruneWarmRecords(stateDir);
        const restored = warm ? await tryWarmRestore(warm, warmTimeoutMs) : undefined;
        const status = await waitReady(p, identity, runtime, picked.hostPorts, restored?.restored === true);
        if (restored?.restored && runtime.agentSocket && p.spec.agent === "shell")
            await syncGuestClock(runtime.agentSocket);
        if (warm && !restored?.restored) await saveWarm(warm, warmTimeoutMs);
        const outs: VirtualMachineOutputs = {
            vm: inputs.vm,
            ready: inputs.ready,
            stateDir: p.stateDir,
            vmDir,
            pid: identity.pid,
            pidfile: runtime.pidfile,
            qmpSocket: runtime.qmpSocket,
            serialLog: runtime.serialLog,
            launcherPath,
            argvHash: specArgvHash(p.spec),
            status,
            accel,
            accelReason: reason,
            startedAt,
            readySeconds: (Date.now() - t0) / 1000,
            processStartTime: identity.startTime,
            bootId: identity.bootId,
            ...(nics.length ? { nics, hosts: hostsOf(nics) } : {}),
            ...portOutputs(p.spec, picked.hostPorts),
            portsNote: picked.note,
            ...(runtime.agentSocket
                ? { agent: p.spec.agent as "qga" | "shell", agentSocket: runtime.agentSocket }
                : {}),
            ...(p.spec.network === "user" ? { userNicMac: USER_NIC_MAC } : {}),
            ...(p.warmStart
                ? {
                      warmStart: true,
                      start: restored?.restored ? ("restored" as const) : ("cold" as const),
                      startNote: restored?.restored ? undefined : restored?.why && `booted cold: ${restored.why}`,
                  }
                : {}),
        };
        // What `pulumi import` needs to rebuild this state if the stack loses it (virtualMachine/import.ts).
        await writeVmRecord(vmDir, "running", keptForImport(inputs, withoutUndefined(outs), opts));
        return { id: path.basename(vmDir), outs: withoutUndefined(outs) };
    } catch (err) {
        // Nothing half-made survives a failed create: no QEMU, no socket, no directory.
        if (identity)
            await stopQemu(
                { identity, pidfile: runtime.pidfile, qmpSocket: runtime.qmpSocket },
                { powerdownMs: 0 },
            ).catch(() => undefined);
        await releaseNics(nics, vmDir);
        await removeVmDir(vmDir, launcherPath);
        throw await explainHostFileError(err, "stateDir", vmDir);
    }
}

async function makeVmDir(stateDirInput: string | undefined): Promise<string> {
    const vms = await ensureOwnDir(path.join(await ensureStateDir(resolveStateDir(stateDirInput)), "vms"));
    // Before anything is checked or started: an orphan of a killed create may hold our ports.
    await sweepVmsSometimes(vms);
    // mkdtemp makes a fresh 0700 directory with a random suffix: parallel creates never share one.
    // The name stays out of it: the directory's name is the resource id, and a name may be secret.
    return mkdtemp(path.join(vms, "vm-"));
}

function assertSocketPathFits(socketPath: string): void {
    const bytes = Buffer.byteLength(socketPath);
    if (bytes > MAX_SOCKET_PATH_BYTES) {
        throw new Error(
            `stateDir: the QMP socket path ${socketPath} is ${bytes} bytes; unix sockets allow ${MAX_SOCKET_PATH_BYTES}. Choose a shorter stateDir`,
        );
    }
}

function portRequests(spec: VmSpec): HostPortRequest[] {
    return spec.portForwards.flatMap((pf, i) =>
        pf.host === undefined
            ? []
            : [{ port: pf.host, address: pf.hostAddress, protocol: pf.protocol, field: `vm.portForwards[${i}].host` }],
    );
}

/** The picked host port QEMU could not bind, when that is why it failed to start. */
function autoPortClash(err: unknown, spec: VmSpec, picked: Record<number, number>): number | undefined {
    if (!(err instanceof QemuStartError)) return undefined;
    const m = /host forwarding rule '(tcp|udp):([^:]*):(\d+)-/.exec(err.stderr);
    if (!m) return undefined;
    const port = Number(m[3]);
    return spec.portForwards.some((pf, i) => pf.host === undefined && picked[i] === port) ? port : undefined;
}

/**
 * Another process can take a port between our check and QEMU binding it (two VMs created at
 * once): QEMU then names the rule it could not set up, and we name the field.
 */
export function explainStartError(err: unknown, spec: VmSpec): unknown {
    if (!(err instanceof QemuStartError)) return err;
    const m = /host forwarding rule '(tcp|udp):([^:]*):(\d+)-/.exec(err.stderr);
    if (!m) return err;
    const i = spec.portForwards.findIndex((pf) => pf.protocol === m[1] && pf.host === Number(m[3]));
    const field = i >= 0 ? `vm.portForwards[${i}].host` : "vm.portForwards";
    return new Error(
        `${field}: host port ${m[2]}:${m[3]}/${m[1]} is already in use by another process or VM; choose another port (QEMU: ${err.stderr})`,
    );
}

/** The disk QEMU could not lock for writing (another process has it open), when that is why it failed to start. */
function lockedDisk(err: unknown, spec: VmSpec): { index: number; file: string } | undefined {
    if (!(err instanceof QemuStartError) || !/Failed to get (shared )?"write" lock/.test(err.stderr)) return undefined;
    const m = /-drive file=((?:[^,]|,,)*),/.exec(err.stderr);
    const file = m?.[1].replace(/,,/g, ",");
    const index = spec.disks.findIndex((d) => (d.overlay ?? d.path) === file || d.path === file);
    return file === undefined ? undefined : { index, file };
}

/** Names who holds a locked disk, instead of QEMU's bare "Failed to get write lock". */
async function explainLockedDisk(locked: { index: number; file: string }, err: QemuStartError): Promise<Error> {
    const field = locked.index >= 0 ? `vm.disks[${locked.index}]` : "vm.disks";
    const holders = await processesHolding(locked.file);
    const who = holders.length
        ? holders
              .map(
                  (h) =>
                      `pid ${h.pid} (${path.basename(h.argv[0] ?? "?")}${vmDirOf(h.argv) ? `, the VM in ${vmDirOf(h.argv)}` : ""})`,
              )
              .join(", ")
        : "a process this user cannot see";
    return new Error(
        `${field}: ${locked.file} is in use by ${who}, which holds the write lock on it; stop that first, or give this VM another disk, the disk readOnly: true, or an overlay on it (QEMU: ${err.stderr.trim()})`,
    );
}

/** The VM directory a QEMU of ours names in its -pidfile, if it is one. */
function vmDirOf(argv: readonly string[]): string | undefined {
    const i = argv.indexOf("-pidfile");
    return i >= 0 && argv[i + 1] ? path.dirname(argv[i + 1]) : undefined;
}

/** A restored guest's clock resumes from the snapshot's moment: set it to the host's. */
async function syncGuestClock(agentSocket: string): Promise<void> {
    const channel = new ShellChannel(agentSocket);
    try {
        const r = await channel.execute(`date -u -s @${Math.floor(Date.now() / 1000)} >/dev/null`, {
            timeoutSeconds: 30,
        });
        if (r.exitCode !== 0)
            throw new Error(
                `warmStart: setting the restored guest's clock failed: ${r.stderr.toString("utf8").slice(-300)}`,
            );
    } finally {
        channel.close();
    }
}

function identityOf(props: VirtualMachineOutputs): ProcessIdentity {
    return { pid: props.pid, startTime: props.processStartTime, bootId: props.bootId };
}

/**
 * Refresh: a QEMU that exited, or a pid now held by another process, is reported gone so the
 * next `up` starts the VM again. Its directory keeps only the serial log, for a post-mortem,
 * for a day (DEAD_VM_RETENTION_MS); a later sweep removes it.
 */
async function readHere(id: string, props: VirtualMachineOutputs): Promise<pulumi.dynamic.ReadResult> {
    if (isEmptyState(props)) {
        // `pulumi import`: a running VM this provider made, rebuilt from its record.
        const found = await findVmToImport(id);
        const status = (await qmpStatus(found.outs.qmpSocket, 5000)) ?? "unresponsive";
        const drift = await networkDrift(found.outs.nics);
        return {
            id: found.id,
            props: withoutUndefined({ ...found.outs, status, ...(drift ? { networkDrift: drift } : {}) }),
            inputs: found.inputs,
        };
    }
    requireState("VirtualMachine", "read", props, VM_STATE);
    await sweepVmsSometimes(path.dirname(props.vmDir));
    const live = await checkOurDaemon(identityOf(props), props.pidfile);
    if (!live.alive) {
        // Its addresses go back to the networks, so the VM made again gets the same ones.
        await releaseNics(props.nics, props.vmDir);
        await markVmDead(props.vmDir, props.launcherPath);
        return { id: "", props: {} };
    }
    // QEMU serves one QMP client at a time: a user's open session makes it look unresponsive too.
    const status = (await qmpStatus(props.qmpSocket, 5000)) ?? "unresponsive";
    // Kept once found (a network does not come back), so the next diff replaces the VM.
    const drift = props.networkDrift ?? (await networkDrift(props.nics));
    return { id, props: { ...props, status, ...(drift ? { networkDrift: drift } : {}) } };
}

/** Only `ready` can change in place; it matters at create, so the running VM is left alone. */
async function updateHere(
    _id: string,
    olds: VirtualMachineOutputs,
    news: VirtualMachineInputs,
    opts?: LifecycleOptions,
): Promise<pulumi.dynamic.UpdateResult> {
    requireState("VirtualMachine", "update", olds, VM_STATE);
    parseInputs(news);
    const { ready: _old, warmStart: _oldWarm, ...rest } = olds;
    const status = (await qmpStatus(olds.qmpSocket, 5000)) ?? olds.status;
    const outs = withoutUndefined({
        ...rest,
        ...(news.ready ? { ready: news.ready } : {}),
        ...(news.warmStart ? { warmStart: true } : {}),
        status,
    });
    // An import must find the inputs the VM now has, not those it was made from.
    await rewriteRunningRecord(olds.vmDir, keptForImport(news, outs, opts));
    return { outs };
}

/** Power button, then `quit`, then SIGKILL — only ever to our own QEMU — and then its directory goes. */
async function removeHere(_id: string, props: VirtualMachineOutputs): Promise<void> {
    requireState("VirtualMachine", "delete", props, VM_STATE);
    await stopQemu({ identity: identityOf(props), pidfile: props.pidfile, qmpSocket: props.qmpSocket });
    await releaseNics(props.nics, props.vmDir);
    // Snapshots go with their VM: the qcow2 tags it made, then the records in its directory.
    const spec = safeSpec(props.vm);
    await removeSnapshotsOf(props.vmDir, {
        qemuImg: spec?.qemuImg,
        diskFiles: spec?.disks.filter((d) => !d.readOnly).map((d) => d.overlay ?? d.path),
    });
    await removeVmDir(props.vmDir, props.launcherPath);
    await sweepVmsSometimes(path.dirname(props.vmDir));
}

/**
 * Removes the files the provider put in a VM's directory, then the directory if that left it
 * empty; anything else someone put there keeps the directory alive.
 */
async function removeVmDir(vmDir: string, launcherPath: string): Promise<void> {
    // `vms/<id>` swapped for a link (or `vms` itself) would send these deletes elsewhere: leave it.
    if (!(await ownDirChain(path.dirname(path.dirname(vmDir)), vmDir)).ok) return;
    await clearVmDir(vmDir, { launcherPath });
}

// ---------------------------------------------------------------------------------------------
// The lifecycle as the plugin, the dynamic shims and a far host's runner call it: placed where its `host` says (placement.ts).

export const { check, diff, create, read, update, remove } = placed("VirtualMachine", {
    check: checkHere,
    diff: diffHere,
    create: createHere,
    read: readHere,
    update: updateHere,
    remove: removeHere,
});
