import { randomInt } from "node:crypto";
import { closeSync, openSync } from "node:fs";
import { open, stat } from "node:fs/promises";
import * as net from "node:net";
import { firstPollDelay, nextPace, PACE_FIRST_MS, pollInterval, POLL_MAX_MS, QUICK_PACES } from "../../core/pollPace";
import { shellQuote, shellScript } from "../../core/shellFraming";
import {
    DEFAULT_EXEC_TIMEOUT_SECONDS,
    GuestChannelError,
    MAX_IN_MEMORY_OUTPUT,
    serialised,
    stdinFileSize,
    writeAllSync,
    type Diagnose,
    type ExecOptions,
    type ExecResult,
    type GuestChannel,
} from "./guestChannel";

/**
 * The host end of qemu-guest-agent: QMP-style JSON over the VM's virtio-serial port. A new
 * connection resynchronises with `guest-sync-delimited` (we send 0xFF to reset the agent's
 * parser; its answer comes after a 0xFF, and everything before it — such as the late answer to
 * a request we gave up on — is dropped). A connection whose last operation went cleanly is kept
 * for LINGER_MS and used again without a sync (commands in a row skip a connect and a round
 * trip), then dropped so no idle connection keeps another process out (QEMU serves one client
 * per chardev); one that failed in any way is dropped at once.
 *
 * Commands run as `setsid /bin/sh -c SCRIPT` through guest-exec (a guest without setsid: plain
 * `/bin/sh -c`), polled with guest-exec-status. Polls are not free: each is a message qemu-ga
 * wakes for and parses on the guest's one vCPU, so polling every few ms slowed a `true` under
 * TCG from ~55 ms to ~400 ms (measured on the Debian guest). So the schedule learns, per
 * socket, how long a quick command takes there (`pace`), asks first just before that, then
 * every pace/4 ms, and backs off to POLL_MAX_MS once the command has run several paces. qemu-ga
 * keeps at most 16 MiB of a command's output and then says "truncated": that is an error here,
 * never a silently short result; `stdoutFile` sends stdout to a guest temp file instead and
 * copies it out with guest-file-read.
 */

const CONNECT_TIMEOUT_MS = 5000;
/** How long a connection is kept for the next operation. */
const LINGER_MS = 250;
const SYNC_TIMEOUT_MS = 10_000;
const GRACE_SECONDS = 15;
/** guest-file-read/write chunk: base64 in JSON, well under qemu-ga's message limits. */
const FILE_CHUNK = 4 * 1024 * 1024;

export interface QgaChannelOptions {
    diagnose?: Diagnose;
}

interface Reply {
    return?: any;
    error?: { class: string; desc: string };
    id?: unknown;
}

/** One connection: JSON lines in, replies handed out in order. */
class QgaConnection {
    private buffer: Buffer = Buffer.alloc(0);
    private synced = false;
    private seenDelimiter = false;
    private syncWaiter: { id: number; resolve(): void } | undefined;
    private readonly replies: Reply[] = [];
    private waiter: (() => void) | undefined;
    closed: Error | undefined;

    private constructor(
        private readonly socket: net.Socket,
        readonly socketPath: string,
    ) {
        socket.on("data", (chunk: Buffer) => this.receive(chunk));
        const fail = (err: Error) => {
            this.closed ??= err;
            this.waiter?.();
        };
        socket.on("error", (err) =>
            fail(new GuestChannelError("closed", `agent socket ${socketPath}: ${err.message}`)),
        );
        socket.on("close", () =>
            fail(new GuestChannelError("closed", `the connection to the agent socket ${socketPath} closed`)),
        );
    }

    static connect(socketPath: string): Promise<QgaConnection> {
        return new Promise((resolve, reject) => {
            const socket = net.createConnection({ path: socketPath });
            const timer = setTimeout(() => {
                socket.destroy();
                reject(
                    new GuestChannelError(
                        "unanswered",
                        `could not connect to the agent socket ${socketPath} within ${CONNECT_TIMEOUT_MS} ms`,
                    ),
                );
            }, CONNECT_TIMEOUT_MS);
            socket.once("error", (err: NodeJS.ErrnoException) => {
                clearTimeout(timer);
                const hint = err.code === "ENOENT" ? " (no such socket: is the VM running, with vm.agent set?)" : "";
                reject(
                    new GuestChannelError(
                        "closed",
                        `cannot connect to the agent socket ${socketPath}: ${err.message}${hint}`,
                    ),
                );
            });
            socket.once("connect", () => {
                clearTimeout(timer);
                socket.removeAllListeners("error");
                resolve(new QgaConnection(socket, socketPath));
            });
        });
    }

