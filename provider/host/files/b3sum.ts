import execa from "execa";
import { runTool, ToolTimeoutError } from "../process/toolRun";

/**
 * `b3sum`, the BLAKE3 team's own tool: it maps the file and hashes it on every core, which no
 * hasher fed from one JavaScript thread can match on a big image. Optional: when it is missing
 * or answers wrongly, callers hash in-process and get the same digest, only slower.
 */

/** BLAKE3 of no bytes: a tool that does not print this is not a BLAKE3 we can trust. */
export const BLAKE3_OF_NOTHING = "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262";

export class B3sumError extends Error {
    constructor(
        readonly file: string,
        readonly stderr: string,
    ) {
        super(`b3sum ${file} failed: ${stderr.trim() || "no message"}`);
        this.name = "B3sumError";
    }
}

const probes = new Map<string, Promise<boolean>>();

/** Whether `command` runs and hashes like BLAKE3; asked once per process and command. */
export function b3sumUsable(command = "b3sum"): Promise<boolean> {
    let probe = probes.get(command);
    if (!probe) {
        probe = probeB3sum(command);
        probes.set(command, probe);
    }
    return probe;
}

async function probeB3sum(command: string): Promise<boolean> {
    const child = execa(command, ["--no-names"], { input: "", reject: false });
    // Our own timer, unref'd: execa's `timeout` holds the process open after a failed spawn.
    const timer = setTimeout(() => child.kill("SIGKILL"), 10_000);
    timer.unref();
    try {
        const r = await child;
        return r.exitCode === 0 && r.stdout.trim() === BLAKE3_OF_NOTHING;
    } catch {
        return false;
    } finally {
        clearTimeout(timer);
    }
}

/** Hashing a file takes as long as it is big; b3sum is stopped once it does no work for this long (see toolRun). */
export const B3SUM_STALL_MS = 120_000;

/** The hex BLAKE3 of `file`, by b3sum. */
export async function b3sumFile(file: string, command = "b3sum", stallMs = B3SUM_STALL_MS): Promise<string> {
    // "--" because a path may start with "-"; --no-names so the name never needs unescaping.
    let r;
    try {
        r = await runTool(command, ["--no-names", "--", file], { stallMs });
    } catch (err) {
        if (err instanceof ToolTimeoutError) throw new B3sumError(file, `b3sum ${err.why} and was stopped`);
        throw err;
    }
    const digest = r.stdout.trim();
    if (r.exitCode === 0 && /^[0-9a-f]{64}$/.test(digest)) return digest;
    throw new B3sumError(file, r.stderr.trim() || failure(r));
}

/** What went wrong when b3sum itself said nothing: killed, not started, or printed no digest. */
function failure(r: { signal?: string; exitCode: number; spawnError?: string; stdout: string }): string {
    if (r.signal) return `killed by ${r.signal}`;
    if (r.spawnError) return r.spawnError;
    if (r.exitCode !== 0) return `exit status ${r.exitCode}`;
    return `printed ${JSON.stringify(r.stdout.slice(0, 200))} instead of a digest`;
}
