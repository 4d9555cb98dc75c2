import type * as pulumi from "@pulumi/pulumi";
import { rm, writeFile } from "node:fs/promises";
import { ppmToPng } from "../provider/core/ppmToPng";
import { listeningTcpPorts } from "../provider/core/procNet";
import { shellQuote } from "../provider/core/shellQuote";
import { DEFAULT_EXEC_TIMEOUT_SECONDS, type ExecOptions, type GuestChannel } from "../provider/host/guest/guestChannel";
import type { ProcessIdentity } from "../provider/host/qemu/qemuProcess";
import { openAgentChannel, type AgentTarget } from "../provider/resources/virtualMachine/agentChannel";
import type { SnapshotInfo } from "../provider/host/qemu/snapshots";
import { cleanConsole } from "../provider/resources/virtualMachine";
import { siteOf } from "../provider/resources/virtualMachine/site";
import { isResource, plainOutputs, resourceOutputs, type StackOutputValue } from "./machineTarget";

/**
 * pulumi-qemu/testing: drive a running VirtualMachine from test code — jest, a Pulumi
 * Automation API program, or a plain Node script given a stack's outputs. In the manner of the
 * NixOS test driver: run commands in the guest over its agent channel (`vm.agent`), wait for
 * things with deadlines, copy files, and act on the VM through QMP.
 *
 * A VM placed on a far host (its outputs carry `host`) is driven the same way: its QMP and agent
 * sockets are reached through the SSH connection, its serial log read there (provider/resources/virtualMachine/site.ts).
 *
 *     const machine = attach(await stack.outputs()["web"].value);
 *     await machine.waitForOpenPort(80);
 *     expect(await machine.succeed("cat /etc/hostname")).toBe("web\n");
 *     machine.close();
 */

/** The VirtualMachine outputs `attach` uses (a stack output of the resource has them all). */
export interface MachineOutputs extends AgentTarget {
    vm?: unknown;
    /** For snapshots: the VM's directory (where their records live) and identity. */
    vmDir?: string;
    argvHash?: string;
    /** A VM placed on a far host: its normalised ssh:// URL, and the key files the resource named. */
    host?: string;
    hostAccess?: { identityFile?: string; knownHosts?: string };
}

export type { SnapshotInfo };

export interface RestoreOptions {
    timeoutSeconds?: number;
    /**
     * After the restore, set the guest's clock to the host's over the agent channel (default
     * true when the VM has one): a restored guest's clock otherwise resumes from the snapshot's
     * moment. Needs a guest `date` that takes `-u -s @SECONDS` (busybox, coreutils).
     */
    syncClock?: boolean;
}

export interface ExecuteOptions {
    timeoutSeconds?: number;
    stdin?: Buffer | string | { file: string };
    env?: Record<string, string>;
    /** Stream stdout to this host file instead of memory (needed for 16 MiB or more). */
    stdoutFile?: string;
}

export interface ExecuteResult {
    exitCode: number;
    /** stdout and stderr decoded as UTF-8; the exact bytes are in `raw`. */
    stdout: string;
    stderr: string;
    raw: { stdout: Buffer; stderr: Buffer };
}

export interface WaitOptions {
    /** Give up after this long; default 60 s. */
    timeoutSeconds?: number;
    /** Pause between attempts; default 500 ms. */
    intervalMs?: number;
}

