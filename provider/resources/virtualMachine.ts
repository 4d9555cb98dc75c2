import { placed, type PlacementInputs, type PlacementOutputs } from "./placement";
import type * as pulumi from "@pulumi/pulumi";
import { chmod, mkdtemp } from "node:fs/promises";
import * as path from "node:path";
import { z } from "zod";
import { specArgvHash, type DaemonRuntime, type Resolved } from "../core/qemuArgv";
import { VIRTUAL_MACHINE_INPUT_KEYS, VIRTUAL_MACHINE_OUTPUT_KEYS } from "../core/resourceKeys";
import { absolutePath, InputError, parseOrThrow, port, refuseUnknownKeys } from "../core/validation";
import { parseVmSpec, type VmSpec } from "../core/vmSpec";
import { resolveAccel } from "../host/qemu/accel";
import { writeLauncherFile } from "../host/files/launcherFile";
import { assertHostPortsFree, portProber, type HostPortRequest } from "../host/net/ports";
import { checkOurQemu, QemuStartError, startDaemonized, stopQemu, type ProcessIdentity } from "../host/qemu/qemuProcess";
import { queryStatus, withQmp } from "../host/qemu/qmp";
import { ensureOwnDir, ensureStateDir, ownDirChain, resolveStateDir } from "../host/files/stateDir";
import { checkWith, hasUnknown, oncePerInterval, problemCollector, withoutUndefined } from "./common";
import { serialPatternProblem } from "../core/serialPattern";
import { progress, progressIntervalMs, warn } from "../host/progress";
import { explainHostFileError } from "../host/files/hostErrors";
import { serialLogTail, SerialLogWatcher } from "../host/qemu/serialWatch";
export { cleanConsole, serialMatcher } from "../core/serialPattern";
import { isEmptyState, requireState, VM_STATE } from "./stateGuard";
import { clearVmDir, keptForImport, markVmDead, rewriteRunningRecord, sweepVmDirs, VM_FILES, writeVmRecord } from "./virtualMachine/record";
import { findVmToImport } from "./virtualMachine/import";
import { listeningTcpPorts } from "../core/procNet";
import type { GuestChannel } from "../host/guest/guestChannel";
import { QgaChannel } from "../host/guest/qgaChannel";
import { ShellChannel } from "../host/guest/shellChannel";
import { launcherText } from "./runScript";
import { attachNics, hostsOf, networkDrift, networkProblems, nicPlans, releaseNics, type NicOutput } from "./virtualMachine/networks";
import { pickHostPorts, portOutputs } from "./virtualMachine/ports";
import { removeSnapshotsOf } from "../host/qemu/snapshots";
import { snapshotProblems } from "../core/snapshotRules";
import { pruneWarmRecords, saveWarm, tryWarmRestore } from "../host/qemu/warmStart";

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

export const DEFAULT_READY_TIMEOUT_SECONDS = 120;
const SERIAL_TAIL_LINES = 25;
/** Between readiness checks; each is a small file read or one short probe, and every tick shows in create time. */
const READY_POLL_MS = 100;
/** The kernel's limit on a unix socket path (sun_path is 108 bytes including the NUL). */
const MAX_SOCKET_PATH_BYTES = 107;

export interface ReadyInputs {
    serialPattern?: string;
    tcpPort?: number;
    /** The guest agent channel (vm.agent) answers. */
    agent?: boolean;
    /** A command that must exit 0 inside the guest (over the agent channel). */
    command?: string;
    /** A TCP port something listens on inside the guest (read from its /proc/net/tcp*). */
    guestPort?: number;
    timeoutSeconds?: number;
}

export interface VirtualMachineInputs extends PlacementInputs {
    vm: unknown;
    ready?: ReadyInputs;
    stateDir?: string;
    /** Snapshot the VM once ready; start that same VM again by restoring it (see README "Snapshots"). */
    warmStart?: boolean;
}

