import { writeSync } from "node:fs";
import { stat } from "node:fs/promises";
/**
 * What every guest-agent transport offers: run one command in the guest and get its exit code
 * and output. One module per transport implements it (shellChannel.ts, qgaChannel.ts).
 */

export interface ExecOptions {
    /** Bytes fed to the command's stdin, or a host file streamed there. */
    stdin?: Buffer | string | { file: string };
    env?: Record<string, string>;
    /** Killed in the guest after this long (where the transport can); default 60. */
    timeoutSeconds?: number;
    /** Stream stdout to this host file (created 0600) instead of memory; needed beyond `maxOutputBytes`. */
    stdoutFile?: string;
    /** Output held in memory is refused above this; default 16 MiB (qemu-ga's own cap). */
    maxOutputBytes?: number;
    /** Give up waiting for the reply sooner than the timeout and its grace (readiness probes). */
    replyWithinMs?: number;
}

export interface ExecResult {
    exitCode: number;
    /** Empty when streamed to `stdoutFile`. */
    stdout: Buffer;
    stderr: Buffer;
    /** How many bytes of stdout the command wrote (also when streamed to a file). */
    stdoutBytes: number;
}

export interface GuestChannel {
    readonly kind: "shell" | "qga";
    execute(command: string, opts?: ExecOptions): Promise<ExecResult>;
    /** Transports with their own file transfer (qga's guest-file-*); others copy through cat. */
    copyIn?(hostPath: string, guestPath: string): Promise<void>;
    copyOut?(guestPath: string, hostPath: string): Promise<void>;
    /** Drops the connection; a later execute connects again. */
    close(): void;
}

export const DEFAULT_EXEC_TIMEOUT_SECONDS = 60;
export const MAX_IN_MEMORY_OUTPUT = 16 * 1024 * 1024;

/** Why a command gave no result; `kind` lets callers (and tests) tell the cases apart. */
export type ChannelErrorKind = "timeout" | "unanswered" | "closed" | "too-large" | "protocol" | "busy";

export class GuestChannelError extends Error {
    constructor(
        readonly kind: ChannelErrorKind,
        message: string,
        readonly partial?: { stdout: Buffer; stderr: Buffer },
    ) {
        super(message);
        this.name = "GuestChannelError";
    }
}

/** Describes the VM's state for an error: QEMU gone, paused or running; with the serial tail. */
export type Diagnose = () => Promise<string>;

/**
 * One queue per socket path in this process: QEMU serves one client per chardev at a time, and
 * two requests on one port would interleave their bytes, so every caller waits its turn.
 */
const queues = new Map<string, Promise<unknown>>();

export function serialised<T>(key: string, task: () => Promise<T>): Promise<T> {
    const before = queues.get(key) ?? Promise.resolve();
    const run = before.then(task, task);
    const tail = run.catch(() => undefined);
    queues.set(key, tail);
    void tail.then(() => {
        if (queues.get(key) === tail) queues.delete(key);
    });
    return run;
}

/** Writes all of `data` to `fd` (writeSync may take less than it is given). */
export function writeAllSync(fd: number, data: Buffer): void {
    let at = 0;
    while (at < data.length) at += writeSync(fd, data, at, data.length - at);
}

/** The size of a file given as `stdin.file`, refused unless it is a regular file: a FIFO would block the channel. */
export async function stdinFileSize(file: string): Promise<number> {
    const st = await stat(file);
    if (!st.isFile()) throw new Error(`stdin.file ${file} is not a regular file`);
    return st.size;
}