export interface Machine {
    execute(command: string, opts?: ExecuteOptions): Promise<ExecuteResult>;
    /** Runs `command`, which must exit 0; returns its stdout. */
    succeed(command: string, opts?: ExecuteOptions): Promise<string>;
    /** Runs `command`, which must exit non-zero; returns its result. */
    fail(command: string, opts?: ExecuteOptions): Promise<ExecuteResult>;
    waitUntilSucceeds(command: string, opts?: WaitOptions): Promise<string>;
    waitUntilFails(command: string, opts?: WaitOptions): Promise<ExecuteResult>;
    /** Until something listens on TCP `port` inside the guest (read from its /proc/net/tcp*, not through a forward). */
    waitForOpenPort(port: number, opts?: WaitOptions): Promise<void>;
    /** Until nothing listens on TCP `port` inside the guest. */
    waitForClosedPort(port: number, opts?: WaitOptions): Promise<void>;
    waitForFile(guestPath: string, opts?: WaitOptions): Promise<void>;
    /** Until the serial console (escapes and CRs removed) matches; returns the match. */
    waitForConsoleText(pattern: RegExp | string, opts?: WaitOptions): Promise<string>;
    copyToGuest(hostPath: string, guestPath: string, opts?: { timeoutSeconds?: number }): Promise<void>;
    copyFromGuest(guestPath: string, hostPath: string, opts?: { timeoutSeconds?: number }): Promise<void>;
    /** The ACPI power button, then waits until QEMU has exited. */
    shutdown(opts?: { timeoutSeconds?: number }): Promise<void>;
    /** QEMU quits at once, as if the host lost power. */
    crash(): Promise<void>;
    /**
     * QMP set_link: a NIC's link down or up, for partition tests. `nicId` is a NIC or netdev
     * name as QMP knows it (see `nics()`); `network: "user"` gives one NIC named "virtio-net-pci.0".
     */
    setLink(nicId: string, up: boolean): Promise<void>;
    /** The NIC names QMP knows (query-rx-filter), for setLink. */
    nics(): Promise<string[]>;
    /** QMP screendump of the display, written as PNG. */
    screenshot(pngPath: string): Promise<void>;
    /** The console so far, cleaned. */
    consoleText(): Promise<string>;
    /**
     * Saves the running guest — memory, devices and every writable disk, together — as `name`
     * (QMP snapshot-save; see the README's "Snapshots"). Refused, with nothing written, for a VM
     * with shares, volatile, a writable raw disk or no writable qcow2 disk.
     */
    snapshot(name: string, opts?: { timeoutSeconds?: number }): Promise<SnapshotInfo>;
    /** Puts the guest back exactly as it was at `name`; a damaged snapshot is refused. */
    restore(name: string, opts?: RestoreOptions): Promise<void>;
    deleteSnapshot(name: string, opts?: { timeoutSeconds?: number }): Promise<void>;
    snapshots(): Promise<SnapshotInfo[]>;
    /** Lets go of the agent connection; the VM keeps running. */
    close(): void;
}

/** Raised by succeed/fail/waits: carries what the guest said. */
export class MachineError extends Error {
    constructor(
        message: string,
        readonly result?: ExecuteResult,
    ) {
        super(message);
        this.name = "MachineError";
    }
}

const DEFAULT_WAIT_SECONDS = 60;
/** How much of a command's output an error quotes (characters, from the end). */
const ERROR_TAIL_CHARS = 2000;

/**
 * A machine for a running VM, from what the caller has (sdk/machineTarget.ts): the VM's outputs,
 * one Automation API output (`{ value, secret }`), a stack's outputs and the output's name, or —
 * inside a Pulumi program — the VirtualMachine resource itself, which gives a promise.
 */
export function attach(outputs: MachineOutputs | StackOutputValue): Machine;
export function attach(stackOutputs: Record<string, StackOutputValue | unknown>, name: string): Machine;
export function attach(vm: pulumi.CustomResource): Promise<Machine>;
export function attach(arg: unknown, name?: string): Machine | Promise<Machine> {
    if (isResource(arg)) return resourceOutputs(arg).then((outs) => attachOutputs(outs as unknown as MachineOutputs));
    return attachOutputs(plainOutputs(arg, name) as unknown as MachineOutputs);
}

