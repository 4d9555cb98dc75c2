import { spawn, type ChildProcess } from "node:child_process";

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
                if (child.exitCode !== null) throw new Error(`${command} exited (${child.exitCode}) before ${marker}:\n${out.slice(-3000)}`);
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