export interface VirtualMachineOutputs extends PlacementOutputs {
    vm: unknown;
    ready?: ReadyInputs;
    stateDir?: string;
    warmStart?: boolean;
    /** With warmStart: whether this start booted the guest or restored its warm snapshot. */
    start?: "cold" | "restored";
    /** With warmStart: why a warm snapshot present was not used (a warning). */
    startNote?: string;
    /** The VM's private directory: launcher, pidfile, QMP socket and serial log live here. */
    vmDir: string;
    pid: number;
    pidfile: string;
    qmpSocket: string;
    serialLog: string;
    launcherPath: string;
    argvHash: string;
    status: string;
    accel: "kvm" | "tcg";
    accelReason: string;
    startedAt: string;
    readySeconds: number;
    /** With `pid`, what tells our QEMU from a later process that got the same pid. */
    processStartTime: string;
    bootId: string;
    /** Each private NIC as attached (present when vm.networks is). */
    nics?: NicOutput[];
    /** This VM's /etc/hosts entries (present when vm.networks is). */
    hosts?: { text: string; names: Record<string, string> };
    /** Set by read when a network the VM joined died or was recreated; diff then replaces the VM. */
    networkDrift?: string;
    /** Host port of each forward by guest port ("80", "53/udp"), and "ADDRESS:PORT" of each (present with portForwards). */
    ports?: Record<string, number>;
    endpoints?: Record<string, string>;
    /** Which remembered auto ports were taken and replaced. */
    portsNote?: string;
    /** The guest agent kind (vm.agent) and the host end of its channel, when not "none". */
    agent?: "qga" | "shell";
    agentSocket?: string;
}

const readySchema = z
    .object({
        serialPattern: z
            .string({ error: "serialPattern must be a string" })
            .min(1, { error: "serialPattern must not be empty" })
            .refine((s) => serialPatternProblem(s) === undefined, { error: (iss) => serialPatternProblem(iss.input as string) })
            .optional(),
        tcpPort: port("tcpPort").optional(),
        agent: z.literal(true, { error: "agent must be true (or left out)" }).optional(),
        command: z.string({ error: "command must be a shell command (text)" }).min(1, { error: "command must not be empty" }).optional(),
        guestPort: port("guestPort").optional(),
        timeoutSeconds: z
            .number({ error: "timeoutSeconds must be a number of seconds" })
            .positive({ error: "timeoutSeconds must be more than 0" })
            .max(86400, { error: "timeoutSeconds must be at most 86400 (a day)" })
            .default(DEFAULT_READY_TIMEOUT_SECONDS),
    })
    .strict();

type Ready = z.output<typeof readySchema>;

const stateDirSchema = z.object({ stateDir: absolutePath("stateDir").optional() });

interface Parsed {
    spec: VmSpec;
    ready: Ready;
    stateDir?: string;
    warmStart?: true;
}

/** Parses every input, reporting the problems of all of them at once rather than the first one's. */
function parseInputs(inputs: VirtualMachineInputs): Parsed {
    const c = problemCollector();
    c.attempt(() => refuseUnknownKeys(inputs as unknown as Record<string, unknown>, VIRTUAL_MACHINE_INPUT_KEYS, VIRTUAL_MACHINE_OUTPUT_KEYS));
    const spec = c.attempt(() => parseVmSpec(inputs.vm, "vm"));
    const ready = c.attempt(() => parseOrThrow(readySchema, inputs.ready ?? {}, "ready"));
    const others = c.attempt(() => parseOrThrow(stateDirSchema, { stateDir: inputs.stateDir }, ""));
    if (spec && ready?.tcpPort !== undefined) c.attempt(() => forwardFor(spec, ready.tcpPort!));
    if (spec && ready) c.attempt(() => needsAgent(spec, ready));
    const warmStart = c.attempt(() => parseWarmStart(inputs.warmStart, spec));
    c.finish();
    return { spec: spec!, ready: ready!, stateDir: others!.stateDir, ...(warmStart ? { warmStart } : {}) };
}

/**
 * The forward that `ready.tcpPort` names — a host port it forwards, or the guest port of a
 * forward whose host port the provider picks; probing a port the VM does not forward would
 * only ever time out.
 */
function forwardFor(spec: VmSpec, hostPort: number, picked: Record<number, number> = {}): { address: string; port: number } {
    let i = spec.portForwards.findIndex((f) => f.host === hostPort && f.protocol === "tcp");
    if (i < 0) i = spec.portForwards.findIndex((f) => f.host === undefined && f.guest === hostPort && f.protocol === "tcp");
    const pf = spec.portForwards[i];
    if (!pf) {
        const forwarded = spec.portForwards.filter((f) => f.protocol === "tcp").map((f) => f.host ?? `auto for guest ${f.guest}`);
        throw new InputError([{
            property: "ready.tcpPort",
            reason: `tcpPort must be a host port the VM forwards over TCP (got ${hostPort}; forwarded: ${forwarded.length ? forwarded.join(", ") : "none"})`,
        }]);
    }
    // A wildcard bind is reachable on loopback; connect there.
    return { address: pf.hostAddress === "0.0.0.0" ? "127.0.0.1" : pf.hostAddress, port: pf.host ?? picked[i] ?? hostPort };
}

