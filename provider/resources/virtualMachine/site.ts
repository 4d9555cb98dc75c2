import { randomBytes } from "node:crypto";
import { statSync, type Stats } from "node:fs";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import { parseHost, withAccess, type HostSpec } from "../../core/hostSpec";
import { shellQuote } from "../../core/shellQuote";
import {
    checkOurDaemon,
    judgeOurDaemon,
    parseProcStat,
    waitUntilGone,
    type Liveness,
    type ProcessIdentity,
} from "../../host/qemu/qemuProcess";
import { qmpOnce } from "../../host/qemu/qmp";
import { consoleTail, SERIAL_LOG_TAIL_BYTES } from "../../host/qemu/serialWatch";
import { HostAccessError, HostUnreachableError, type SshConnection } from "../../host/ssh/sshConnection";
import {
    deleteSnapshot,
    listSnapshots,
    restoreSnapshot,
    saveSnapshot,
    type SnapshotInfo,
    type SnapshotTarget,
} from "../../host/qemu/snapshots";
import { connectionFor, runnerFor } from "../../host/ssh/runnerClient";
import type { VmProbe } from "./agentChannel";
import { serialTail } from "./ready";

/**
 * Where a running VM's files and sockets are, seen from this process: on this machine, or on the
 * far host a VirtualMachine placed there names in its `host` output. Its outputs (qmpSocket,
 * agentSocket, serialLog, pidfile) are paths on that host; a far host's sockets are reached
 * through OpenSSH unix-socket forwards (`-L here.sock:there.sock` over the one master, into the
 * connection's private 0700 directory), its files and /proc read with commands run over it.
 * The test API (sdk/machine.ts) acts on a VM only through this, so the same checks run against
 * local and remote VMs.
 */
export interface VmSite extends VmProbe {
    /** The QMP command's answer; a far host's QMP through a forward. */
    qmp(command: string, args?: Record<string, unknown>, timeoutMs?: number): Promise<unknown>;
    /** A path here that connects to the VM's agent socket. */
    agentSocket(): Promise<string>;
    /** The whole serial log, as text. */
    serialText(): Promise<string>;
    /** A QMP screendump of the display, as PPM bytes (written where QEMU runs, brought here). */
    screendump(): Promise<Buffer>;
    /** Polls until the QEMU named by `identity` is gone; true when it is, false at the deadline. */
    waitUntilGone(identity: ProcessIdentity, pidfile: string, timeoutMs: number): Promise<boolean>;
    /** The VM's snapshots, worked on where it runs (their records are in its directory there). */
    snapshots: SnapshotOps;
}

/** host/qemu/snapshots.ts's operations, here or through a far host's runner. */
export interface SnapshotOps {
    save(target: SnapshotTarget, name: string, opts?: { timeoutSeconds?: number }): Promise<SnapshotInfo>;
    restore(target: SnapshotTarget, name: string, opts?: { timeoutSeconds?: number }): Promise<{ loadMs: number }>;
    remove(target: SnapshotTarget, name: string, opts?: { timeoutSeconds?: number }): Promise<void>;
    list(target: SnapshotTarget): Promise<SnapshotInfo[]>;
}

export const LOCAL_SNAPSHOTS: SnapshotOps = {
    save: saveSnapshot,
    restore: restoreSnapshot,
    remove: deleteSnapshot,
    list: listSnapshots,
};

/** The same operations run by the runner on the VM's host (provider/runner/main.ts serves "Snapshots"). */
function remoteSnapshots(spec: HostSpec): SnapshotOps {
    const call = (method: string, args: unknown[]) => runnerFor(spec).then((r) => r.call("Snapshots", method, args));
    return {
        save: (target, name, opts) => call("save", [target, name, opts ?? {}]),
        restore: (target, name, opts) => call("restore", [target, name, opts ?? {}]),
        remove: (target, name, opts) => call("remove", [target, name, opts ?? {}]),
        list: (target) => call("list", [target]),
    };
}

