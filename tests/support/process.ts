import { spawn, type ChildProcess } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";

/** A foreground process whose output is collected and can be waited on for a marker. */
export interface Watched {
    child: ChildProcess;
    output(): string;
    waitFor(marker: string | RegExp, timeoutMs: number): Promise<number>;
    stop(): Promise<void>;
}

export function startWatched(command: string, args: string[], opts: { cwd?: string } = {}): Watched {
    const child = spawn(command, args, { cwd: opts.cwd, stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    const started = Date.now();
    child.stdout!.on("data", (d) => (out += d.toString("utf8")));
    child.stderr!.on("data", (d) => (out += d.toString("utf8")));
    const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
    return {
        child,
        output: () => out,
        async waitFor(marker, timeoutMs) {
            const until = Date.now() + timeoutMs;
            const seen = () => (typeof marker === "string" ? out.includes(marker) : marker.test(out));
            while (!seen()) {
                if (child.exitCode !== null)
                    throw new Error(`${command} exited (${child.exitCode}) before ${marker}:\n${out.slice(-3000)}`);
                if (Date.now() > until) throw new Error(`no ${marker} within ${timeoutMs} ms:\n${out.slice(-3000)}`);
                await new Promise((r) => setTimeout(r, 100));
            }
            return Date.now() - started;
        },
        async stop() {
            if (child.exitCode === null && child.signalCode === null) {
                child.kill("SIGTERM");
                const timer = setTimeout(() => child.kill("SIGKILL"), 5000);
                await exited;
                clearTimeout(timer);
            }
        },
    };
}

/** The fields of /proc/PID/stat after the command name (state first), or undefined once it is gone. */
function statFields(pid: number | string): string[] | undefined {
    try {
        const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
        return stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    } catch {
        return undefined;
    }
}

/** Whether `pid` is a live process: a zombie waiting to be reaped counts as gone. */
export function isRunning(pid: number): boolean {
    const fields = statFields(pid);
    return fields !== undefined && fields[0] !== "Z";
}

/** Live processes (other than this one) whose command line mentions `needle`. */
export function processesMentioning(needle: string): number[] {
    return livePids().filter((pid) => {
        try {
            return pid !== process.pid && readFileSync(`/proc/${pid}/cmdline`, "utf8").includes(needle);
        } catch {
            return false; // ended while we looked
        }
    });
}

/** Live children of this process. */
export function childPids(): number[] {
    return livePids().filter((pid) => Number(statFields(pid)?.[1]) === process.pid);
}

function livePids(): number[] {
    return readdirSync("/proc")
        .filter((entry) => /^\d+$/.test(entry))
        .map(Number)
        .filter(isRunning);
}