/** `warmStart: true` (or left out), on a VM whose state can be snapshotted. */
function parseWarmStart(value: unknown, spec: VmSpec | undefined): true | undefined {
    if (value === undefined) return undefined;
    if (value !== true) throw new InputError([{ property: "warmStart", reason: `warmStart must be true (or left out), got ${JSON.stringify(value)}` }]);
    const problems = spec ? snapshotProblems(spec, "vm") : [];
    if (problems.length) throw new InputError(problems.map((p) => ({ property: p.property, reason: `warmStart snapshots the VM: ${p.reason}` })));
    return true;
}

/** Readiness checked from inside needs the channel to ask through. */
function needsAgent(spec: VmSpec, ready: Ready): void {
    if (spec.agent !== "none") return;
    const fields = (["agent", "command", "guestPort"] as const).filter((k) => ready[k] !== undefined);
    if (fields.length) {
        throw new InputError(fields.map((k) => ({ property: `ready.${k}`, reason: `${k} is checked inside the guest over its agent channel: set vm.agent to "shell" or "qga"` })));
    }
}

/**
 * One round of the readiness checks made inside the guest; undefined when all hold, else what
 * is still awaited. Each round is bounded by `withinMs`: a guest whose agent has not started
 * yet leaves the request waiting in the port.
 */
async function insideProbe(channel: GuestChannel, ready: Ready, withinMs: number): Promise<string | undefined> {
    const ask = (command: string) => channel.execute(command, { timeoutSeconds: Math.max(1, Math.ceil(withinMs / 1000)), replyWithinMs: withinMs });
    let r;
    try {
        r = await ask(ready.command ?? "true");
    } catch (err) {
        return `the guest agent to answer (${(err as Error).message.split(". ")[0]})`;
    }
    if (ready.command !== undefined && r.exitCode !== 0) return `ready.command to exit 0 inside the guest (it exited ${r.exitCode}; stderr ${JSON.stringify(r.stderr.toString("utf8").slice(-300))})`;
    if (ready.guestPort !== undefined) {
        const ports = await ask("cat /proc/net/tcp /proc/net/tcp6 2>/dev/null; true").then((p) => listeningTcpPorts(p.stdout.toString("utf8")), () => new Set<number>());
        if (!ports.has(ready.guestPort)) return `something to listen on TCP port ${ready.guestPort} inside the guest`;
    }
    return undefined;
}

export async function serialTail(serialLog: string, lines = SERIAL_TAIL_LINES): Promise<string> {
    return serialLogTail(serialLog, lines);
}

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
async function diffHere(_id: string, olds: VirtualMachineOutputs, news: VirtualMachineInputs): Promise<pulumi.dynamic.DiffResult> {
    requireState("VirtualMachine", "diff", olds, { argvHash: "string" });
    const oldSpec = safeSpec(olds.vm);
    if (hasUnknown(news.vm) || hasUnknown(news.stateDir)) {
        return { changes: true, replaces: ["vm"], deleteBeforeReplace: true };
    }
    const next = parseInputs(news);
    const replaces: string[] = [];
    if (specArgvHash(next.spec) !== olds.argvHash) replaces.push("vm");
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
    const { accel, reason } = await resolveAccel(p.spec.accel, { qemu: p.spec.qemu, cacheDir: resolveStateDir(p.stateDir) });
    if (p.spec.accel === "auto" && accel === "tcg") {
        warn(`KVM is not usable on this host, so this VM runs under TCG emulation, many times slower: ${reason}. Fix that to boot with KVM, or set vm.accel "tcg" to say TCG is meant.`);
    }
    const vmDir = await makeVmDir(p.stateDir).catch(async (err) => Promise.reject(await explainHostFileError(err, "stateDir", resolveStateDir(p.stateDir))));
    const runtime: DaemonRuntime = {
        pidfile: path.join(vmDir, VM_FILES.pidfile),
        qmpSocket: path.join(vmDir, VM_FILES.qmpSocket),
        serialLog: path.join(vmDir, VM_FILES.serialLog),
        ...(p.spec.agent !== "none" ? { agentSocket: path.join(vmDir, VM_FILES.agentSocket) } : {}),
    };
    const launcherPath = path.join(vmDir, VM_FILES.launcher);
    let identity: ProcessIdentity | undefined;
    let nics: NicOutput[] = [];
    try {
        // Intent first: if this process is killed from here on, the next sweep of `vms` finds
        // a create whose creator is gone, stops its QEMU and removes the directory.
        await writeVmRecord(vmDir, "creating");
        assertSocketPathFits(runtime.qmpSocket);
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
        await Promise.all([chmod(runtime.qmpSocket, 0o600), chmod(runtime.serialLog, 0o600), ...(runtime.agentSocket ? [chmod(runtime.agentSocket, 0o600)] : [])]);
        // warmStart: the guest has only just begun to boot; a valid snapshot of this very VM
        // identity replaces that boot (snapshot-load reverts the disks and loads the memory).
        const warm = p.warmStart ? { stateDir, argvHash: specArgvHash(p.spec), qmpSocket: runtime.qmpSocket } : undefined;
        const warmTimeoutMs = p.ready.timeoutSeconds * 1000;
        if (warm) await pruneWarmRecords(stateDir);
        const restored = warm ? await tryWarmRestore(warm, warmTimeoutMs) : undefined;
        const status = await waitReady(p, identity, runtime, picked.hostPorts, restored?.restored === true);
        if (restored?.restored && runtime.agentSocket && p.spec.agent === "shell") await syncGuestClock(runtime.agentSocket);
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
            ...(runtime.agentSocket ? { agent: p.spec.agent as "qga" | "shell", agentSocket: runtime.agentSocket } : {}),
            ...(p.warmStart ? { warmStart: true, start: restored?.restored ? ("restored" as const) : ("cold" as const), startNote: restored?.restored ? undefined : restored?.why && `booted cold: ${restored.why}` } : {}),
        };
        // What `pulumi import` needs to rebuild this state if the stack loses it (vmImport.ts).
        await writeVmRecord(vmDir, "running", keptForImport(inputs, withoutUndefined(outs), opts));
        return { id: path.basename(vmDir), outs: withoutUndefined(outs) };
    } catch (err) {
        // Nothing half-made survives a failed create: no QEMU, no socket, no directory.
        if (identity) await stopQemu({ identity, pidfile: runtime.pidfile, qmpSocket: runtime.qmpSocket }, { powerdownMs: 0 }).catch(() => undefined);
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
        throw new Error(`stateDir: the QMP socket path ${socketPath} is ${bytes} bytes; unix sockets allow ${MAX_SOCKET_PATH_BYTES}. Choose a shorter stateDir`);
    }
}

