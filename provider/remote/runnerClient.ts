import type { ChildProcess } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import * as path from "node:path";
import { gunzipSync } from "node:zlib";
import { createInterface } from "node:readline";
import { sha256Hex } from "../core/hash";
import { connectionKey, type HostSpec } from "../core/hostSpec";
import { InputError } from "../core/validation";
import { progress, warn } from "../host/progress";
import { HostAccessError, HostUnreachableError, SshConnection } from "../host/sshConnection";
import type { RunnerReply, RunnerRequest } from "./runnerProtocol";

/**
 * The near side of a far host: one SSH connection and one runner process there per host and
 * provider process. The runner is this package's lifecycles bundled into one file
 * (shipped gzipped as runner.bundle.js.gz), copied once to the far host's cache under its content hash and run with
 * the far host's `node`; so images are made by its qemu-img, digests computed from its disks,
 * QEMU daemonized and probed there, and processes identified in its /proc — by the very code that
 * does it locally. Calls are JSON lines multiplexed by id; progress comes back on the same line.
 */

const HELLO_DEADLINE_MS = 30_000;
const SETUP_DEADLINE_MS = 60_000;

interface Pending {
    resolve(value: unknown): void;
    reject(err: Error): void;
    status(message: string): void;
    warning(message: string): void;
}

const runners = new Map<string, Promise<RemoteRunner>>();
const connections = new Map<string, SshConnection>();

/** The connection to `spec`'s host, made once per process. */
export function connectionFor(spec: HostSpec): SshConnection {
    const key = connectionKey(spec);
    let c = connections.get(key);
    if (!c) connections.set(key, (c = new SshConnection(spec)));
    return c;
}

/** The runner on `spec`'s host, started once per process (again after it died). */
export function runnerFor(spec: HostSpec): Promise<RemoteRunner> {
    const key = connectionKey(spec);
    let r = runners.get(key);
    if (!r) {
        r = RemoteRunner.start(connectionFor(spec)).catch((err) => {
            runners.delete(key);
            throw err;
        });
        runners.set(key, r);
        r.then((runner) => runner.onExit(() => runners.get(key) === r && runners.delete(key)), () => undefined);
    }
    return r;
}

export class RemoteRunner {
    private nextId = 1;
    private readonly pending = new Map<number, Pending>();
    private stderrTail = "";
    private exitHandlers: Array<() => void> = [];
    private gone?: Error;

    private constructor(
        private readonly connection: SshConnection,
        private readonly child: ChildProcess,
    ) {}

    static async start(connection: SshConnection): Promise<RemoteRunner> {
        const bundle = gunzipSync(readFileSync(bundlePath()));
        const file = `"\${XDG_CACHE_HOME:-$HOME/.cache}/pulumi-qemu/runner/${sha256Hex(bundle).slice(0, 32)}.js"`;
        const probe = await connection.run(`command -v node >/dev/null 2>&1 || { echo "node: not found on PATH" >&2; exit 127; }; if [ -f ${file} ]; then echo have; else echo need; fi`, { timeoutMs: SETUP_DEADLINE_MS });
        if (probe.exitCode === 127) {
            throw new HostAccessError(`host ${connection.spec.url}: no \`node\` on the far host's PATH; pulumi-qemu runs its lifecycles there with Node.js 18 or later (Debian: apt-get install nodejs)`);
        }
        if (probe.exitCode !== 0) throw new HostAccessError(`host ${connection.spec.url}: could not prepare the far host: ${probe.stderr.trim() || `exit ${probe.exitCode}`}`);
        if (probe.stdout.trim() === "need") {
            // Owner-only, written under a temporary name and renamed, so a dropped connection leaves no half file under the real name.
            const up = await connection.run(`umask 077 && f=${file} && mkdir -p "$(dirname "$f")" && cat > "$f.$$.part" && mv -f "$f.$$.part" "$f"`, {
                input: bundle.toString("utf8"),
                timeoutMs: SETUP_DEADLINE_MS,
            });
            if (up.exitCode !== 0) throw new HostAccessError(`host ${connection.spec.url}: could not copy the runner there: ${up.stderr.trim() || `exit ${up.exitCode}`}`);
        }
        const seconds = process.env.PULUMI_QEMU_PROGRESS_SECONDS;
        const env = seconds && /^\d+(\.\d+)?$/.test(seconds) ? `PULUMI_QEMU_PROGRESS_SECONDS=${seconds} ` : "";
        const child = await connection.session(`umask 077 && exec env ${env}node ${file}`);
        const runner = new RemoteRunner(connection, child);
        await runner.awaitHello();
        return runner;
    }

