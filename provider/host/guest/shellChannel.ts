import { randomBytes } from "node:crypto";
import { closeSync, openSync } from "node:fs";
import { open } from "node:fs/promises";
import * as net from "node:net";
import { encodeRequestHead, ReplyParser, shellScript, type ReplyHeader } from "../../core/shellFraming";
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
 * The host end of the "shell" agent: requests framed by core/shellFraming.ts over the unix
 * socket QEMU serves for the VM's virtio-serial port.
 *
 * QEMU accepts one client per chardev at a time, so all channels of this process on one socket
 * share one connection (and one queue). It lingers briefly after a command, since a guest whose
 * host end is disconnected polls for it (commands in a row stay fast), then is dropped so that
 * another process (a `pulumi refresh` running a GuestCommand check while a test is attached)
 * gets its turn; it never keeps a Node process alive.
 */

/** On top of the command's own timeout: the guest's reply and a slow TCG guest's forks. */
const GRACE_SECONDS = 15;
/** Time allowed per MiB moved through the port, measured well below what a TCG guest does. */
const SECONDS_PER_MIB = 1;
const CONNECT_TIMEOUT_MS = 5000;
const WRITE_CHUNK = 1024 * 1024;
/** How long an idle connection is kept for the next command before it is given up. */
const LINGER_MS = 250;

class Connection {
    sink: ((chunk: Buffer) => void) | undefined;
    closed: Error | undefined;
    private closeWaiters = new Set<(err: Error) => void>();

    private constructor(
        readonly socket: net.Socket,
        readonly socketPath: string,
    ) {
        socket.on("data", (chunk: Buffer) => {
            // Data while no request waits is a stale reply: dropped, as the next ACK scan would.
            this.sink?.(chunk);
        });
        const fail = (err: Error) => {
            if (this.closed) return;
            this.closed = err;
            for (const w of this.closeWaiters) w(err);
            this.closeWaiters.clear();
        };
        socket.on("error", (err) => fail(new Error(`agent socket ${socketPath}: ${err.message}`)));
        socket.on("close", () => fail(new Error(`the connection to the agent socket ${socketPath} closed`)));
    }

    static connect(socketPath: string): Promise<Connection> {
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
                const hint =
                    err.code === "ENOENT"
                        ? " (no such socket: is the VM running, with vm.agent set?)"
                        : err.code === "ECONNREFUSED"
                          ? " (nobody listens: QEMU is gone)"
                          : "";
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
                socket.unref();
                resolve(new Connection(socket, socketPath));
            });
        });
    }

    onClose(waiter: (err: Error) => void): () => void {
        if (this.closed) {
            waiter(this.closed);
            return () => undefined;
        }
        this.closeWaiters.add(waiter);
        return () => this.closeWaiters.delete(waiter);
    }

    async write(data: Buffer): Promise<void> {
        if (this.closed) throw this.closed;
        if (this.socket.write(data)) return;
        await new Promise<void>((resolve, reject) => {
            const off = this.onClose(reject);
            this.socket.once("drain", () => {
                off();
                resolve();
            });
        });
    }

    destroy(): void {
        this.socket.destroy();
    }
}

interface Shared {
    connection: Promise<Connection> | undefined;
    users: number;
    idle?: NodeJS.Timeout;
}

const shared = new Map<string, Shared>();

async function connectionFor(socketPath: string): Promise<Connection> {
    const entry = shared.get(socketPath)!;
    clearTimeout(entry.idle);
    if (entry.connection) {
        const existing = await entry.connection.catch(() => undefined);
        if (existing && !existing.closed) return existing;
    }
    entry.connection = Connection.connect(socketPath);
    entry.connection.catch(() => undefined);
    return entry.connection;
}

export interface ShellChannelOptions {
    /** Called to explain a guest that does not answer or a connection that broke. */
    diagnose?: Diagnose;
}

export class ShellChannel implements GuestChannel {
    readonly kind = "shell" as const;
    private open = true;

    constructor(
        readonly socketPath: string,
        private readonly opts: ShellChannelOptions = {},
    ) {
        const entry = shared.get(socketPath) ?? { connection: undefined, users: 0 };
        entry.users++;
        shared.set(socketPath, entry);
    }