function portRequests(spec: VmSpec): HostPortRequest[] {
    return spec.portForwards.flatMap((pf, i) => (pf.host === undefined ? [] : [{ port: pf.host, address: pf.hostAddress, protocol: pf.protocol, field: `vm.portForwards[${i}].host` }]));
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
    return new Error(`${field}: host port ${m[2]}:${m[3]}/${m[1]} is already in use by another process or VM; choose another port (QEMU: ${err.stderr})`);
}

/** Waits for every readiness condition asked for; returns QMP's run state once ready. */
async function waitReady(p: Parsed, identity: ProcessIdentity, runtime: DaemonRuntime, picked: Record<number, number>, restored = false): Promise<string> {
    const deadline = Date.now() + p.ready.timeoutSeconds * 1000;
    // Reads only what the log gained since the last poll, matched by a linear-time engine: a
    // chatty guest or a pattern that would backtrack forever cannot stall the provider.
    const watcher = p.ready.serialPattern !== undefined ? new SerialLogWatcher(runtime.serialLog, p.ready.serialPattern) : undefined;
    const target = p.ready.tcpPort !== undefined ? forwardFor(p.spec, p.ready.tcpPort, picked) : undefined;
    const prober = target ? portProber(target.address, target.port) : undefined;
    // A restored guest printed its console marker before the snapshot, in another log.
    let serialSeen = watcher === undefined || restored;
    let portAnswered = prober === undefined;
    const inside = p.ready.agent || p.ready.command !== undefined || p.ready.guestPort !== undefined;
    const channel: GuestChannel | undefined = !inside || !runtime.agentSocket ? undefined : p.spec.agent === "qga" ? new QgaChannel(runtime.agentSocket) : new ShellChannel(runtime.agentSocket);
    let insideWaiting: string | undefined = inside ? "the guest agent to answer" : undefined;
    let nextInside = 0;
    const t0 = Date.now();
    const waitingFor = () =>
        [
            !serialSeen ? `serialPattern ${JSON.stringify(p.ready.serialPattern)} on the console` : "",
            !portAnswered ? `an answer on host port ${target!.address}:${target!.port}` : "",
            insideWaiting ?? "",
            serialSeen && portAnswered && insideWaiting === undefined ? "QMP to answer" : "",
        ].filter(Boolean);
    // What the user sees while a guest boots: what is still awaited, and how long of how long.
    let nextReport = t0 + progressIntervalMs();
    try {
        for (;;) {
            const live = await checkOurQemu(identity, runtime.pidfile);
            if (!live.alive) throw await notReady(`QEMU exited before the VM was ready (${live.reason})`, runtime.serialLog);
            if (!serialSeen) serialSeen = await watcher!.poll();
            if (!portAnswered) portAnswered = prober!.tick();
            if (insideWaiting !== undefined && serialSeen && portAnswered && Date.now() >= nextInside) {
                insideWaiting = await insideProbe(channel!, p.ready, Math.max(1000, Math.min(10_000, deadline - Date.now())));
                nextInside = Date.now() + 500;
            }
            if (serialSeen && portAnswered && insideWaiting === undefined) {
                const status = await qmpStatus(runtime.qmpSocket, Math.max(2000, Math.min(10000, deadline - Date.now())));
                if (status !== undefined) return status;
            }
            if (Date.now() >= deadline) {
                const waiting = waitingFor();
                throw await notReady(`the VM was not ready within ${p.ready.timeoutSeconds} s (waiting for ${waiting.join(" and ")})`, runtime.serialLog);
            }
            if (Date.now() >= nextReport) {
                progress(`waiting for ${waitingFor().join(" and ")} (${Math.round((Date.now() - t0) / 1000)} s of ${p.ready.timeoutSeconds})`);
                nextReport = Date.now() + progressIntervalMs();
            }
            await sleep(READY_POLL_MS);
        }
    } finally {
        prober?.stop();
        channel?.close();
    }
}

