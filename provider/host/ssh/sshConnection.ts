import { spawn, type ChildProcess } from "node:child_process";
import { closeSync, mkdtempSync, openSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import type { HostSpec } from "../../core/hostSpec";
import { diesWithUs, runTool, type ToolResult } from "../process/toolRun";

/**
 * One OpenSSH connection per far host and provider process. OpenSSH rather than an SSH library
 * in JavaScript because it is what users already trust and configure: their ~/.ssh/config
 * (ProxyJump, certificates, agents), their known_hosts, and the same `ssh` terraform-provider-libvirt's
 * qemu+ssh:// runs. Its ControlMaster multiplexes every session over one authenticated
 * connection (each later session costs a round trip, not a handshake), and it forwards unix
 * sockets (`-L local.sock:remote.sock`) for the QMP and guest-agent sockets.
 *
 * Host keys are checked strictly and never prompted for (BatchMode): an unknown or changed key
 * is an error that says how to trust it. The master runs under setpriv --pdeathsig, so it dies
 * with the provider; its control socket lives in a 0700 directory of this process.
 */

/** The host could not be reached at all (refused, timed out, no route, no name): nothing was done there. */
export class HostUnreachableError extends Error {
    constructor(
        readonly url: string,
        detail: string,
    ) {
        super(`host ${url} is unreachable: ${detail}`);
        this.name = "HostUnreachableError";
    }
}

/** ssh reached the host but would not go on: host key, authentication, configuration. */
export class HostAccessError extends Error {
    constructor(message: string) {
        super(message);
        this.name = "HostAccessError";
    }
}

/** How long the master may take to connect and authenticate (ssh's own ConnectTimeout is inside it). */
const CONNECT_DEADLINE_MS = 30_000;
const CONNECT_TIMEOUT_S = 15;
/** A dead connection is noticed within 3 × 5 s: every session on it then fails instead of waiting. */
const ALIVE_INTERVAL_S = 5;
const ALIVE_COUNT = 3;

/** How often a starting master is looked at: its control socket appears when it has authenticated. */
const MASTER_POLL_MS = 20;
const DIR_PREFIX = "pulumi-qemu-ssh-";

const open = new Set<SshConnection>();
let exitHook = false;

/**
 * A process stopped by a signal (the engine stops plugins with SIGTERM) runs no exit handler:
 * the masters die with it (pdeathsig) but their directories stay. Each directory is named after
 * its process, so the next process removes those of processes that are gone.
 */
function sweepDirsOfGoneProcesses(): void {
    const tmp = os.tmpdir();
    let names: string[];
    try {
        names = readdirSync(tmp);
    } catch {
        return;
    }
    for (const name of names) {
        const m = new RegExp(`^${DIR_PREFIX}(\\d+)-`).exec(name);
        if (!m || Number(m[1]) === process.pid) continue;
        try {
            const st = statSync(path.join(tmp, name));
            if (!st.isDirectory() || st.uid !== process.getuid?.()) continue;
            process.kill(Number(m[1]), 0);
        } catch (err) {
            if ((err as NodeJS.ErrnoException).code === "ESRCH")
                rmSync(path.join(tmp, name), { recursive: true, force: true });
        }
    }
}

export class SshConnection {
    private readonly dir: string;
    private master?: ChildProcess;
    private opening?: Promise<void>;

    constructor(readonly spec: HostSpec) {
        if (!exitHook) {
            exitHook = true;
            sweepDirsOfGoneProcesses();
            process.once("exit", () => {
                for (const c of open) c.closeSync();
            });
        }
        this.dir = mkdtempSync(path.join(os.tmpdir(), `${DIR_PREFIX}${process.pid}-`));
        open.add(this);
    }

    /** Options every ssh invocation to this host shares; `-S` makes sessions ride on the master. */
    options(): string[] {
        const s = this.spec;
        const o = (kv: string) => ["-o", kv];
        return [
            ...o("BatchMode=yes"),
            ...o("StrictHostKeyChecking=yes"),
            ...(s.knownHosts
                ? [...o(`UserKnownHostsFile=${s.knownHosts}`), ...o("GlobalKnownHostsFile=/dev/null")]
                : []),
            ...(s.identityFile ? ["-i", s.identityFile, ...o("IdentitiesOnly=yes")] : []),
            ...o(`ConnectTimeout=${CONNECT_TIMEOUT_S}`),
            ...o(`ServerAliveInterval=${ALIVE_INTERVAL_S}`),
            ...o(`ServerAliveCountMax=${ALIVE_COUNT}`),
            ...o(`ControlPath=${this.controlPath()}`),
            ...o("LogLevel=ERROR"),
            // Whatever ~/.ssh/config says for every host, these sessions carry JSON lines and nothing else:
            // no pty (it would echo and cut long lines), no remote command, no agent or X11 handed to the far host.
            "-T",
            ...o("RequestTTY=no"),
            ...o("RemoteCommand=none"),
            ...o("ForwardAgent=no"),
            ...o("ForwardX11=no"),
            ...o("PermitLocalCommand=no"),
            "-p",
            String(s.port),
            ...(s.user ? ["-l", s.user] : []),
        ];
    }

    controlPath(): string {
        return path.join(this.dir, "master");
    }

    /** Connects (once; later callers share the same attempt) and authenticates, or says why not. */
    open(): Promise<void> {
        // A master still starting has no control socket yet: callers wait for it rather than find none.
        if (this.opening) return this.opening;
        if (this.masterAlive()) return Promise.resolve();
        this.opening = this.startMaster().finally(() => (this.opening = undefined));
        return this.opening;
    }

    /**
     * Whether the master exits within `ms`. A lost connection ends the runner's ssh (status 255)
     * a moment before the master, whose end it is: asked at once, the master still counts as
     * alive. A runner killed by a signal also gives 255, but its master lives on.
     */
    masterGoneWithin(ms: number): Promise<boolean> {
        const m = this.master;
        if (!m || m.exitCode !== null || m.signalCode !== null) return Promise.resolve(true);
        return new Promise((resolve) => {
            const onExit = () => {
                clearTimeout(timer);
                resolve(true);
            };
            const timer = setTimeout(() => {
                m.off("exit", onExit);
                resolve(false);
            }, ms);
            m.once("exit", onExit);
        });
    }

    /** Whether the master connection is up (started, not exited). */
    masterAlive(): boolean {
        return this.master !== undefined && this.master.exitCode === null && this.master.signalCode === null;
    }

    private async startMaster(): Promise<void> {
        this.refuseMissingFiles();
        // A master killed with -9 leaves its socket, which would look like the new one being ready; the directory is ours alone.
        rmSync(this.controlPath(), { force: true });
        // Forwardings from ~/.ssh/config (LocalForward under Host *) would clash between processes: none on the master.
        const [file, argv] = diesWithUs("ssh", [
            "-M",
            "-N",
            "-o",
            "ControlMaster=yes",
            "-o",
            "ControlPersist=no",
            "-o",
            "ClearAllForwardings=yes",
            ...this.options(),
            "--",
            this.spec.hostname,
        ]);
        // stderr to a file, not a pipe, and the child unreferenced: a program that only attached to a VM can exit.
        const errFile = path.join(this.dir, "master.err");
        const errFd = openSync(errFile, "w", 0o600);
        const child = spawn(file, argv, { stdio: ["ignore", "ignore", errFd] });
        closeSync(errFd);
        child.unref();
        const stderrText = () => {
            try {
                return readFileSync(errFile, "utf8").slice(-4000);
            } catch {
                return "";
            }
        };
        const exited = new Promise<void>((resolve) => child.once("close", () => resolve()));
        const spawnFailed = new Promise<Error>((resolve) => child.once("error", resolve));
        const deadline = Date.now() + CONNECT_DEADLINE_MS;
        this.master = child;
        for (;;) {
            const ended = await Promise.race([
                exited.then(() => "exited" as const),
                spawnFailed.then((e) => e),
                sleep(MASTER_POLL_MS).then(() => "tick" as const),
            ]);
            if (ended instanceof Error)
                throw new HostAccessError(
                    `host ${this.spec.url}: cannot run ssh (${ended.message}); install OpenSSH's client (Debian: apt-get install openssh-client)`,
                );
            if (ended === "exited") throw explainSshFailure(this.spec, stderrText(), child.exitCode);
            if (this.controlSocketReady()) return;
            if (Date.now() > deadline) {
                child.kill("SIGKILL");
                throw new HostUnreachableError(this.spec.url, `no connection within ${CONNECT_DEADLINE_MS / 1000} s`);
            }
        }
    }

    private controlSocketReady(): boolean {
        try {
            return statSync(this.controlPath()).isSocket();
        } catch {
            return false;
        }
    }

    private refuseMissingFiles(): void {
        for (const [field, file] of [
            ["identityFile", this.spec.identityFile],
            ["knownHosts", this.spec.knownHosts],
        ] as const) {
            if (!file) continue;
            try {
                statSync(file);
            } catch (err) {
                throw new HostAccessError(
                    `host.${field}: cannot read ${file} (${(err as NodeJS.ErrnoException).code}); give the path of an existing file on this machine`,
                );
            }
        }
    }

    /** Runs `command` (a shell command line on the far host) to the end, over the master. */
    async run(command: string, opts: { input?: string; timeoutMs: number }): Promise<ToolResult> {
        await this.open();
        const r = await runTool("ssh", this.commandArgs(command), {
            input: opts.input,
            timeoutMs: opts.timeoutMs,
            label: `ssh ${this.spec.url}`,
        });
        // 255 is ssh's own failure (connection lost), not the command's exit status.
        if (r.exitCode === 255) throw explainSshFailure(this.spec, r.stderr, 255);
        return r;
    }

    /** ssh's arguments that run `command` on the far host through the master, with no forwarding of its own. */
    private commandArgs(command: string): string[] {
        return [
            ...this.options(),
            "-o",
            "ControlMaster=no",
            "-o",
            "ClearAllForwardings=yes",
            "--",
            this.spec.hostname,
            command,
        ];
    }

    /** Starts a long-lived session running `command` on the far host, its stdin/stdout piped to us. */
    async session(command: string): Promise<ChildProcess> {
        await this.open();
        const [file, argv] = diesWithUs("ssh", this.commandArgs(command));
        return spawn(file, argv, { stdio: ["pipe", "pipe", "pipe"] });
    }

    /** Forwards a unix socket on the far host to `localSocket` here (0600 inside our 0700 directory). */
    async forwardUnixSocket(localSocket: string, remoteSocket: string): Promise<void> {
        await this.open();
        const r = await runTool(
            "ssh",
            [...this.options(), "-O", "forward", "-L", `${localSocket}:${remoteSocket}`, "--", this.spec.hostname],
            {
                timeoutMs: 10_000,
                label: `ssh -O forward ${this.spec.url}`,
            },
        );
        if (r.exitCode !== 0)
            throw new HostAccessError(
                `host ${this.spec.url}: cannot forward ${remoteSocket}: ${r.stderr.trim() || `ssh exited ${r.exitCode}`}`,
            );
    }

    /** A fresh path in this connection's private directory (for forwarded sockets). */
    privatePath(name: string): string {
        return path.join(this.dir, name);
    }

    closeSync(): void {
        open.delete(this);
        try {
            this.master?.kill("SIGTERM");
        } catch {
            // already gone
        }
        rmSync(this.dir, { recursive: true, force: true });
    }
}

/** ssh's stderr turned into what the user should do, naming the `host` field. */
export function explainSshFailure(spec: HostSpec, stderr: string, exitCode: number | null): Error {
    const text = stderr.trim();
    const last = text.split("\n").filter(Boolean).slice(-3).join("; ") || `ssh exited with status ${exitCode}`;
    const hostArg = spec.port === 22 ? spec.hostname : `[${spec.hostname}]:${spec.port}`;
    if (/REMOTE HOST IDENTIFICATION HAS CHANGED|Host key for .* has changed/i.test(text)) {
        return new HostAccessError(
            `host ${spec.url}: its host key has CHANGED since it was trusted; refusing to connect (this can be a man-in-the-middle). ` +
                `If the host was reinstalled, check the new key's fingerprint, remove the old one with \`ssh-keygen -R '${hostArg}'\`${spec.knownHosts ? ` -f ${spec.knownHosts}` : ""} and add the new one`,
        );
    }
    if (
        /Host key verification failed|No (?:ED25519|RSA|ECDSA|\S+) host key is known|host key is not known/i.test(text)
    ) {
        return new HostAccessError(
            `host ${spec.url}: its host key is not known and pulumi-qemu checks host keys strictly. ` +
                `Check the key's fingerprint out of band, then trust it: \`ssh-keyscan -p ${spec.port} ${spec.hostname} >> ${spec.knownHosts ?? "~/.ssh/known_hosts"}\`` +
                `${spec.knownHosts ? "" : " (or set host.knownHosts to a file that has it)"}`,
        );
    }
    if (/Permission denied|Too many authentication failures|no mutual signature/i.test(text)) {
        return new HostAccessError(
            `host ${spec.url}: authentication failed (${last}); ${spec.identityFile ? `check that host.identityFile ${spec.identityFile} is a key the far host's authorized_keys accepts` : "set host.identityFile or load a key into your ssh agent"}`,
        );
    }
    if (
        /Connection refused|timed out|No route to host|Could not resolve hostname|Network is unreachable|Connection closed|Connection reset|Broken pipe|not responding|kex_exchange_identification/i.test(
            text,
        ) ||
        exitCode === 255
    ) {
        return new HostUnreachableError(spec.url, last);
    }
    return new HostAccessError(`host ${spec.url}: ssh failed: ${last}`);
}

function sleep(ms: number): Promise<void> {
    return new Promise((r) => setTimeout(r, ms));
}