/** The outputs a site is found from: the VM's paths, and its placement when it has one. */
export interface SiteTarget {
    qmpSocket: string;
    serialLog: string;
    agentSocket?: string;
    host?: unknown;
    hostAccess?: unknown;
}

export function siteOf(target: SiteTarget): VmSite {
    if (target.host === undefined || target.host === null) return localSite(target);
    const spec = parseHost(target.host, "host");
    if (!spec) return localSite(target);
    return new SshSite(withAccess(spec, target.hostAccess), target);
}

function localSite(target: SiteTarget): VmSite {
    return {
        liveness: checkOurDaemon,
        snapshots: LOCAL_SNAPSHOTS,
        qmp: (command, args, timeoutMs) => qmpOnce(target.qmpSocket, command, args, timeoutMs),
        agentSocket: async () => target.agentSocket!,
        serialText: () => readFile(target.serialLog, "utf8"),
        serialTail: () => serialTail(target.serialLog),
        async screendump() {
            const dir = await mkdtemp(path.join(os.tmpdir(), "pq-screen-"));
            try {
                const ppm = path.join(dir, "screen.ppm");
                await qmpOnce(target.qmpSocket, "screendump", { filename: ppm, format: "ppm" }, 10_000);
                return await readFile(ppm);
            } finally {
                await rm(dir, { recursive: true, force: true });
            }
        },
        waitUntilGone,
    };
}

/** The key files the VM's resource named (its `hostAccess` output) go with its URL. */
/** Each far-host command's deadline: the serial log and a screendump are small, but the link may be slow. */
const REMOTE_COMMAND_MS = 30_000;
/** How often a far QEMU's exit is polled: each look is an SSH round trip. */
const REMOTE_POLL_MS = 250;
/** How many times (100 ms apart) a forward waits for a master that is exiting to be replaced. */
const MASTER_GONE_TRIES = 20;

/**
 * The forwards made over each connection: remote socket → local socket, and which master made
 * it (the control socket's inode and change time: a restarted master makes a new socket and has
 * none of the old forwards).
 * Shared by every attach in the process, so attaching again costs no new forward.
 */
const forwardsOf = new WeakMap<SshConnection, Map<string, { local: Promise<string>; master: string }>>();

class SshSite implements VmSite {
    readonly where: string;
    readonly snapshots: SnapshotOps;
    private readonly connection: SshConnection;

    constructor(
        spec: HostSpec,
        private readonly target: SiteTarget,
    ) {
        this.where = `host ${spec.url}`;
        this.connection = connectionFor(spec);
        this.snapshots = remoteSnapshots(spec);
    }

    /** A local socket forwarded to `remote` over the live master (made again after the master was). */
    private async forward(remote: string): Promise<string> {
        let st = await this.liveMaster();
        // No control socket: a master on its way out that this process has not seen exit yet; open() starts a new one once it has.
        for (let i = 0; !st && i < MASTER_GONE_TRIES; i++) {
            await new Promise((r) => setTimeout(r, 100));
            st = await this.liveMaster();
        }
        const master = st ? `${st.ino}:${st.ctimeMs}` : "";
        let forwards = forwardsOf.get(this.connection);
        if (!forwards) forwardsOf.set(this.connection, (forwards = new Map()));
        const known = forwards.get(remote);
        if (known && known.master === master) return known.local;
        const local = this.connection.privatePath(`fwd-${randomBytes(6).toString("hex")}.sock`);
        const entry = { local: this.connection.forwardUnixSocket(local, remote).then(() => local), master };
        entry.local.catch(() => forwards!.get(remote) === entry && forwards!.delete(remote));
        forwards.set(remote, entry);
        return entry.local;
    }

    private async liveMaster(): Promise<Stats | undefined> {
        await this.connection.open();
        return statSync(this.connection.controlPath(), { throwIfNoEntry: false });
    }

    async qmp(command: string, args?: Record<string, unknown>, timeoutMs?: number): Promise<unknown> {
        return qmpOnce(await this.forward(this.target.qmpSocket), command, args, timeoutMs);
    }