/** A restored guest's clock resumes from the snapshot's moment: set it to the host's. */
async function syncGuestClock(agentSocket: string): Promise<void> {
    const channel = new ShellChannel(agentSocket);
    try {
        const r = await channel.execute(`date -u -s @${Math.floor(Date.now() / 1000)} >/dev/null`, { timeoutSeconds: 30 });
        if (r.exitCode !== 0) throw new Error(`warmStart: setting the restored guest's clock failed: ${r.stderr.toString("utf8").slice(-300)}`);
    } finally {
        channel.close();
    }
}

async function notReady(what: string, serialLog: string): Promise<Error> {
    return new Error(`${what}. Last lines of the serial console (${serialLog}):\n${await serialTail(serialLog)}`);
}

/** QMP's run state, or undefined when QMP does not answer in time (waiting its turn behind other clients). */
async function qmpStatus(socketPath: string, timeoutMs: number): Promise<string | undefined> {
    try {
        return await withQmp(socketPath, timeoutMs, async (client) => (await queryStatus(client)).status);
    } catch {
        return undefined;
    }
}

function identityOf(props: VirtualMachineOutputs): ProcessIdentity {
    return { pid: props.pid, startTime: props.processStartTime, bootId: props.bootId };
}

/** Orphans of killed creates and long-dead VMs in `vms`, looked for at most every 30 s per process. */
function sweepVmsSometimes(vmsDir: string): Promise<void> {
    return oncePerInterval(`vms:${vmsDir}`, 30_000, () => sweepVmDirs(vmsDir));
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
        return { id: found.id, props: withoutUndefined({ ...found.outs, status, ...(drift ? { networkDrift: drift } : {}) }), inputs: found.inputs };
    }
    requireState("VirtualMachine", "read", props, VM_STATE);
    await sweepVmsSometimes(path.dirname(props.vmDir));
    const live = await checkOurQemu(identityOf(props), props.pidfile);
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
async function updateHere(_id: string, olds: VirtualMachineOutputs, news: VirtualMachineInputs, opts?: LifecycleOptions): Promise<pulumi.dynamic.UpdateResult> {
    requireState("VirtualMachine", "update", olds, VM_STATE);
    parseInputs(news);
    const { ready: _old, warmStart: _oldWarm, ...rest } = olds;
    const status = (await qmpStatus(olds.qmpSocket, 5000)) ?? olds.status;
    const outs = withoutUndefined({ ...rest, ...(news.ready ? { ready: news.ready } : {}), ...(news.warmStart ? { warmStart: true } : {}), status });
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
    await removeSnapshotsOf(props.vmDir, { qemuImg: spec?.qemuImg, diskFiles: spec?.disks.filter((d) => !d.readOnly).map((d) => d.overlay ?? d.path) });
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

function sleep(ms: number): Promise<void> {
    return new Promise((resolve) => setTimeout(resolve, ms));
}

// ---------------------------------------------------------------------------------------------
// The lifecycle as the plugin, the dynamic shims and a far host's runner call it: placed where its `host` says (placement.ts).

export const { check, diff, create, read, update, remove } = placed("VirtualMachine", { check: checkHere, diff: diffHere, create: createHere, read: readHere, update: updateHere, remove: removeHere });
