import type { ChildProcess } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import * as path from "node:path";
import { gunzipSync } from "node:zlib";
import { createInterface } from "node:readline";
import { sha256Hex } from "../../core/hash";
import { connectionKey, type HostSpec } from "../../core/hostSpec";
import { InputError } from "../../core/validation";
import { shellQuote } from "../../core/shellQuote";
import { currentSink } from "../progress";
import { HostAccessError, HostUnreachableError, SshConnection } from "./sshConnection";
import type { RunnerReply, RunnerRequest } from "../../core/runnerProtocol";

/**
 * The near side of a far host: one SSH connection and one runner process there per host and
 * provider process. The runner is this package's lifecycles bundled into one file
 * (shipped gzipped as runner.bundle.js.gz), copied once to the far host's cache under its content hash and run with
 * the far host's `node`; so images are made by its qemu-img, digests computed from its disks,
 * QEMU daemonized and probed there, and processes identified in its /proc — by the very code that
 * does it locally. Calls are JSON lines multiplexed by id; progress comes back on the same line.
 */

const HELLO_DEADLINE_MS = 30_000;
/** How long a master may take to follow its runner's ssh out when the connection was lost (it is a moment, even under load). */
const MASTER_SETTLE_MS = 5_000;
/** The oldest Node.js the runner works on (fs statfs came in 18.15; Debian 12 has 18.19). */
const MIN_NODE = [18, 15];

export function nodeIsRecentEnough(version: string): boolean {
    const m = /^v(\d+)\.(\d+)/.exec(version);
    if (!m) return false;
    const [major, minor] = [Number(m[1]), Number(m[2])];
    return major > MIN_NODE[0] || (major === MIN_NODE[0] && minor >= MIN_NODE[1]);
}
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

/**
 * A host that did not answer for a while (packets dropped, not refused) is not tried again for
 * this long: a preview asking it N things would otherwise wait N connect timeouts.
 */
const SLOW_FAILURE_MS = 5_000;
const REMEMBER_SLOW_FAILURE_MS = 30_000;
const slowFailures = new Map<string, { until: number; err: Error }>();

/** The runner on `spec`'s host, started once per process (again after it died). */
export function runnerFor(spec: HostSpec): Promise<RemoteRunner> {
    const key = connectionKey(spec);
    const failed = slowFailures.get(key);
    if (failed && Date.now() < failed.until) return Promise.reject(failed.err);
    let r = runners.get(key);
    if (!r) {
        const t0 = Date.now();
        r = RemoteRunner.start(connectionFor(spec)).catch((err) => {
            runners.delete(key);
            if (err instanceof HostUnreachableError && Date.now() - t0 >= SLOW_FAILURE_MS)
                slowFailures.set(key, { until: Date.now() + REMEMBER_SLOW_FAILURE_MS, err });
            throw err;
        });
        runners.set(key, r);
        r.then(
            (runner) => runner.onExit(() => runners.get(key) === r && runners.delete(key)),
            () => undefined,
        );
    }
    return r;
}

export class RemoteRunner {
    private nextId = 1;
    private readonly pending = new Map<number, Pending>();
    private stderrTail = "";
    private exitHandlers: Array<() => void> = [];
    private gone?: Error;
    /** Set when the runner's ssh has exited, until `gone` says why. */
    private closing?: Promise<void>;

    private constructor(
        private readonly connection: SshConnection,
        private readonly child: ChildProcess,
    ) {}