    private receive(chunk: Buffer): void {
        this.buffer = this.buffer.length ? Buffer.concat([this.buffer, chunk]) : chunk;
        if (!this.synced) {
            // Everything before the agent's 0xFF is stale; our sync was the last thing sent, so
            // its answer follows the last 0xFF (and may arrive in several chunks).
            const ff = this.buffer.lastIndexOf(0xff);
            if (ff >= 0) {
                this.buffer = this.buffer.subarray(ff + 1);
                this.seenDelimiter = true;
            } else if (!this.seenDelimiter) {
                this.buffer = Buffer.alloc(0);
                return;
            }
        }
        for (;;) {
            const nl = this.buffer.indexOf(0x0a);
            if (nl < 0) break;
            const line = this.buffer.subarray(0, nl).toString("utf8").trim();
            this.buffer = this.buffer.subarray(nl + 1);
            if (!line) continue;
            let msg: Reply;
            try {
                msg = JSON.parse(line);
            } catch {
                continue;
            }
            if (!this.synced) {
                if (this.syncWaiter && msg.return === this.syncWaiter.id) {
                    this.synced = true;
                    this.syncWaiter.resolve();
                }
                continue;
            }
            this.replies.push(msg);
        }
        this.waiter?.();
    }

    async sync(): Promise<void> {
        const id = randomInt(1, 2 ** 31);
        const done = new Promise<void>((resolve) => (this.syncWaiter = { id, resolve }));
        this.socket.write(
            Buffer.concat([
                Buffer.from([0xff]),
                Buffer.from(JSON.stringify({ execute: "guest-sync-delimited", arguments: { id } }) + "\n"),
            ]),
        );
        await this.within(done, SYNC_TIMEOUT_MS, "to guest-sync-delimited");
    }

    /** One command and its reply; `deadline` bounds the wait. */
    async execute(command: string, args: Record<string, unknown> | undefined, deadline: number): Promise<any> {
        if (this.closed) throw this.closed;
        this.socket.write(JSON.stringify(args ? { execute: command, arguments: args } : { execute: command }) + "\n");
        const reply = await this.within(this.next(), Math.max(1, deadline - Date.now()), `to ${command}`);
        if (reply.error)
            throw new GuestChannelError(
                "protocol",
                `qemu-ga ${command} failed: ${reply.error.class}: ${reply.error.desc}`,
            );
        return reply.return;
    }

    private async next(): Promise<Reply> {
        for (;;) {
            const r = this.replies.shift();
            if (r) return r;
            if (this.closed) throw this.closed;
            await new Promise<void>((resolve) => (this.waiter = resolve));
            this.waiter = undefined;
        }
    }

    private within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
        return new Promise<T>((resolve, reject) => {
            const timer = setTimeout(
                () =>
                    reject(
                        new GuestChannelError(
                            "unanswered",
                            `qemu-ga on ${this.socketPath} did not answer ${what} within ${ms} ms`,
                        ),
                    ),
                ms,
            );
            p.then(
                (v) => (clearTimeout(timer), resolve(v)),
                (e) => (clearTimeout(timer), reject(e)),
            );
        });
    }

    destroy(): void {
        this.socket.destroy();
    }

    /** A kept connection must not keep Node alive, nor one in use be let go. */
    hold(held: boolean): void {
        if (held) this.socket.ref();
        else this.socket.unref();
    }
}

/** The connection kept after a clean operation, per socket path, until LINGER_MS pass unused. */
const kept = new Map<string, { conn: QgaConnection; timer: NodeJS.Timeout }>();
/** Sockets whose guest has no setsid (guest-exec could not spawn it): plain sh there. */
const noSetsid = new Set<string>();
/** Per socket: about how long a quick command takes there, learnt from the commands before (core/pollPace.ts). */
const pace = new Map<string, number>();

export class QgaChannel implements GuestChannel {
    readonly kind = "qga" as const;

    constructor(
        readonly socketPath: string,
        private readonly opts: QgaChannelOptions = {},
    ) {}

    execute(command: string, opts: ExecOptions = {}): Promise<ExecResult> {
        const script = shellScript(command, opts.env).toString("utf8");
        return this.session((conn) => this.run(conn, script, opts));
    }