    execute(command: string, opts: ExecOptions = {}): Promise<ExecResult> {
        if (!this.open) return Promise.reject(new Error(`this channel to ${this.socketPath} was closed`));
        // Validate before queueing, so bad input fails at once and names its field.
        const script = shellScript(command, opts.env);
        return serialised(this.socketPath, async () => {
            try {
                return await this.run(await connectionFor(this.socketPath), script, opts);
            } catch (err) {
                if (
                    err instanceof GuestChannelError &&
                    err.kind !== "timeout" &&
                    err.kind !== "too-large" &&
                    this.opts.diagnose
                ) {
                    const why = await this.opts.diagnose().catch((e: Error) => `(could not tell why: ${e.message})`);
                    throw new GuestChannelError(err.kind, `${err.message}. ${why}`, err.partial);
                }
                throw err;
            } finally {
                releaseLater(this.socketPath);
            }
        });
    }

    close(): void {
        if (!this.open) return;
        this.open = false;
        const entry = shared.get(this.socketPath);
        if (!entry) return;
        entry.users--;
        if (entry.users <= 0) {
            clearTimeout(entry.idle);
            shared.delete(this.socketPath);
            void entry.connection?.then(
                (c) => c.destroy(),
                () => undefined,
            );
        }
    }

    private async run(conn: Connection, script: Buffer, opts: ExecOptions): Promise<ExecResult> {
        const nonce = randomBytes(16).toString("hex");
        const timeoutSeconds = opts.timeoutSeconds ?? DEFAULT_EXEC_TIMEOUT_SECONDS;
        if (!Number.isInteger(timeoutSeconds) || timeoutSeconds < 1)
            throw new Error(`timeoutSeconds must be a whole number of seconds ≥ 1, got ${timeoutSeconds}`);
        const maxOutput = opts.maxOutputBytes ?? MAX_IN_MEMORY_OUTPUT;
        const stdin = await stdinSource(opts.stdin);

        const out: Buffer[] = [];
        const err: Buffer[] = [];
        let header: ReplyHeader | undefined;
        let outFd: number | undefined;
        let tooLarge: string | undefined;
        let deadline = Date.now() + (timeoutSeconds + GRACE_SECONDS + mib(stdin.bytes) * SECONDS_PER_MIB) * 1000;
        if (opts.replyWithinMs !== undefined) deadline = Math.min(deadline, Date.now() + opts.replyWithinMs);
        let phase = "waiting for the guest to take the request";

        let timer: NodeJS.Timeout | undefined;
        let offClose: (() => void) | undefined;
        conn.socket.ref();
        try {
            const reply = new Promise<void>((resolve, reject) => {
                const parser = new ReplyParser(nonce, {
                    ack: () => (phase = "waiting for the command to finish"),
                    header: (h) => {
                        header = h;
                        phase = "receiving the output";
                        deadline += mib(h.stdoutBytes + h.stderrBytes) * SECONDS_PER_MIB * 1000;
                        if (opts.stdoutFile) {
                            try {
                                outFd = openSync(opts.stdoutFile, "w", 0o600);
                            } catch (e) {
                                // The output is still read (and dropped) to keep the channel in step.
                                tooLarge = `stdout could not go to stdoutFile ${opts.stdoutFile}: ${(e as Error).message}`;
                            }
                        } else if (h.stdoutBytes > maxOutput)
                            tooLarge = `stdout is ${h.stdoutBytes} bytes, over the ${maxOutput}-byte limit for output held in memory; pass stdoutFile to stream it to a file`;
                        if (h.stderrBytes > maxOutput)
                            tooLarge = `stderr is ${h.stderrBytes} bytes, over the ${maxOutput}-byte limit for output held in memory`;
                    },
                    stdout: (c) => {
                        if (outFd !== undefined && !tooLarge) writeAllSync(outFd, c);
                        else if (!tooLarge) out.push(Buffer.from(c));
                    },
                    stderr: (c) => {
                        if (!tooLarge) err.push(Buffer.from(c));
                    },
                    done: resolve,
                });
                conn.sink = (chunk) => {
                    try {
                        parser.feed(chunk);
                    } catch (e) {
                        reject(
                            new GuestChannelError(
                                "protocol",
                                `the shell agent's reply on ${this.socketPath} is garbled: ${(e as Error).message}`,
                            ),
                        );
                    }
                };
                offClose = conn.onClose((e) => reject(new GuestChannelError("closed", `${e.message} while ${phase}`)));
                const tick = () => {
                    if (Date.now() >= deadline) {
                        reject(
                            new GuestChannelError(
                                "unanswered",
                                `the guest's shell agent did not answer on ${this.socketPath} within ${opts.replyWithinMs !== undefined ? `${opts.replyWithinMs} ms` : `${timeoutSeconds + GRACE_SECONDS} s`} (${phase}${header || phase.startsWith("waiting for the command") ? "" : "; another process holding the socket would also keep it waiting: QEMU serves one client at a time"}); the next command resynchronises`,
                            ),
                        );
                    } else timer = setTimeout(tick, Math.min(1000, deadline - Date.now()));
                };
                timer = setTimeout(tick, Math.min(1000, deadline - Date.now()));
            });
            reply.catch(() => undefined);
            await Promise.race([
                reply,
                this.send(conn, encodeRequestHead({ nonce, script, stdinBytes: stdin.bytes, timeoutSeconds }), stdin),
            ]);
            await reply;
        } finally {
            clearTimeout(timer);
            offClose?.();
            conn.sink = undefined;
            conn.socket.unref();
            if (outFd !== undefined) closeSync(outFd);
        }
        const h = header!;
        const stdout = Buffer.concat(out);
        const stderr = Buffer.concat(err);
        if (tooLarge && opts.stdoutFile && outFd === undefined)
            throw new Error(`the command ran (exit ${h.exitCode}) but its ${tooLarge}`);
        if (tooLarge)
            throw new GuestChannelError(
                "too-large",
                `the command's ${tooLarge}; nothing was truncated, the output was dropped`,
            );
        if (h.status === "timeout") {
            throw new GuestChannelError(
                "timeout",
                `the command did not finish within ${timeoutSeconds} s and was killed in the guest (with everything it started)`,
                { stdout, stderr },
            );
        }
        return { exitCode: h.exitCode, stdout, stderr, stdoutBytes: h.stdoutBytes };
    }

