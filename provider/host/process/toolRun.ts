import execa from "execa";
import { accessSync, constants } from "node:fs";
import { readFile } from "node:fs/promises";
import * as path from "node:path";
import { callDeadline } from "../callDeadline";

/**
 * One way to run an external tool (qemu-img, mkfs.ext4, debugfs, b3sum) so that it can neither
 * hang the provider nor outlive it:
 *
 * - Metadata work (qemu-img info/create) gets a hard deadline: it touches a few headers, so a
 *   minute without an answer means it is stuck (a FIFO as a backing file, a hung mount).
 * - Data work (convert, mkfs -d, b3sum) takes as long as the data needs, which no fixed deadline
 *   can guess for a 1 TiB image; instead a stall detector kills it when it has neither read nor
 *   written a byte nor used the CPU (/proc/PID/io and /proc/PID/stat) for `stallMs`. Progress by
 *   work done, not by file size, because copying a sparse image's zeros grows nothing.
 * - It runs under `setpriv --pdeathsig KILL` (util-linux): the kernel kills it when the provider
 *   dies, even by kill -9, so a crash leaves no mkfs.ext4 or qemu-img writing into a temp file.
 */

export class ToolTimeoutError extends Error {
    constructor(
        readonly command: string,
        readonly why: string,
    ) {
        super(`${command} ${why} and was stopped`);
        this.name = "ToolTimeoutError";
    }
}

export interface ToolRunOptions {
    /** Kill after this long, whatever it is doing. */
    timeoutMs?: number;
    /** Kill when it has read and written nothing for this long. */
    stallMs?: number;
    /** Text for stdin; stdin is closed (never inherited) without it. */
    input?: string;
    env?: NodeJS.ProcessEnv;
    extendEnv?: boolean;
    /** How the command is named in errors (defaults to the command and its arguments). */
    label?: string;
}

export interface ToolResult {
    exitCode: number;
    stdout: string;
    stderr: string;
    /** Set when the tool could not be started at all (missing binary…). */
    spawnError?: string;
    signal?: string;
}

/** How often the stall detector looks at /proc/PID/io. */
const STALL_POLL_MS = 500;

let setprivPath: string | null | undefined;

/** util-linux's setpriv, when this host has it (every Debian and most Linux hosts do). */
export function setpriv(): string | null {
    if (setprivPath === undefined) setprivPath = process.platform === "linux" ? findInPath("setpriv") : null;
    return setprivPath;
}

/** The executable `command` names, the way execvp would find it, or null. */
export function findInPath(command: string, envPath = process.env.PATH ?? ""): string | null {
    const candidates = command.includes("/")
        ? [command]
        : envPath
              .split(":")
              .filter(Boolean)
              .map((d) => path.join(d, command));
    for (const c of candidates) {
        try {
            accessSync(c, constants.X_OK);
            return c;
        } catch {
            // next
        }
    }
    return null;
}

/**
 * `command args` rewritten to run under `setpriv --pdeathsig KILL`, so the kernel kills it when
 * this process dies; unchanged where there is no setpriv, or no such command (so that spawn's own
 * ENOENT reaches the caller, which setpriv would turn into an exit status 127).
 */
export function diesWithUs(command: string, args: readonly string[], envPath = process.env.PATH): [string, string[]] {
    const wrapper = setpriv();
    if (wrapper === null || findInPath(command, envPath ?? "") === null) return [command, [...args]];
    return [wrapper, ["--pdeathsig", "KILL", "--", command, ...args]];
}

/**
 * Runs `command args` to the end and returns its exit and output; never rejects for a tool's own
 * failure, only with a ToolTimeoutError when a deadline or the stall detector stopped it.
 */
export async function runTool(command: string, args: string[], opts: ToolRunOptions = {}): Promise<ToolResult> {
    const [file, argv] = diesWithUs(command, args, (opts.env ?? process.env).PATH);
    const child = execa(file, argv, {
        reject: false,
        ...(opts.input !== undefined ? { input: opts.input } : { stdin: "ignore" }),
        env: opts.env,
        extendEnv: opts.extendEnv ?? true,
    });
    const label = opts.label ?? `${command} ${args.join(" ")}`;
    let stopped: ToolTimeoutError | undefined;
    const stop = (why: string) => {
        if (stopped) return;
        stopped = new ToolTimeoutError(label, why);
        child.kill("SIGKILL");
    };
    const timers: NodeJS.Timeout[] = [];
    if (opts.timeoutMs !== undefined)
        timers.push(setTimeout(() => stop(`did not finish within ${seconds(opts.timeoutMs!)}`), opts.timeoutMs));
    if (opts.stallMs !== undefined && child.pid !== undefined)
        timers.push(stallDetector(child.pid, opts.stallMs, stop));
    // The resource's customTimeouts end a tool too (its failure path removes what it was making).
    const call = callDeadline();
    if (call)
        timers.push(
            setTimeout(
                () => stop(`did not finish within the resource's ${call.what}`),
                Math.max(0, call.at - Date.now()),
            ),
        );
    try {
        const r = await child;
        if (stopped) throw stopped;
        // With reject:false a failure to start comes back as a result without an exit code.
        const notStarted = r.exitCode === undefined && !r.signal;
        return {
            exitCode: r.exitCode ?? -1,
            stdout: r.stdout,
            stderr: r.stderr,
            signal: r.signal,
            spawnError: notStarted ? (r as Partial<execa.ExecaError>).message : undefined,
        };
    } finally {
        for (const t of timers) clearInterval(t);
    }
}

function stallDetector(pid: number, stallMs: number, stop: (why: string) => void): NodeJS.Timeout {
    let last = -1;
    let lastChange = Date.now();
    let busy = false;
    return setInterval(
        async () => {
            if (busy) return;
            busy = true;
            try {
                const moved = await progressCounter(pid);
                if (moved === undefined) return; // gone, or no /proc: the exit is being reported
                if (moved !== last) {
                    last = moved;
                    lastChange = Date.now();
                } else if (Date.now() - lastChange >= stallMs) {
                    stop(
                        `read and wrote nothing for ${seconds(stallMs)} (is a file it uses a FIFO, a device or on a hung mount?)`,
                    );
                }
            } finally {
                busy = false;
            }
        },
        Math.min(STALL_POLL_MS, stallMs),
    );
}

/**
 * A number that moves while the process works: bytes through read and write calls (rchar, wchar
 * in /proc/PID/io), plus CPU ticks and major page faults (/proc/PID/stat) for a tool that reads
 * through a memory map, as b3sum does. A process blocked opening a FIFO moves none of them.
 */
export async function progressCounter(pid: number): Promise<number | undefined> {
    let io: string;
    let stat: string;
    try {
        [io, stat] = await Promise.all([readFile(`/proc/${pid}/io`, "utf8"), readFile(`/proc/${pid}/stat`, "utf8")]);
    } catch {
        return undefined;
    }
    const field = (name: string) => Number(new RegExp(`^${name}: (\\d+)$`, "m").exec(io)?.[1] ?? 0);
    // Fields after the command name (which may hold spaces): state is field 3, majflt 12, utime 14, stime 15.
    const rest = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    const [majflt, utime, stime] = [rest[9], rest[11], rest[12]].map((x) => Number(x) || 0);
    return field("rchar") + field("wchar") + majflt + utime + stime;
}

function seconds(ms: number): string {
    return `${+(ms / 1000).toFixed(1)} s`;
}