    /** Copies a host file into the guest with guest-file-open/write/close. */
    copyIn(hostPath: string, guestPath: string): Promise<void> {
        return this.session(async (conn) => {
            const size = (await stat(hostPath)).size;
            const deadline = Date.now() + (60 + Math.ceil(size / (1024 * 1024)) * 2) * 1000;
            const handle = await conn.execute("guest-file-open", { path: guestPath, mode: "w" }, deadline);
            const fh = await open(hostPath, "r");
            try {
                for (;;) {
                    const buf = Buffer.alloc(FILE_CHUNK);
                    const { bytesRead } = await fh.read(buf, 0, buf.length);
                    if (bytesRead === 0) break;
                    const w = await conn.execute(
                        "guest-file-write",
                        { handle, "buf-b64": buf.subarray(0, bytesRead).toString("base64") },
                        deadline,
                    );
                    if (w.count !== bytesRead)
                        throw new GuestChannelError(
                            "protocol",
                            `guest-file-write wrote ${w.count} of ${bytesRead} bytes to ${guestPath}`,
                        );
                }
            } finally {
                await fh.close();
                await conn.execute("guest-file-close", { handle }, deadline).catch(() => undefined);
            }
        });
    }

    /** Copies a guest file to the host (created 0600) with guest-file-open/read/close. */
    copyOut(guestPath: string, hostPath: string): Promise<void> {
        return this.session(
            async (conn) => void (await this.readGuestFile(conn, guestPath, hostPath, Date.now() + 600_000)),
        );
    }

    close(): void {
        // Only a connection kept for the next operation is held: let it go now.
        dropKept(this.socketPath);
    }

    private session<T>(work: (conn: QgaConnection) => Promise<T>): Promise<T> {
        return serialised(this.socketPath, async () => {
            let conn: QgaConnection | undefined;
            let clean = false;
            try {
                const reuse = kept.get(this.socketPath);
                if (reuse) {
                    clearTimeout(reuse.timer);
                    kept.delete(this.socketPath);
                }
                if (reuse && !reuse.conn.closed) conn = reuse.conn;
                else {
                    reuse?.conn.destroy();
                    conn = await QgaConnection.connect(this.socketPath);
                    await conn.sync();
                }
                conn.hold(true);
                const result = await work(conn);
                clean = true;
                return result;
            } catch (err) {
                if (
                    err instanceof GuestChannelError &&
                    (err.kind === "unanswered" || err.kind === "closed") &&
                    this.opts.diagnose
                ) {
                    const why = await this.opts.diagnose().catch((e: Error) => `(could not tell why: ${e.message})`);
                    throw new GuestChannelError(err.kind, `${err.message}. ${why}`, err.partial);
                }
                throw err;
            } finally {
                // Only a connection whose every request was answered is in step for the next one.
                if (conn && clean && !conn.closed) keep(this.socketPath, conn);
                else conn?.destroy();
            }
        });
    }