    agentSocket(): Promise<string> {
        return this.forward(this.target.agentSocket!);
    }

    /** Runs `command` on the far host; a non-zero exit is an error that names the host. */
    private async run(what: string, command: string): Promise<string> {
        const r = await this.connection.run(command, { timeoutMs: REMOTE_COMMAND_MS });
        if (r.exitCode !== 0) throw new Error(`${this.where}: ${what}: ${r.stderr.trim() || `exit ${r.exitCode}`}`);
        return r.stdout;
    }

    async serialText(): Promise<string> {
        // The x after the log keeps its last newline (the command runner strips a final one).
        const out = await this.run(
            `cannot read the serial log ${this.target.serialLog}`,
            `cat -- ${shellQuote(this.target.serialLog)} && printf x`,
        );
        return out.slice(0, -1);
    }

    async serialTail(): Promise<string> {
        const log = shellQuote(this.target.serialLog);
        let out: string;
        try {
            // The size first (to know whether the tail starts mid-file), then the last bytes.
            out = await this.run("serial log", `stat -c %s -- ${log} && tail -c ${SERIAL_LOG_TAIL_BYTES} -- ${log}`);
        } catch (err) {
            // A tail goes into other errors: it says the host is out of reach rather than throwing.
            if (err instanceof HostUnreachableError || err instanceof HostAccessError)
                return `(the serial log cannot be read: ${err.message})`;
            return "(no serial log)";
        }
        const nl = out.indexOf("\n");
        return consoleTail(out.slice(nl + 1), Number(out.slice(0, nl)) > SERIAL_LOG_TAIL_BYTES);
    }

    async screendump(): Promise<Buffer> {
        // QEMU writes the dump on its own host, into a private directory made there; it comes back base64 (ssh carries text here).
        const dir = (
            await this.run(
                "cannot make a directory for the screendump",
                "umask 077 && mktemp -d /tmp/pq-screen-XXXXXXXX",
            )
        ).trim();
        const ppm = `${dir}/screen.ppm`;
        try {
            await this.qmp("screendump", { filename: ppm, format: "ppm" }, 10_000);
            return Buffer.from(
                await this.run("cannot read the screendump", `base64 -w0 -- ${shellQuote(ppm)}`),
                "base64",
            );
        } finally {
            await this.run("cannot remove the screendump", `rm -rf -- ${shellQuote(dir)}`).catch(() => undefined);
        }
    }

    /** checkOurDaemon's judgement, from the far host's /proc read in one round trip. */
    async liveness(identity: ProcessIdentity, pidfile: string): Promise<Liveness> {
        const pid = identity.pid;
        if (!Number.isInteger(pid) || pid <= 0) throw new Error(`pid must be a process id, got ${JSON.stringify(pid)}`);
        const out = await this.run(
            "cannot read /proc",
            `cat /proc/sys/kernel/random/boot_id; echo '--stat'; cat /proc/${pid}/stat 2>/dev/null; echo; echo '--cmdline'; tr '\\0' '\\n' < /proc/${pid}/cmdline 2>/dev/null; true`,
        );
        const [bootId, rest = ""] = out.split("\n--stat\n");
        const [stat = "", cmdline = ""] = rest.split("\n--cmdline\n");
        return judgeOurDaemon(identity, pidfile, {
            bootId: async () => bootId.trim(),
            stat: async () => (stat.trim() ? parseProcStat(stat.trim()) : undefined),
            cmdline: async () => (cmdline ? cmdline.split("\n").filter((s) => s.length > 0) : undefined),
        });
    }

    async waitUntilGone(identity: ProcessIdentity, pidfile: string, timeoutMs: number): Promise<boolean> {
        const deadline = Date.now() + timeoutMs;
        for (;;) {
            if (!(await this.liveness(identity, pidfile)).alive) return true;
            if (Date.now() >= deadline) return false;
            await new Promise((r) => setTimeout(r, REMOTE_POLL_MS));
        }
    }
}
