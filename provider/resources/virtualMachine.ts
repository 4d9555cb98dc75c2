import type * as pulumi from "@pulumi/pulumi";
import { chmod, mkdtemp, readFile, rmdir } from "node:fs/promises";
import * as path from "node:path";
import { z } from "zod";
import { specArgvHash, type DaemonRuntime } from "../core/qemuArgv";
import { absolutePath, InputError, parseOrThrow, port } from "../core/validation";
import { parseVmSpec, type VmSpec } from "../core/vmSpec";
import { resolveAccel } from "../host/accel";
import { removeLauncherFile, writeLauncherFile } from "../host/launcherFile";
import { assertHostPortsFree, portProber, type HostPortRequest } from "../host/ports";
import { checkOurQemu, QemuStartError, removeRuntimeFiles, startDaemonized, stopQemu, type ProcessIdentity } from "../host/qemuProcess";
import { QmpClient, queryStatus } from "../host/qmp";
import { ensurePrivateDir, resolveStateDir } from "../host/stateDir";
import { listeningTcpPorts } from "../core/procNet";
import type { GuestChannel } from "../host/guestChannel";
import { QgaChannel } from "../host/qgaChannel";
import { ShellChannel } from "../host/shellChannel";
import { checkWith, hasUnknown, problemCollector, withoutUndefined } from "./common";
import { launcherText } from "./runScript";

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

export interface VirtualMachineInputs {
    vm: unknown;
    ready?: ReadyInputs;
    stateDir?: string;
}

export interface VirtualMachineOutputs {
    vm: unknown;
    ready?: ReadyInputs;
    stateDir?: string;
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
    /** The guest agent kind (vm.agent) and the host end of its channel, when not "none". */
    agent?: "qga" | "shell";
    agentSocket?: string;
}