    static async start(connection: SshConnection): Promise<RemoteRunner> {
        const bundle = gunzipSync(readFileSync(bundlePath()));
        const hash = sha256Hex(bundle);
        // Every command runs under sh, whatever the far user's login shell (fish, csh) makes of its syntax.
        const sh = (script: string) =>
            `sh -c ${shellQuote(`f="\${XDG_CACHE_HOME:-$HOME/.cache}/pulumi-qemu/runner/${hash.slice(0, 32)}.js"; ${script}`)}`;
        const sums = (file: string) => `[ "$(sha256sum < ${file} | cut -c1-64)" = ${hash} ]`;
        // A cached runner is used only if its content is the bundle's: an upload cut short must not be run, or kept.
        const probe = await connection.run(
            sh(
                `command -v node >/dev/null 2>&1 || { echo "node: not found on PATH" >&2; exit 127; }; if [ -f "$f" ] && ${sums('"$f"')}; then echo PQ-HAVE; else echo PQ-NEED; fi`,
            ),
            {
                timeoutMs: SETUP_DEADLINE_MS,
            },
        );
        if (probe.exitCode === 127) {
            throw new HostAccessError(
                `host ${connection.spec.url}: no \`node\` on the far host's PATH; pulumi-qemu runs its lifecycles there with Node.js ${MIN_NODE.join(".")} or later (Debian: apt-get install nodejs)`,
            );
        }
        if (probe.exitCode !== 0 || !/PQ-(HAVE|NEED)/.test(probe.stdout))
            throw new HostAccessError(
                `host ${connection.spec.url}: could not prepare the far host: ${probe.stderr.trim() || `exit ${probe.exitCode}`}`,
            );
        if (probe.stdout.includes("PQ-NEED")) {
            // Owner-only, under a temporary name, renamed only once its hash is the bundle's.
            const up = await connection.run(
                sh(
                    `umask 077 && mkdir -p "$(dirname "$f")" && p="$f.$$.part" && cat > "$p" && if ${sums('"$p"')}; then mv -f "$p" "$f"; else rm -f "$p"; echo "the copy arrived damaged" >&2; exit 1; fi`,
                ),
                {
                    input: bundle.toString("utf8"),
                    timeoutMs: SETUP_DEADLINE_MS,
                },
            );
            if (up.exitCode !== 0)
                throw new HostAccessError(
                    `host ${connection.spec.url}: could not copy the runner there: ${up.stderr.trim() || `exit ${up.exitCode}`}`,
                );
        }
        const seconds = process.env.PULUMI_QEMU_PROGRESS_SECONDS;
        const env = seconds && /^\d+(\.\d+)?$/.test(seconds) ? `PULUMI_QEMU_PROGRESS_SECONDS=${seconds} ` : "";
        const child = await connection.session(sh(`umask 077 && exec env ${env}node "$f"`));
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
        child
            .stderr!.setEncoding("utf8")
            .on("data", (d: string) => (this.stderrTail = (this.stderrTail + d).slice(-4000)));
        return new Promise((resolve, reject) => {
            const timer = setTimeout(() => {
                child.kill("SIGKILL");
                reject(
                    new HostUnreachableError(
                        this.connection.spec.url,
                        `the runner did not start within ${HELLO_DEADLINE_MS / 1000} s`,
                    ),
                );
            }, HELLO_DEADLINE_MS);
            let greeted = false;
            child.once("error", (err) => {
                clearTimeout(timer);
                if (!greeted)
                    reject(new HostAccessError(`host ${this.connection.spec.url}: cannot start ssh: ${err.message}`));
            });
            createInterface({ input: child.stdout! }).on("line", (line) => {
                let msg: unknown;
                try {
                    msg = JSON.parse(line);
                } catch {
                    return; // not ours (a login banner): ignored
                }
                // Only objects are ours: a banner line that happens to be JSON (a number, "text") is not.
                if (msg === null || typeof msg !== "object" || Array.isArray(msg)) return;
                if (!greeted && "hello" in msg) {
                    greeted = true;
                    clearTimeout(timer);
                    const version = String((msg as { node?: unknown }).node ?? "");
                    if (!nodeIsRecentEnough(version)) {
                        child.stdin!.end();
                        reject(
                            new HostAccessError(
                                `host ${this.connection.spec.url}: its node is ${version || "of unknown version"}; pulumi-qemu's runner needs Node.js ${MIN_NODE.join(".")} or later there`,
                            ),
                        );
                        return;
                    }
                    resolve();
                    return;
                }
                this.dispatch(msg as RunnerReply);
            });
            child.once("close", (code, signal) => {
                clearTimeout(timer);
                const detail =
                    this.stderrTail.trim().split("\n").slice(-3).join("; ") ||
                    `runner exited (${signal ?? `status ${code}`})`;
                // ssh says 255 both for a lost connection and for a runner killed by a signal; the master tells them
                // apart, but it ends a moment after the runner's ssh does: its end is waited for, not sampled.
                this.closing = (async () => {
                    const lost = code === 255 && (await this.connection.masterGoneWithin(MASTER_SETTLE_MS));
                    this.gone = lost
                        ? new HostUnreachableError(this.connection.spec.url, `connection lost: ${detail}`)
                        : new HostAccessError(`host ${this.connection.spec.url}: the runner stopped: ${detail}`);
                    if (!greeted) reject(this.gone);
                    for (const p of this.pending.values()) p.reject(this.gone);
                    this.pending.clear();
                    for (const h of this.exitHandlers) h();
                })();
            });
        });
    }

    private dispatch(msg: RunnerReply): void {
        if (!("id" in msg)) return;
        const p = this.pending.get(msg.id);
        if (!p) return;
        if ("status" in msg) return p.status(String(msg.status));
        if ("warning" in msg) return p.warning(String(msg.warning));
        // Neither: not an answer (an echoed request), so the call goes on waiting.
        if (!("error" in msg) && !("result" in msg)) return;
        this.pending.delete(msg.id);
        if ("error" in msg) p.reject(rebuildError(msg.error));
        else p.resolve(msg.result);
    }

    /** Runs `kind.method(...args)` on the far host; its progress reaches this call's own sink. */
    call(kind: string, method: string, args: unknown[]): Promise<any> {
        if (this.gone) return Promise.reject(this.gone);
        // The runner has exited and why is being settled: the call fails with that reason.
        if (this.closing) return this.closing.then(() => Promise.reject(this.gone));
        const id = this.nextId++;
        const request: RunnerRequest = { id, kind, method, args };
        // Progress comes back later, on the runner's stdout: it goes to the sink of this call, captured now.
        const sink = currentSink();
        return new Promise((resolve, reject) => {
            this.pending.set(id, { resolve, reject, status: (m) => sink?.status(m), warning: (m) => sink?.warning(m) });
            this.child.stdin!.write(JSON.stringify(request) + "\n");
        });
    }

    /** Stops the runner (tests, and a process about to exit). */
    stop(): void {
        this.child.stdin!.end();
    }
}

/** The far side's error as the near side's lifecycles would have thrown it. */
function rebuildError(e: {
    name: string;
    message: string;
    problems?: Array<{ property: string; reason: string }>;
}): Error {
    if (e.name === "InputError" && e.problems) return new InputError(e.problems);
    const err = new Error(e.message);
    err.name = e.name;
    return err;
}

/** The bundled lifecycles, in runner/ beside the runner's entry once built; from a source checkout, in bin/. */
export function bundlePath(): string {
    const name = "runner.bundle.js.gz";
    const candidates = [
        path.join(__dirname, "..", "..", "runner", name),
        path.join(__dirname, "..", "..", "..", "bin", "provider", "runner", name),
    ];
    const found = candidates.find((c) => existsSync(c));
    if (!found)
        throw new Error(
            `the remote runner bundle is missing (looked for ${candidates.join(", ")}); build the package with \`npm run build\``,
        );
    return found;
}
