import execa from "execa";
import { readdirSync, readFileSync } from "node:fs";
import { mkdtemp, open, rm, utimes } from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";

/** Shared by every benchmark: timing, the table's rows, temp dirs that always go away, the machine. */

export const MiB = 1024 * 1024;
export const GiB = 1024 * MiB;

/** One line of the results table: what the provider did next to what it is compared with. */
export interface Row {
    bench: string;
    measure: string;
    provider: string;
    reference?: string;
    ratio?: string;
    target?: string;
    /** Empty when the row has no target. */
    verdict?: "met" | "missed" | "";
}

export interface BenchResult {
    rows: Row[];
    /** How a figure was obtained or why a target was missed; printed under the table. */
    notes: string[];
}

export async function timed<T>(fn: () => Promise<T>): Promise<{ ms: number; value: T }> {
    const t0 = process.hrtime.bigint();
    const value = await fn();
    return { ms: Number(process.hrtime.bigint() - t0) / 1e6, value };
}

export function median(xs: number[]): number {
    if (!xs.length) return NaN;
    const s = [...xs].sort((a, b) => a - b);
    const mid = s.length >> 1;
    return s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
}

export function fmtMs(ms: number): string {
    if (ms >= 10_000) return `${(ms / 1000).toFixed(1)} s`;
    if (ms >= 1000) return `${(ms / 1000).toFixed(2)} s`;
    if (ms >= 10) return `${ms.toFixed(0)} ms`;
    if (ms >= 0.1) return `${ms.toFixed(2)} ms`;
    return `${(ms * 1000).toFixed(1)} µs`;
}

export function fmtRatio(x: number): string {
    return x >= 100 ? `${Math.round(x).toLocaleString("en-US")}×` : `${x.toFixed(2)}×`;
}

export function mbPerSecond(bytes: number, ms: number): number {
    return bytes / 1e6 / (ms / 1000);
}

export function verdict(ok: boolean): "met" | "missed" {
    return ok ? "met" : "missed";
}

/** A temp dir under `parent` for the duration of `fn`, removed whatever happens. */
export async function withTempDir<T>(
    prefix: string,
    fn: (dir: string) => Promise<T>,
    parent = os.tmpdir(),
): Promise<T> {
    const dir = await mkdtemp(path.join(parent, prefix));
    try {
        return await fn(dir);
    } finally {
        await rm(dir, { recursive: true, force: true });
    }
}

/**
 * A file of `bytes` made of one random 16 MiB block repeated: incompressible enough for any
 * hash, and written at disk speed. Its stamps are set a minute back so the stat cache trusts
 * them at once (a file written this very tick is never remembered, see racyWindowNs).
 */
export async function writeBigFile(file: string, bytes: number): Promise<void> {
    const { randomBytes } = await import("node:crypto");
    const fh = await open(file, "wx", 0o600);
    try {
        const chunk = randomBytes(16 * MiB);
        for (let done = 0; done < bytes; done += chunk.length)
            await fh.write(chunk, 0, Math.min(chunk.length, bytes - done));
    } finally {
        await fh.close();
    }
    const old = new Date(Date.now() - 60_000);
    await utimes(file, old, old);
}

/** Other QEMU processes on the machine, which make every timing noisier. */
export function otherQemuCount(): number {
    let n = 0;
    for (const entry of readdirSync("/proc")) {
        if (!/^\d+$/.test(entry)) continue;
        try {
            const cmd = readFileSync(`/proc/${entry}/cmdline`, "utf8");
            if (cmd.startsWith("qemu-system") || cmd.includes("/qemu-system")) n++;
        } catch {
            // gone while we looked
        }
    }
    return n;
}

export function loadAverage(): string {
    return readFileSync("/proc/loadavg", "utf8").split(" ").slice(0, 3).join(" ");
}

/** A `VmHWM`/`VmRSS`-style field of /proc/PID/status, in KiB. */
export function procStatusKiB(pid: number, field: "VmHWM" | "VmRSS"): number {
    const m = new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(readFileSync(`/proc/${pid}/status`, "utf8"));
    if (!m) throw new Error(`no ${field} in /proc/${pid}/status`);
    return Number(m[1]);
}

/**
 * CPU time (user + system, all threads) `pid` has used, in ms: what a plugin itself spends on a
 * pass, apart from the benchmark's own gRPC client in this process. Clock ticks are 10 ms, so
 * it is read over whole passes.
 */
export function procCpuMs(pid: number): number {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    // Fields after the command name, which may hold spaces, in parentheses: utime and stime are the 12th and 13th.
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return ((Number(fields[11]) + Number(fields[12])) * 1000) / CLOCK_TICKS_PER_SECOND;
}

/** sysconf(_SC_CLK_TCK): 100 on every Linux build Debian ships. */
const CLOCK_TICKS_PER_SECOND = 100;

export interface Machine {
    cpu: string;
    cores: number;
    memory: string;
    kernel: string;
    os: string;
    qemu: string;
    qemuImg: string;
    node: string;
    date: string;
}

export async function describeMachine(): Promise<Machine> {
    const cpuinfo = readFileSync("/proc/cpuinfo", "utf8");
    const model = /^model name\s*:\s*(.*)$/m.exec(cpuinfo)?.[1] ?? "unknown";
    const flags = /^flags\s*:\s*(.*)$/m.exec(cpuinfo)?.[1].split(" ") ?? [];
    const notable = ["sha_ni", "avx2", "avx512f", "vmx", "svm"].filter((f) => flags.includes(f));
    const osRelease = readFileSync("/etc/os-release", "utf8");
    const version = async (cmd: string) =>
        (await execa(cmd, ["--version"], { reject: false })).stdout.split("\n")[0] || `${cmd} missing`;
    return {
        cpu: `${model} (${notable.join(", ") || "no sha_ni/avx2"})`,
        cores: os.cpus().length,
        memory: `${(os.totalmem() / GiB).toFixed(0)} GiB`,
        kernel: os.release(),
        os: /^PRETTY_NAME="?([^"\n]*)/m.exec(osRelease)?.[1] ?? "unknown",
        qemu: await version("qemu-system-x86_64"),
        qemuImg: await version("qemu-img"),
        node: process.version,
        date: new Date().toISOString(),
    };
}
