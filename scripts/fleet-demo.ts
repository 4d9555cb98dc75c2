/**
 * The main job: bring examples/fleet up, show each VM answering on its forwarded port, run a
 * second `up` that must change nothing, and destroy it all — with the real `pulumi` CLI when it is
 * on PATH, else through the engine-protocol driver of tests/engine. Exits non-zero when a VM does
 * not answer, the second `up` changes anything, or a step fails.
 *
 *   node bin/scripts/fleet-demo.js [--count N] [--keep]
 */
import { execFileSync, spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import { mountTag } from "../provider/core/mountTag";
import { destroy, loadState, up, type ProjectOptions } from "../tests/engine/miniEngine";
import { MAIN_ROOT } from "../tests/engine/paths";
import { consecutiveFreePorts } from "../tests/engine/ports";
import { prepareProgram } from "../tests/engine/program";
import { isSecret, type Props } from "../tests/engine/wire";
import type * as testGuest from "../tests/guest/testGuest";
import { httpGetWhenUp } from "../tests/support/net";
import { isRunning } from "../tests/support/process";

const EXAMPLE = path.join(MAIN_ROOT, "examples", "fleet");
const STACK = "dev";

interface Timings {
    up?: number;
    noopUp?: number;
    destroy?: number;
}

/** What either way of deploying offers the demo. */
interface Deployer {
    describe: string;
    up(): Promise<{ seconds: number; changes: number; outputs: Props }>;
    destroy(): Promise<{ seconds: number }>;
    /** QEMU pids the stack recorded, to prove destroy stopped them; empty when unknown. */
    pids(): Promise<number[]>;
}

async function main(): Promise<number> {
    const args = process.argv.slice(2);
    const count = Number(valueOf(args, "--count") ?? 3);
    const keep = args.includes("--keep");
    const work = await mkdtemp(path.join(os.tmpdir(), "pq-fleet-"));
    const shared = path.join(work, "shared");
    await mkdir(shared);
    await writeFile(path.join(shared, "hello.txt"), "shared with every VM, read-only\n");
    // Every default path the provider picks goes under the demo's own directory.
    process.env.PULUMI_QEMU_STATE_DIR = path.join(work, "qemu-state");

    // The guest cache lives in the checkout, wherever this file was compiled to.
    process.env.PQ_TEST_GUEST_CACHE ??= path.join(MAIN_ROOT, ".cache", "test-guest");
    const { ensureTestGuest, guestKernelArguments, READY_MARKER } =
        require("../tests/guest/testGuest") as typeof testGuest;
    const guest = await ensureTestGuest();
    const firstPort = await consecutiveFreePorts(count);
    const config = {
        kernel: guest.kernel,
        initrd: guest.initrd,
        kernelArguments: guestKernelArguments({
            name: "{name}",
            mounts: [{ tag: mountTag(shared), at: "/mnt/shared", readOnly: true }],
        }),
        sharedDir: shared,
        firstPort,
        count,
        readyPattern: READY_MARKER,
        accel: "tcg",
    };
    const program = await prepareProgram(EXAMPLE, path.join(work, "program"));
    const deployer = onPath("pulumi")
        ? await cliDeployer(program, work, config)
        : miniEngineDeployer(program, work, config);
    console.log(`fleet demo: ${count} VMs from ${EXAMPLE}, deployed ${deployer.describe}`);
    console.log(`  work directory ${work}; ports ${firstPort}..${firstPort + count - 1}`);

    const timings: Timings = {};
    let failed = false;
    try {
        const first = await deployer.up();
        timings.up = first.seconds;
        console.log(`up: ${first.changes} changes in ${first.seconds.toFixed(1)} s`);
        failed = !(await showAnswers(first.outputs, count)) || failed;
        failed = !showPrivateChecks(first.outputs, count) || failed;

        const again = await deployer.up();
        timings.noopUp = again.seconds;
        console.log(`no-op up: ${again.changes} changes in ${again.seconds.toFixed(1)} s`);
        if (again.changes !== 0) {
            console.error(`FAIL: the second up changed ${again.changes} resources; it must change none`);
            failed = true;
        }
    } catch (err) {
        console.error(`FAIL: ${(err as Error).message}`);
        failed = true;
    } finally {
        if (!keep) {
            const pids = await deployer.pids().catch(() => []);
            try {
                timings.destroy = (await deployer.destroy()).seconds;
                console.log(`destroy: ${timings.destroy.toFixed(1)} s`);
                const survivors = pids.filter(isRunning);
                if (survivors.length) {
                    console.error(`FAIL: QEMU still running after destroy: pids ${survivors.join(", ")}`);
                    failed = true;
                }
            } catch (err) {
                console.error(`FAIL: destroy: ${(err as Error).message}`);
                failed = true;
            }
        }
    }
    console.log(`times: up ${fmt(timings.up)}, no-op up ${fmt(timings.noopUp)}, destroy ${fmt(timings.destroy)}`);
    if (keep) console.log(`--keep: the fleet is still running; state and files in ${work}`);
    else await rm(work, { recursive: true, force: true });
    console.log(failed ? "fleet demo FAILED" : "fleet demo passed");
    return failed ? 1 : 0;
}

/** GETs each VM's address from the stack outputs; true when every one answers as its guest. */
async function showAnswers(outputs: Props, count: number): Promise<boolean> {
    const addresses = unwrap(outputs.addresses) as Record<string, string> | undefined;
    if (!addresses || Object.keys(addresses).length !== count) {
        console.error(
            `FAIL: the stack output "addresses" should list ${count} VMs: ${JSON.stringify(outputs.addresses)}`,
        );
        return false;
    }
    let ok = true;
    for (const [name, url] of Object.entries(addresses)) {
        try {
            const { body } = await httpGetWhenUp(url, 30_000);
            const answer = body.trim().split("\n")[0];
            const right = answer.includes(`pulumi-qemu test guest ${name}`);
            console.log(`  ${name} at ${url} answers: ${answer}${right ? "" : "  <- FAIL: not this VM's guest"}`);
            ok &&= right;
        } catch (err) {
            console.error(`  ${name} at ${url}: FAIL: ${(err as Error).message}`);
            ok = false;
        }
    }
    return ok;
}

/** What the client VM saw fetching each web VM's page over the private network (its console lines). */
function showPrivateChecks(outputs: Props, count: number): boolean {
    const log = unwrap(outputs.clientSerialLog) as string | undefined;
    if (!log) return true; // privateNetwork: false
    console.log(
        `private network ${String(unwrap(outputs.lanSubnet))}, hosts:\n${String(unwrap(outputs.hosts)).replace(/^/gm, "    ").trimEnd()}`,
    );
    const checks = readFileSync(log, "utf8")
        .split("\n")
        .filter((l) => l.includes("pq-check:"))
        .map((l) => l.trim());
    for (const line of checks) console.log(`  client: ${line}`);
    const ok = checks.includes(`pq-check: done, ${count} ok, 0 failed`);
    if (!ok) console.error("FAIL: the client did not reach every web VM over the private network");
    return ok;
}

function miniEngineDeployer(dir: string, work: string, config: Record<string, unknown>): Deployer {
    const project =
        (readFileSync(path.join(dir, "Pulumi.yaml"), "utf8").match(/^name:\s*(\S+)/m) ?? [])[1] ?? "qemu-fleet";
    const opts: ProjectOptions = {
        dir,
        project,
        stack: STACK,
        statePath: path.join(work, "stack-state.json"),
        config,
        programTimeoutMs: 20 * 60_000,
    };
    return {
        describe: "through the engine-protocol driver (tests/engine/miniEngine: no `pulumi` CLI on PATH)",
        async up() {
            const s = await up(opts);
            const errors = s.logs.filter((l) => l.severity === "error");
            if (errors.length)
                throw new Error(`errors logged to the engine: ${errors.map((e) => e.message).join("; ")}`);
            return {
                seconds: s.seconds,
                changes: s.counts.create + s.counts.update + s.counts.replace + s.counts.delete,
                outputs: s.outputs,
            };
        },
        async destroy() {
            return { seconds: (await destroy(opts)).seconds };
        },
        async pids() {
            const state = await loadState(opts.statePath);
            return state.resources
                .filter((r) => r.type.endsWith(":VirtualMachine"))
                .map((r) => Number(unwrap(r.outputs.pid)))
                .filter(Number.isInteger);
        },
    };
}

/**
 * The real CLI with a throw-away local backend. The program is the transpiled copy: the Node.js
 * language host would need ts-node for TypeScript, so the runtime is told the program is JavaScript.
 */
async function cliDeployer(dir: string, work: string, config: Record<string, unknown>): Promise<Deployer> {
    const project =
        (readFileSync(path.join(dir, "Pulumi.yaml"), "utf8").match(/^name:\s*(\S+)/m) ?? [])[1] ?? "qemu-fleet";
    const env = {
        ...process.env,
        PULUMI_HOME: path.join(work, "pulumi-home"),
        PULUMI_CONFIG_PASSPHRASE: "",
        PULUMI_SKIP_UPDATE_CHECK: "true",
        PULUMI_AUTOMATION_API_SKIP_VERSION_CHECK: "true",
    };
    const pulumi = (...args: string[]) =>
        execFileSync("pulumi", [...args, "--non-interactive"], {
            cwd: dir,
            env,
            encoding: "utf8",
            stdio: ["ignore", "pipe", "inherit"],
            maxBuffer: 64 * 1024 * 1024,
        });
    await writeFile(
        path.join(dir, "Pulumi.yaml"),
        `name: ${project}\nruntime:\n  name: nodejs\n  options:\n    typescript: false\n`,
    );
    const stackConfig: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(config)) stackConfig[`${project}:${k}`] = v;
    // JSON is YAML: the config file takes the values with their types.
    await writeFile(path.join(dir, `Pulumi.${STACK}.yaml`), JSON.stringify({ config: stackConfig }, null, 2));
    await mkdir(path.join(work, "backend"));
    pulumi("login", `file://${path.join(work, "backend")}`);
    pulumi("stack", "init", STACK);
    const timed = <T>(f: () => T): { seconds: number; value: T } => {
        const t0 = Date.now();
        const value = f();
        return { seconds: (Date.now() - t0) / 1000, value };
    };
    return {
        describe: `with the pulumi CLI (${pulumi("version").trim()}) and a local backend`,
        async up() {
            const { seconds } = timed(() => process.stdout.write(pulumi("up", "--yes", "--skip-preview")));
            const history = JSON.parse(pulumi("stack", "history", "--json"));
            const changes = Object.entries((history[0]?.resourceChanges ?? {}) as Record<string, number>)
                .filter(([op]) => op !== "same")
                .reduce((n, [, c]) => n + c, 0);
            const outputs = JSON.parse(pulumi("stack", "output", "--json", "--show-secrets"));
            return { seconds, changes, outputs };
        },
        async destroy() {
            const { seconds } = timed(() => process.stdout.write(pulumi("destroy", "--yes", "--skip-preview")));
            pulumi("stack", "rm", "--yes", STACK);
            return { seconds };
        },
        async pids() {
            const state = JSON.parse(pulumi("stack", "export", "--show-secrets"));
            return ((state.deployment?.resources ?? []) as { type: string; outputs?: Props }[])
                .filter((r) => r.type.endsWith(":VirtualMachine"))
                .map((r) => Number(r.outputs?.pid))
                .filter(Number.isInteger);
        },
    };
}

function unwrap(value: unknown): unknown {
    return isSecret(value) ? unwrap(value.value) : value;
}

function onPath(command: string): boolean {
    return spawnSync("sh", ["-c", `command -v ${command}`], { stdio: "ignore" }).status === 0;
}

function valueOf(args: string[], flag: string): string | undefined {
    const i = args.indexOf(flag);
    return i >= 0 ? args[i + 1] : undefined;
}

function fmt(seconds: number | undefined): string {
    return seconds === undefined ? "n/a" : `${seconds.toFixed(1)} s`;
}

main().then(
    (code) => process.exit(code),
    (err) => {
        console.error(err instanceof Error ? (err.stack ?? err.message) : String(err));
        process.exit(1);
    },
);
