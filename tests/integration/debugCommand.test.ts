import execa from "execa";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import * as vmResource from "../../provider/resources/virtualMachine";
import type { VirtualMachineOutputs } from "../../provider/resources/virtualMachine";
import { shellQuote } from "../../provider/core/shellQuote";
import { attachCommand } from "../../sdk/debugCommand";
import { fleet } from "../../sdk/fleet";
import { ensureTestGuest, guestKernelArguments, READY_MARKER } from "../guest/testGuest";
import { processesMentioning } from "../support/process";

/**
 * The debug command against a running busybox VM, driven through pipes as a person would type:
 * `list` shows it; `shell` answers a command from the guest and shows a failing one's exit
 * code; `qmp` answers query-status; `console` prints the serial log; the command a kept fleet
 * prints is the one that works; `--outputs` finds the VMs in a stack's outputs. The command runs as its own process (sdk/cli.ts).
 */

let dir: string;
let stateDir: string;
let outs: VirtualMachineOutputs;

beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), "pq-debugcmd-"));
    stateDir = path.join(dir, "state");
    const guest = await ensureTestGuest();
    outs = (
        await vmResource.create({
            vm: {
                name: "dbg",
                accel: "tcg",
                agent: "shell",
                network: "none",
                kernel: guest.kernel,
                initrd: guest.initrd,
                kernelArguments: guestKernelArguments({ name: "dbg" }),
            },
            ready: { agent: true, timeoutSeconds: 300 },
            stateDir,
        })
    ).outs as VirtualMachineOutputs;
}, 400_000);

afterAll(async () => {
    if (outs) await vmResource.remove("", outs).catch(() => undefined);
    expect(processesMentioning(dir)).toEqual([]);
    await rm(dir, { recursive: true, force: true });
}, 120_000);

const CLI = path.join(__dirname, "..", "..", "sdk", "cli.ts");
const HOOK = `
const ts = require(${JSON.stringify(require.resolve("typescript"))});
const fs = require("fs");
require.extensions[".ts"] = (m, file) => m._compile(ts.transpileModule(fs.readFileSync(file, "utf8"), { compilerOptions: { module: ts.ModuleKind.CommonJS, target: ts.ScriptTarget.ES2022, esModuleInterop: true } }).outputText, file);
`;

/** The command as `npx pulumi-qemu ARGS` runs it, from the TypeScript source. */
function cli(args: string[], input?: string): execa.ExecaChildProcess {
    return execa(
        process.execPath,
        [
            "-e",
            `${HOOK}process.argv = [process.argv[0], "pulumi-qemu", ...${JSON.stringify(args)}]; require(${JSON.stringify(CLI)});`,
        ],
        {
            reject: false,
            timeout: 120_000,
            env: { PULUMI_QEMU_STATE_DIR: "/nonexistent-so-the-flag-is-used" },
            ...(input !== undefined ? { input } : {}),
        },
    );
}

/** Feeds the prompt one line at a time, each after the output shows `until`. */
async function converse(child: execa.ExecaChildProcess, steps: { send: string; until: RegExp }[]): Promise<string> {
    let out = "";
    child.stdout!.on("data", (d: Buffer) => (out += d.toString("utf8")));
    child.stderr!.on("data", (d: Buffer) => (out += d.toString("utf8")));
    try {
        for (const step of steps) {
            const from = out.length;
            child.stdin!.write(step.send);
            const deadline = Date.now() + 60_000;
            while (!step.until.test(out.slice(from))) {
                if (Date.now() > deadline)
                    throw new Error(
                        `no ${step.until} after sending ${JSON.stringify(step.send)}; output so far:\n${out}`,
                    );
                await new Promise((r) => setTimeout(r, 50));
            }
        }
    } catch (err) {
        child.kill("SIGKILL");
        throw err;
    }
    child.stdin!.end();
    await child;
    return out;
}

test("list shows the running VM with its name, state and agent", async () => {
    const r = await cli(["list", "--state-dir", stateDir]);
    expect(r.exitCode).toBe(0);
    const line = r.stdout.split("\n").find((l) => l.includes(path.basename(outs.vmDir)));
    expect(line).toMatch(/dbg\s+running\s+shell\s+\d+/);
});