    private async run(conn: QgaConnection, script: string, opts: ExecOptions): Promise<ExecResult> {
        const timeoutSeconds = opts.timeoutSeconds ?? DEFAULT_EXEC_TIMEOUT_SECONDS;
        const maxOutput = opts.maxOutputBytes ?? MAX_IN_MEMORY_OUTPUT;
        const stdin = await stdinBytes(opts.stdin);
        const hostDeadline = Date.now() + (opts.replyWithinMs ?? (timeoutSeconds + GRACE_SECONDS) * 1000);
        const guestDeadline = Date.now() + timeoutSeconds * 1000;
        // With stdoutFile, stdout goes to a guest temp file that is copied out afterwards.
        const outFile = opts.stdoutFile ? `/tmp/pq-qga-out.${process.pid}.${randomInt(1e9)}` : undefined;
        const shScript = outFile ? `exec > ${shellQuote(outFile)}\n${script}` : script;
        const input = stdin.length ? { "input-data": stdin.toString("base64") } : {};
        // In a session of its own (setsid, found on the guest's PATH), so a timeout kills all it
        // started; qemu-ga's child is no group leader, so setsid does not fork and the pid stays.
        const spawn = (withSetsid: boolean) =>
            conn.execute(
                "guest-exec",
                withSetsid
                    ? { path: "setsid", arg: ["/bin/sh", "-c", shScript], "capture-output": true, ...input }
                    : { path: "/bin/sh", arg: ["-c", shScript], "capture-output": true, ...input },
                hostDeadline,
            );
        let pid: number;
        if (noSetsid.has(this.socketPath)) ({ pid } = await spawn(false));
        else {
            try {
                ({ pid } = await spawn(true));
            } catch (err) {
                // qemu-ga could not spawn setsid (g_spawn: "No such file or directory"): this guest has none.
                if (!(
                    err instanceof GuestChannelError &&
                    err.kind === "protocol" &&
                    /setsid|No such file|not found/i.test(err.message)
                ))
                    throw err;
                noSetsid.add(this.socketPath);
                ({ pid } = await spawn(false));
            }
        }
        const started = Date.now();
        const expect = pace.get(this.socketPath) ?? PACE_FIRST_MS;
        let wait = pollInterval(expect);
        let polls = 0;
        let before = 0;
        // The first question just before a quick command would be done: not sooner, so the
        // command has the vCPU to itself meanwhile.
        await sleepMs(Math.min(firstPollDelay(expect), Math.max(0, guestDeadline - Date.now())));
        for (;;) {
            const st = await conn.execute("guest-exec-status", { pid }, hostDeadline);
            const at = Date.now() - started;
            polls++;
            if (st.exited) {
                pace.set(this.socketPath, nextPace(expect, at, before, polls));
                const stdout = Buffer.from(st["out-data"] ?? "", "base64");
                const stderr = Buffer.from(st["err-data"] ?? "", "base64");
                if (
                    st["out-truncated"] ||
                    st["err-truncated"] ||
                    stdout.length > maxOutput ||
                    stderr.length > maxOutput
                ) {
                    throw new GuestChannelError(
                        "too-large",
                        `the command's ${st["out-truncated"] || stdout.length > maxOutput ? "stdout" : "stderr"} is over the ${maxOutput}-byte limit for output held in memory (qemu-ga truncates there); pass stdoutFile to stream stdout to a file. Nothing was truncated silently: no result was returned`,
                    );
                }
                // A signal shows as the shell would report it: 128 + its number.
                const exitCode = st.signal !== undefined && st.signal !== 0 ? 128 + st.signal : (st.exitcode ?? 0);
                let stdoutBytes = stdout.length;
                if (outFile) {
                    stdoutBytes = await this.readGuestFile(conn, outFile, opts.stdoutFile!, hostDeadline + 600_000);
                    await conn
                        .execute("guest-exec", { path: "/bin/rm", arg: ["-f", outFile] }, hostDeadline + 60_000)
                        .catch(() => undefined);
                }
                return { exitCode, stdout: outFile ? Buffer.alloc(0) : stdout, stderr, stdoutBytes };
            }
            if (Date.now() >= guestDeadline) {
                // qemu-ga cannot kill what it started; a second command can.
                await conn
                    .execute(
                        "guest-exec",
                        { path: "/bin/sh", arg: ["-c", `kill -KILL -${pid} 2>/dev/null || kill -KILL ${pid}`] },
                        Date.now() + 10_000,
                    )
                    .catch(() => undefined);
                throw new GuestChannelError(
                    "timeout",
                    `the command did not finish within ${timeoutSeconds} s and was killed in the guest (pid ${pid})`,
                    { stdout: Buffer.alloc(0), stderr: Buffer.alloc(0) },
                );
            }
            before = at;
            await sleepMs(wait);
            if (Date.now() - started >= expect * QUICK_PACES) wait = Math.min(POLL_MAX_MS, Math.max(10, wait * 2));
        }
    }

    private async readGuestFile(
        conn: QgaConnection,
        guestPath: string,
        hostPath: string,
        deadline: number,
    ): Promise<number> {
        const handle = await conn.execute("guest-file-open", { path: guestPath, mode: "r" }, deadline);
        const fd = openSync(hostPath, "w", 0o600);
        let total = 0;
        try {
            for (;;) {
                const r = await conn.execute("guest-file-read", { handle, count: FILE_CHUNK }, deadline);
                const data = Buffer.from(r["buf-b64"] ?? "", "base64");
                writeAllSync(fd, data);
                total += data.length;
                if (r.eof || data.length === 0) return total;
            }
        } finally {
            closeSync(fd);
            await conn.execute("guest-file-close", { handle }, deadline).catch(() => undefined);
        }
    }
}

function keep(socketPath: string, conn: QgaConnection): void {
    conn.hold(false);
    const timer = setTimeout(() => {
        if (kept.get(socketPath)?.conn !== conn) return;
        kept.delete(socketPath);
        conn.destroy();
    }, LINGER_MS);
    timer.unref();
    kept.set(socketPath, { conn, timer });
}

function dropKept(socketPath: string): void {
    const k = kept.get(socketPath);
    if (!k) return;
    clearTimeout(k.timer);
    kept.delete(socketPath);
    k.conn.destroy();
}

function sleepMs(ms: number): Promise<void> {
    return new Promise((r) => setTimeout(r, ms));
}

async function stdinBytes(stdin: ExecOptions["stdin"]): Promise<Buffer> {
    if (stdin === undefined) return Buffer.alloc(0);
    if (typeof stdin === "string") return Buffer.from(stdin, "utf8");
    if (Buffer.isBuffer(stdin)) return stdin;
    const size = await stdinFileSize(stdin.file);
    if (size > 64 * 1024 * 1024)
        throw new Error(
            `stdin.file ${stdin.file} is ${size} bytes: qemu-ga takes stdin in one message; copy the file in with copyToGuest instead`,
        );
    const fh = await open(stdin.file, "r");
    try {
        return await fh.readFile();
    } finally {
        await fh.close();
    }
}