function attachOutputs(outputs: MachineOutputs): Machine {
    for (const key of ["qmpSocket", "serialLog"] as const) {
        if (typeof outputs[key] !== "string")
            throw new Error(
                `attach: ${key} is missing from the VM outputs; pass a VirtualMachine's outputs (stack.outputs()[name].value)`,
            );
    }
    // Where the VM's sockets and files are: this machine, or its far host through SSH.
    const site = siteOf(outputs);
    let channel: GuestChannel | undefined;
    let channelSocket: string | undefined;
    const chan = async (): Promise<GuestChannel> => {
        if (site.where && outputs.agent && outputs.agentSocket) {
            // A far VM's agent socket is a forward, made again when the SSH connection was: follow it.
            const socket = await site.agentSocket();
            if (channel && channelSocket !== socket) machine.close();
            if (!channel) [channel, channelSocket] = [openAgentChannel(outputs, { socket, probe: site }), socket];
        }
        return (channel ??= openAgentChannel(outputs));
    };
    const identity: ProcessIdentity | undefined =
        outputs.pid !== undefined && outputs.processStartTime && outputs.bootId
            ? { pid: outputs.pid, startTime: outputs.processStartTime, bootId: outputs.bootId }
            : undefined;

    const execute = async (command: string, opts: ExecuteOptions = {}): Promise<ExecuteResult> => {
        const r = await (await chan()).execute(command, opts as ExecOptions);
        return {
            exitCode: r.exitCode,
            stdout: r.stdout.toString("utf8"),
            stderr: r.stderr.toString("utf8"),
            raw: { stdout: r.stdout, stderr: r.stderr },
        };
    };

    const waitUntil = async <T>(
        what: string,
        opts: WaitOptions,
        attempt: (remainingSeconds: number) => Promise<T | undefined>,
        lastSeen: () => string,
    ): Promise<T> => {
        const timeoutSeconds = opts.timeoutSeconds ?? DEFAULT_WAIT_SECONDS;
        const deadline = Date.now() + timeoutSeconds * 1000;
        for (;;) {
            const remaining = Math.max(1, Math.ceil((deadline - Date.now()) / 1000));
            const got = await attempt(remaining);
            if (got !== undefined) return got;
            if (Date.now() >= deadline) {
                throw new MachineError(
                    `${what}: not within ${timeoutSeconds} s. ${lastSeen()}\nLast lines of the serial console:\n${await site.serialTail()}`,
                );
            }
            await sleep(Math.min(opts.intervalMs ?? 500, Math.max(0, deadline - Date.now())));
        }
    };

    const describe = (command: string, r: ExecuteResult) =>
        `command ${JSON.stringify(command.length > 200 ? command.slice(0, 200) + "…" : command)} exited ${r.exitCode}; stderr: ${tail(r.stderr)}`;

    const machine: Machine = {
        execute,
        async succeed(command, opts) {
            const r = await execute(command, opts);
            if (r.exitCode !== 0) throw new MachineError(describe(command, r), r);
            return r.stdout;
        },
        async fail(command, opts) {
            const r = await execute(command, opts);
            if (r.exitCode === 0)
                throw new MachineError(
                    `command ${JSON.stringify(command)} succeeded but was expected to fail; stdout: ${tail(r.stdout)}`,
                    r,
                );
            return r;
        },
        async waitUntilSucceeds(command, opts = {}) {
            let last: ExecuteResult | undefined;
            return waitUntil(
                `waitUntilSucceeds(${JSON.stringify(command)})`,
                opts,
                async (remaining) => {
                    last = await execute(command, {
                        timeoutSeconds: Math.min(remaining, DEFAULT_EXEC_TIMEOUT_SECONDS),
                    });
                    return last.exitCode === 0 ? last.stdout : undefined;
                },
                () => (last ? `Last attempt: ${describe(command, last)}` : ""),
            );
        },
        async waitUntilFails(command, opts = {}) {
            let last: ExecuteResult | undefined;
            return waitUntil(
                `waitUntilFails(${JSON.stringify(command)})`,
                opts,
                async (remaining) => {
                    last = await execute(command, {
                        timeoutSeconds: Math.min(remaining, DEFAULT_EXEC_TIMEOUT_SECONDS),
                    });
                    return last.exitCode !== 0 ? last : undefined;
                },
                () => (last ? `Last attempt exited 0; stdout: ${tail(last.stdout)}` : ""),
            );
        },
        async waitForOpenPort(port, opts = {}) {
            checkPort(port);
            let seen = new Set<number>();
            await waitUntil(
                `waitForOpenPort(${port})`,
                opts,
                async () => {
                    seen = await guestListening(execute);
                    return seen.has(port) ? true : undefined;
                },
                () => `Listening in the guest: ${[...seen].sort((a, b) => a - b).join(", ") || "nothing"}`,
            );
        },
        async waitForClosedPort(port, opts = {}) {
            checkPort(port);
            await waitUntil(
                `waitForClosedPort(${port})`,
                opts,
                async () => ((await guestListening(execute)).has(port) ? undefined : true),
                () => "",
            );
        },
        async waitForFile(guestPath, opts = {}) {
            await waitUntil(
                `waitForFile(${guestPath})`,
                opts,
                async () => ((await execute(`test -e ${shellQuote(guestPath)}`)).exitCode === 0 ? true : undefined),
                () => "",
            );
        },
        async waitForConsoleText(pattern, opts = {}) {
            const re =
                typeof pattern === "string"
                    ? new RegExp(pattern.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"))
                    : new RegExp(pattern.source, pattern.flags.replace(/[gy]/g, ""));
            return waitUntil(
                `waitForConsoleText(${re})`,
                { intervalMs: 200, ...opts },
                async () => re.exec(await machine.consoleText())?.[0],
                () => "",
            );
        },
        async copyToGuest(hostPath, guestPath, opts = {}) {
            const c = await chan();
            if (c.copyIn) return c.copyIn(hostPath, guestPath);
            const r = await execute(`cat > ${shellQuote(guestPath)}`, {
                stdin: { file: hostPath },
                timeoutSeconds: opts.timeoutSeconds ?? 300,
            });
            if (r.exitCode !== 0)
                throw new MachineError(`copyToGuest ${hostPath} → ${guestPath}: ${describe("cat > …", r)}`, r);
        },
        async copyFromGuest(guestPath, hostPath, opts = {}) {
            const c = await chan();
            if (c.copyOut) return c.copyOut(guestPath, hostPath);
            const r = await execute(`cat ${shellQuote(guestPath)}`, {
                stdoutFile: hostPath,
                timeoutSeconds: opts.timeoutSeconds ?? 300,
            });
            if (r.exitCode !== 0) {
                await rm(hostPath, { force: true });
                throw new MachineError(`copyFromGuest ${guestPath} → ${hostPath}: ${describe("cat …", r)}`, r);
            }
        },
        async shutdown(opts = {}) {
            const timeoutSeconds = opts.timeoutSeconds ?? DEFAULT_WAIT_SECONDS;
            await site.qmp("system_powerdown");
            await waitForExit(timeoutSeconds, "shutdown: the guest did not power off after the power button");
            machine.close();
        },
        async crash() {
            await site.qmp("quit").catch((err: Error) => {
                // QEMU may close the socket before it answers a quit.
                if (!/closed/.test(err.message)) throw err;
            });
            await waitForExit(10, "crash: QEMU did not exit after quit");
            machine.close();
        },
        async setLink(nicId, up) {
            await site.qmp("set_link", { name: nicId, up });
        },
        async nics() {
            const filters = (await site.qmp("query-rx-filter")) as { name: string }[];
            return filters.map((f) => f.name);
        },
        async screenshot(pngPath) {
            await writeFile(pngPath, ppmToPng(await site.screendump()), { mode: 0o600 });
        },
        async consoleText() {
            return cleanConsole(await site.serialText());
        },
        // Worked on where the VM runs: its records are in its directory there.
        snapshot: async (name, opts) => site.snapshots.save(outputs, name, opts),
        async restore(name, opts = {}) {
            // The guest's end of the channel goes back in time with it: start a fresh session.
            machine.close();
            await site.snapshots.restore(outputs, name, opts);
            if (opts.syncClock ?? outputs.agent !== undefined) {
                await machine.succeed(`date -u -s @${Math.floor(Date.now() / 1000)} >/dev/null`, {
                    timeoutSeconds: opts.timeoutSeconds ?? 30,
                });
            }
        },
        deleteSnapshot: async (name, opts) => site.snapshots.remove(outputs, name, opts),
        snapshots: async () => site.snapshots.list(outputs),
        close() {
            channel?.close();
            channel = undefined;
        },
    };

    async function waitForExit(timeoutSeconds: number, what: string): Promise<void> {
        if (!identity || !outputs.pidfile) {
            // Without the process identity, QMP going away is the sign.
            const deadline = Date.now() + timeoutSeconds * 1000;
            while (Date.now() < deadline) {
                if (
                    !(await site.qmp("query-status", undefined, 1000).then(
                        () => true,
                        () => false,
                    ))
                )
                    return;
                await sleep(200);
            }
            throw new MachineError(`${what} within ${timeoutSeconds} s`);
        }
        if (!(await site.waitUntilGone(identity, outputs.pidfile, timeoutSeconds * 1000))) {
            const live = await site.liveness(identity, outputs.pidfile);
            throw new MachineError(
                `${what} within ${timeoutSeconds} s (${live.alive ? "QEMU still runs" : live.reason}). Last lines of the serial console:\n${await site.serialTail()}`,
            );
        }
    }

    return machine;
}

async function guestListening(execute: Machine["execute"]): Promise<Set<number>> {
    const r = await execute("cat /proc/net/tcp /proc/net/tcp6 2>/dev/null; true", { timeoutSeconds: 30 });
    return listeningTcpPorts(r.stdout);
}

function checkPort(port: number): void {
    if (!Number.isInteger(port) || port < 1 || port > 65535)
        throw new Error(`port must be a whole number from 1 to 65535, got ${port}`);
}

function tail(text: string): string {
    const t = text.length > ERROR_TAIL_CHARS ? "…" + text.slice(-ERROR_TAIL_CHARS) : text;
    return t ? JSON.stringify(t) : "(empty)";
}

function sleep(ms: number): Promise<void> {
    return new Promise((resolve) => setTimeout(resolve, ms));
}