test("shell: a prompt, the guest's answer, a failing command's exit code; exit ends it", async () => {
    const cmd = attachCommand("shell", outs);
    expect(cmd).toBe(
        `npx pulumi-qemu shell --state-dir ${shellQuote(stateDir)} ${shellQuote(path.basename(outs.vmDir))}`,
    );
    // Run exactly what was printed, less `npx pulumi-qemu`.
    const args = cmd
        .split(" ")
        .slice(2)
        .map((a) => a.replace(/^'(.*)'$/, "$1"));
    const child = cli(args);
    const out = await converse(child, [
        { send: "", until: /dbg# $/ },
        { send: "echo hello-$((6*7)); uname -s\n", until: /hello-42\nLinux\ndbg# $/ },
        { send: "echo oops >&2; false\n", until: /oops\n\[exit 1\]\ndbg# $/ },
        { send: "exit\n", until: /\n$/ },
    ]);
    expect((await child).exitCode).toBe(0);
    expect(out).toContain("hello-42");
});

test("qmp: query-status answers running; a bad line gets help, not an exit", async () => {
    const child = cli(["qmp", "--state-dir", stateDir, "dbg"]);
    await converse(child, [
        { send: "", until: /\(qmp\) $/ },
        { send: "query-status\n", until: /"status": "running"[\s\S]*\(qmp\) $/ },
        { send: "query-status {not json\n", until: /the arguments are not JSON[\s\S]*\(qmp\) $/ },
        { send: "no-such-command\n", until: /error: [\s\S]*\(qmp\) $/ },
    ]);
    expect((await child).exitCode).toBe(0);
});

test("console prints the serial log; a VM that is not there is named with what there is", async () => {
    const child = cli(["console", "--state-dir", stateDir, "dbg"]);
    let out = "";
    child.stdout!.on("data", (d: Buffer) => (out += d.toString("utf8")));
    const deadline = Date.now() + 30_000;
    while (!out.includes(READY_MARKER) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    child.kill("SIGINT");
    await child;
    expect(out).toContain(READY_MARKER);

    const r = await cli(["shell", "--state-dir", stateDir, "nope"]);
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toMatch(/no VM "nope" in .*\/vms \(VMs there: dbg \(/);
});

test("a failed test with PULUMI_QEMU_KEEP_FAILED=1 keeps its fleet and prints the commands to attach", async () => {
    const f = fleet({ dbg: outs });
    const logged: string[] = [];
    const keep = process.env.PULUMI_QEMU_KEEP_FAILED;
    process.env.PULUMI_QEMU_KEEP_FAILED = "1";
    try {
        await expect(
            f.debugOnFailure(
                async () => {
                    throw new Error("the test failed");
                },
                (line) => logged.push(line),
            ),
        ).rejects.toThrow("the test failed");
    } finally {
        if (keep === undefined) delete process.env.PULUMI_QEMU_KEEP_FAILED;
        else process.env.PULUMI_QEMU_KEEP_FAILED = keep;
        f.close();
    }
    expect(f.kept).toBe(true);
    expect(logged.join("\n")).toContain(attachCommand("shell", outs));
    expect(logged.join("\n")).toContain(attachCommand("qmp", outs));
});

test("--outputs: the VMs of a stack's outputs (pulumi stack output --json), by the output that holds them", async () => {
    // What `pulumi stack output --json` prints for a program that exports the VM whole, one nested
    // in an object, a string, and a VM that is gone (its directory no longer there).
    const gone = { ...outs, vmDir: path.join(stateDir, "vms", "vm-GONE00") };
    const outputs = { web: outs, fleet: { members: [outs] }, url: "http://x", old: gone };
    const file = path.join(dir, "outputs.json");
    await writeFile(file, JSON.stringify(outputs));
    const id = path.basename(outs.vmDir);

    const listed = await cli(["list", "--outputs", file]);
    expect(listed.exitCode).toBe(0);
    const lines = listed.stdout.split("\n");
    expect(lines[0]).toMatch(/^OUTPUT\s+ID\s+NAME\s+STATE/);
    // Exported twice, listed once under both names.
    expect(lines.find((l) => l.startsWith("web,"))).toMatch(
        new RegExp(`^web,fleet\\.members\\[0\\]\\s+${id}\\s+dbg\\s+running\\s+shell`),
    );
    expect(lines.filter((l) => l.includes(id))).toHaveLength(1);
    expect(lines.find((l) => l.startsWith("old "))).toMatch(/stopped \(/);
    expect(listed.stdout).not.toContain("url");

    // From standard input, as `pulumi stack output --json | npx pulumi-qemu list --outputs -`.
    const piped = await cli(["list", "--outputs", "-"], JSON.stringify(outputs));
    expect(piped.stdout).toBe(listed.stdout);

    // Either output's name attaches, and so does its id (one VM, though exported twice).
    const byId = await cli(["qmp", "--outputs", file, id], "query-status\n");
    expect(byId.stderr).toBe("");
    expect(byId.stdout).toMatch(/"status": "running"/);
    const child = cli(["shell", "--outputs", file, "fleet.members[0]"]);
    await converse(child, [
        { send: "", until: /dbg# $/ },
        { send: "echo via-outputs\n", until: /via-outputs\ndbg# $/ },
        { send: "exit\n", until: /\n$/ },
    ]);
    expect((await child).exitCode).toBe(0);

    const missing = await cli(["qmp", "--outputs", file, "nope"]);
    expect(missing.exitCode).toBe(1);
    expect(missing.stderr).toMatch(
        /no VM "nope" in the outputs in .*outputs\.json \(VMs there: web, fleet\.members\[0\] \(vm-\w+\), old \(vm-GONE00\)\)/,
    );
    const both = await cli(["list", "--outputs", file, "--state-dir", stateDir]);
    expect(both.exitCode).toBe(2);
    expect(both.stderr).toMatch(/give one/);
    const notJson = await cli(["list", "--outputs", "-"], "Current stack outputs (2):");
    expect(notJson.exitCode).toBe(1);
    expect(notJson.stderr).toMatch(/not JSON .*pulumi stack output --json/);
});