    onExit(handler: () => void): void {
        if (this.gone) handler();
        else this.exitHandlers.push(handler);
    }

    private awaitHello(): Promise<void> {
        const child = this.child;
        // A write to a runner that just went (EPIPE) is answered by the close below, which fails what is pending.
        child.stdin!.on("error", () => undefined);
        child.stderr!.setEncoding("utf8").on("data", (d: string) => (this.stderrTail = (this.stderrTail + d).slice(-4000)));
        return new Promise((resolve, reject) => {
            const timer = setTimeout(() => {
                child.kill("SIGKILL");
                reject(new HostUnreachableError(this.connection.spec.url, `the runner did not start within ${HELLO_DEADLINE_MS / 1000} s`));
            }, HELLO_DEADLINE_MS);
            let greeted = false;
            createInterface({ input: child.stdout! }).on("line", (line) => {
                let msg: RunnerReply;
                try {
                    msg = JSON.parse(line);
                } catch {
                    return; // not ours (a login banner): ignored
                }
                if (!greeted && "hello" in msg) {
                    greeted = true;
                    clearTimeout(timer);
                    resolve();
                    return;
                }
                this.dispatch(msg);
            });
            child.once("close", (code, signal) => {
                clearTimeout(timer);
                const detail = this.stderrTail.trim().split("\n").slice(-3).join("; ") || `runner exited (${signal ?? `status ${code}`})`;
                this.gone = code === 255 ? new HostUnreachableError(this.connection.spec.url, `connection lost: ${detail}`) : new HostAccessError(`host ${this.connection.spec.url}: the runner stopped: ${detail}`);
                if (!greeted) reject(this.gone);
                for (const p of this.pending.values()) p.reject(this.gone);
                this.pending.clear();
                for (const h of this.exitHandlers) h();
            });
        });
    }

    private dispatch(msg: RunnerReply): void {
        if (!("id" in msg)) return;
        const p = this.pending.get(msg.id);
        if (!p) return;
        if ("status" in msg) return p.status(msg.status);
        if ("warning" in msg) return p.warning(msg.warning);
        this.pending.delete(msg.id);
        if ("error" in msg) p.reject(rebuildError(msg.error));
        else p.resolve(msg.result);
    }

    /** Runs `kind.method(...args)` on the far host; its progress reaches this call's own sink. */
    call(kind: string, method: string, args: unknown[]): Promise<any> {
        if (this.gone) return Promise.reject(this.gone);
        const id = this.nextId++;
        const request: RunnerRequest = { id, kind, method, args };
        return new Promise((resolve, reject) => {
            this.pending.set(id, { resolve, reject, status: progress, warning: warn });
            this.child.stdin!.write(JSON.stringify(request) + "\n");
        });
    }

    /** Stops the runner (tests, and a process about to exit). */
    stop(): void {
        this.child.stdin!.end();
    }
}

/** The far side's error as the near side's lifecycles would have thrown it. */
function rebuildError(e: { name: string; message: string; problems?: Array<{ property: string; reason: string }> }): Error {
    if (e.name === "InputError" && e.problems) return new InputError(e.problems);
    const err = new Error(e.message);
    err.name = e.name;
    return err;
}

/** The bundled lifecycles, beside this file once built; from a source checkout, in bin/. */
export function bundlePath(): string {
    const name = "runner.bundle.js.gz";
    const candidates = [path.join(__dirname, name), path.join(__dirname, "..", "..", "bin", "provider", "remote", name)];
    const found = candidates.find((c) => existsSync(c));
    if (!found) throw new Error(`the remote runner bundle is missing (looked for ${candidates.join(", ")}); build the package with \`npm run build\``);
    return found;
}