const readySchema = z
    .object({
        serialPattern: z
            .string({ error: "serialPattern must be a string" })
            .min(1, { error: "serialPattern must not be empty" })
            .refine((s) => regexProblem(s) === undefined, { error: "serialPattern written /…/ must be a valid regular expression" })
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
}

/** Parses every input, reporting the problems of all of them at once rather than the first one's. */
function parseInputs(inputs: VirtualMachineInputs): Parsed {
    const c = problemCollector();
    const spec = c.attempt(() => parseVmSpec(inputs.vm, "vm"));
    const ready = c.attempt(() => parseOrThrow(readySchema, inputs.ready ?? {}, "ready"));
    const others = c.attempt(() => parseOrThrow(stateDirSchema, { stateDir: inputs.stateDir }, ""));
    if (spec && ready?.tcpPort !== undefined) c.attempt(() => forwardFor(spec, ready.tcpPort!));
    if (spec && ready) c.attempt(() => needsAgent(spec, ready));
    c.finish();
    return { spec: spec!, ready: ready!, stateDir: others!.stateDir };
}

/** The forward that `ready.tcpPort` names; probing a port the VM does not forward would only ever time out. */
function forwardFor(spec: VmSpec, hostPort: number): { address: string } {
    const pf = spec.portForwards.find((f) => f.host === hostPort && f.protocol === "tcp");
    if (!pf) {
        const forwarded = spec.portForwards.filter((f) => f.protocol === "tcp").map((f) => f.host);
        throw new InputError([{
            property: "ready.tcpPort",
            reason: `tcpPort must be a host port the VM forwards over TCP (got ${hostPort}; forwarded: ${forwarded.length ? forwarded.join(", ") : "none"})`,
        }]);
    }
    // A wildcard bind is reachable on loopback; connect there.
    return { address: pf.hostAddress === "0.0.0.0" ? "127.0.0.1" : pf.hostAddress };
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

function regexProblem(pattern: string): string | undefined {
    const m = /^\/(.*)\/([a-z]*)$/s.exec(pattern);
    if (!m) return undefined;
    try {
        new RegExp(m[1], m[2]);
        return undefined;
    } catch (err) {
        return (err as Error).message;
    }
}

/** The test `serialPattern` stands for; see the module comment for the rule. */
export function serialMatcher(pattern: string): (console: string) => boolean {
    const m = /^\/(.*)\/([a-z]*)$/s.exec(pattern);
    if (m) {
        const re = new RegExp(m[1], m[2].replace(/g|y/g, ""));
        return (text) => re.test(text);
    }
    return (text) => text.includes(pattern);
}

/** Serial output as a person would read it: escape sequences (colours, screen clears) and CRs removed. */
export function cleanConsole(raw: string): string {
    return raw
        .replace(/\x1b\[[0-?]*[ -/]*[@-~]/g, "")
        .replace(/\x1b[@-Z\\-_]/g, "")
        .replace(/\x1bc/g, "")
        .replace(/\r/g, "");
}

export async function serialTail(serialLog: string, lines = SERIAL_TAIL_LINES): Promise<string> {
    let raw: string;
    try {
        raw = await readFile(serialLog, "utf8");
    } catch {
        return "(no serial log)";
    }
    const text = cleanConsole(raw).trimEnd();
    if (!text) return "(the serial console printed nothing)";
    return text.split("\n").slice(-lines).join("\n");
}

export async function check(_olds: unknown, news: any): Promise<pulumi.dynamic.CheckResult> {
    if (hasUnknown(news)) return { inputs: news };
    return checkWith(() => parseInputs(news), news);
}

/**
 * Replace when what QEMU runs changes (or where its state lives); `ready` alone is an update.
 * Replacement stops the old VM first when both could not run at once: forwarded host ports
 * (one listener per port) and disks opened for writing (QEMU's image lock).
 */
export async function diff(_id: string, olds: VirtualMachineOutputs, news: VirtualMachineInputs): Promise<pulumi.dynamic.DiffResult> {
    const oldSpec = safeSpec(olds.vm);
    if (hasUnknown(news.vm) || hasUnknown(news.stateDir)) {
        return { changes: true, replaces: ["vm"], deleteBeforeReplace: true };
    }
    const next = parseInputs(news);
    const replaces: string[] = [];
    if (specArgvHash(next.spec) !== olds.argvHash) replaces.push("vm");
    if ((next.stateDir ?? null) !== (olds.stateDir ?? null)) replaces.push("stateDir");
    if (replaces.length) {
        const exclusive = holdsExclusive(next.spec) || (oldSpec !== undefined && holdsExclusive(oldSpec));
        return { changes: true, replaces, deleteBeforeReplace: exclusive };
    }
    const readyChanged = JSON.stringify(withoutUndefined(news.ready ?? {})) !== JSON.stringify(olds.ready ?? {});
    return { changes: readyChanged };
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
    return spec.portForwards.length > 0 || writesDisk;
}

export async function create(inputs: VirtualMachineInputs): Promise<pulumi.dynamic.CreateResult> {
    const p = parseInputs(inputs);
    const { accel, reason } = await resolveAccel(p.spec.accel, { qemu: p.spec.qemu, cacheDir: resolveStateDir(p.stateDir) });
    const vmDir = await makeVmDir(p.stateDir, p.spec.name);
    const runtime: DaemonRuntime = {
        pidfile: path.join(vmDir, "qemu.pid"),
        qmpSocket: path.join(vmDir, "qmp.sock"),
        serialLog: path.join(vmDir, "serial.log"),
        ...(p.spec.agent !== "none" ? { agentSocket: path.join(vmDir, "agent.sock") } : {}),
    };
    const launcherPath = path.join(vmDir, "run-vm.sh");
    let identity: ProcessIdentity | undefined;
    try {
        assertSocketPathFits(runtime.qmpSocket);
        if (runtime.agentSocket) assertSocketPathFits(runtime.agentSocket);
        await assertHostPortsFree(portRequests(p.spec));
        await writeLauncherFile(launcherPath, launcherText(p.spec, accel, runtime).text);
        const t0 = Date.now();
        const startedAt = new Date(t0).toISOString();
        identity = await startDaemonized([launcherPath], runtime.pidfile).catch((err) => {
            throw explainStartError(err, p.spec);
        });
        // The directory already keeps others out; the socket and console log (which may show
        // secrets a guest prints) are tightened too, in case the directory is ever loosened.
        await Promise.all([chmod(runtime.qmpSocket, 0o600), chmod(runtime.serialLog, 0o600), ...(runtime.agentSocket ? [chmod(runtime.agentSocket, 0o600)] : [])]);
        const status = await waitReady(p, identity, runtime);
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
            ...(runtime.agentSocket ? { agent: p.spec.agent as "qga" | "shell", agentSocket: runtime.agentSocket } : {}),
        };
        return { id: path.basename(vmDir), outs: withoutUndefined(outs) };
    } catch (err) {
        // Nothing half-made survives a failed create: no QEMU, no socket, no directory.
        if (identity) await stopQemu({ identity, pidfile: runtime.pidfile, qmpSocket: runtime.qmpSocket }, { powerdownMs: 0 }).catch(() => undefined);
        await removeVmDir(vmDir, runtime, launcherPath);
        throw err;
    }
}

async function makeVmDir(stateDirInput: string | undefined, name: string | undefined): Promise<string> {
    const stateDir = await ensurePrivateDir(resolveStateDir(stateDirInput));
    const vms = await ensurePrivateDir(path.join(stateDir, "vms"));
    const label = (name ?? "vm").replace(/[^A-Za-z0-9_.-]/g, "_").slice(0, 24) || "vm";
    // mkdtemp makes a fresh 0700 directory with a random suffix: parallel creates never share one.
    return mkdtemp(path.join(vms, `${label}-`));
}

function assertSocketPathFits(socketPath: string): void {
    const bytes = Buffer.byteLength(socketPath);
    if (bytes > MAX_SOCKET_PATH_BYTES) {
        throw new Error(`stateDir: the QMP socket path ${socketPath} is ${bytes} bytes; unix sockets allow ${MAX_SOCKET_PATH_BYTES}. Choose a shorter stateDir`);
    }
}

function portRequests(spec: VmSpec): HostPortRequest[] {
    return spec.portForwards.map((pf, i) => ({ port: pf.host, address: pf.hostAddress, protocol: pf.protocol, field: `vm.portForwards[${i}].host` }));
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
async function waitReady(p: Parsed, identity: ProcessIdentity, runtime: DaemonRuntime): Promise<string> {
    const deadline = Date.now() + p.ready.timeoutSeconds * 1000;
    const matches = p.ready.serialPattern !== undefined ? serialMatcher(p.ready.serialPattern) : undefined;
    const target = p.ready.tcpPort !== undefined ? { ...forwardFor(p.spec, p.ready.tcpPort), port: p.ready.tcpPort } : undefined;
    const prober = target ? portProber(target.address, target.port) : undefined;
    let serialSeen = matches === undefined;
    let portAnswered = prober === undefined;
    const inside = p.ready.agent || p.ready.command !== undefined || p.ready.guestPort !== undefined;
    const channel: GuestChannel | undefined = !inside || !runtime.agentSocket ? undefined : p.spec.agent === "qga" ? new QgaChannel(runtime.agentSocket) : new ShellChannel(runtime.agentSocket);
    let insideWaiting: string | undefined = inside ? "the guest agent to answer" : undefined;
    let nextInside = 0;
    try {
        for (;;) {
            const live = await checkOurQemu(identity, runtime.pidfile);
            if (!live.alive) throw await notReady(`QEMU exited before the VM was ready (${live.reason})`, runtime.serialLog);
            if (!serialSeen) serialSeen = matches!(cleanConsole(await readFile(runtime.serialLog, "utf8").catch(() => "")));
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
                const waiting = [
                    !serialSeen ? `serialPattern ${JSON.stringify(p.ready.serialPattern)} on the console` : "",
                    !portAnswered ? `an answer on host port ${target!.address}:${target!.port}` : "",
                    insideWaiting ?? "",
                    serialSeen && portAnswered && insideWaiting === undefined ? "QMP to answer" : "",
                ].filter(Boolean);
                throw await notReady(`the VM was not ready within ${p.ready.timeoutSeconds} s (waiting for ${waiting.join(" and ")})`, runtime.serialLog);
            }
            await sleep(READY_POLL_MS);
        }
    } finally {
        prober?.stop();
        channel?.close();
    }
}

async function notReady(what: string, serialLog: string): Promise<Error> {
    return new Error(`${what}. Last lines of the serial console (${serialLog}):\n${await serialTail(serialLog)}`);
}

/** QMP's run state, or undefined when QMP does not answer in time. */
async function qmpStatus(socketPath: string, timeoutMs: number): Promise<string | undefined> {
    let client: QmpClient | undefined;
    try {
        client = await QmpClient.connect(socketPath, { connectTimeoutMs: timeoutMs, commandTimeoutMs: timeoutMs });
        return (await queryStatus(client)).status;
    } catch {
        return undefined;
    } finally {
        client?.close();
    }
}

function identityOf(props: VirtualMachineOutputs): ProcessIdentity {
    return { pid: props.pid, startTime: props.processStartTime, bootId: props.bootId };
}

/**
 * Refresh: a QEMU that exited, or a pid now held by another process, is reported gone so the
 * next `up` starts the VM again. Its directory is left as it was, serial log included, for a
 * post-mortem.
 */
export async function read(id: string, props: VirtualMachineOutputs): Promise<pulumi.dynamic.ReadResult> {
    const live = await checkOurQemu(identityOf(props), props.pidfile);
    if (!live.alive) return { id: "", props: {} };
    // QEMU serves one QMP client at a time: a user's open session makes it look unresponsive too.
    const status = (await qmpStatus(props.qmpSocket, 5000)) ?? "unresponsive";
    return { id, props: { ...props, status } };
}

/** Only `ready` can change in place; it matters at create, so the running VM is left alone. */
export async function update(_id: string, olds: VirtualMachineOutputs, news: VirtualMachineInputs): Promise<pulumi.dynamic.UpdateResult> {
    parseInputs(news);
    const { ready: _old, ...rest } = olds;
    const status = (await qmpStatus(olds.qmpSocket, 5000)) ?? olds.status;
    return { outs: withoutUndefined({ ...rest, ...(news.ready ? { ready: news.ready } : {}), status }) };
}

/** Power button, then `quit`, then SIGKILL — only ever to our own QEMU — and then its directory goes. */
export async function remove(_id: string, props: VirtualMachineOutputs): Promise<void> {
    const runtime = { pidfile: props.pidfile, qmpSocket: props.qmpSocket, serialLog: props.serialLog, agentSocket: props.agentSocket };
    await stopQemu({ identity: identityOf(props), pidfile: props.pidfile, qmpSocket: props.qmpSocket });
    await removeVmDir(props.vmDir, runtime, props.launcherPath);
}

/**
 * Removes the files the provider put in a VM's directory, then the directory if that left it
 * empty; anything else someone put there keeps the directory alive.
 */
async function removeVmDir(vmDir: string, runtime: DaemonRuntime, launcherPath: string): Promise<void> {
    await removeRuntimeFiles([runtime.pidfile, runtime.qmpSocket, runtime.serialLog, ...(runtime.agentSocket ? [runtime.agentSocket] : [])]);
    await removeLauncherFile(launcherPath);
    try {
        await rmdir(vmDir);
    } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code !== "ENOENT" && code !== "ENOTEMPTY") throw err;
    }
}

function sleep(ms: number): Promise<void> {
    return new Promise((resolve) => setTimeout(resolve, ms));
}