    private async send(conn: Connection, head: Buffer, stdin: StdinSource): Promise<void> {
        await conn.write(head);
        if (stdin.buffer) {
            for (let at = 0; at < stdin.buffer.length; at += WRITE_CHUNK)
                await conn.write(stdin.buffer.subarray(at, at + WRITE_CHUNK));
            return;
        }
        if (!stdin.file) return;
        const fh = await open(stdin.file, "r");
        try {
            let left = stdin.bytes;
            while (left > 0) {
                const buf = Buffer.alloc(Math.min(WRITE_CHUNK, left));
                const { bytesRead } = await fh.read(buf, 0, buf.length);
                if (bytesRead === 0) throw new Error(`stdin file ${stdin.file} shrank while it was sent`);
                await conn.write(buf.subarray(0, bytesRead));
                left -= bytesRead;
            }
        } finally {
            await fh.close();
        }
    }
}

interface StdinSource {
    bytes: number;
    buffer?: Buffer;
    file?: string;
}

async function stdinSource(stdin: ExecOptions["stdin"]): Promise<StdinSource> {
    if (stdin === undefined) return { bytes: 0 };
    if (typeof stdin === "string") {
        const buffer = Buffer.from(stdin, "utf8");
        return { bytes: buffer.length, buffer };
    }
    if (Buffer.isBuffer(stdin)) return { bytes: stdin.length, buffer: stdin };
    return { bytes: await stdinFileSize(stdin.file), file: stdin.file };
}

/** Drops the connection once nobody has used it for LINGER_MS. */
function releaseLater(socketPath: string): void {
    const entry = shared.get(socketPath);
    if (!entry?.connection) return;
    clearTimeout(entry.idle);
    const connection = entry.connection;
    entry.idle = setTimeout(() => {
        if (entry.connection !== connection) return;
        entry.connection = undefined;
        void connection.then(
            (c) => c.destroy(),
            () => undefined,
        );
    }, LINGER_MS);
    entry.idle.unref();
}

function mib(bytes: number): number {
    return Math.ceil(bytes / (1024 * 1024));
}
