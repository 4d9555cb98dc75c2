import { existsSync, readdirSync, readFileSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import { assertBuilt } from "../engine/driver";
import { destroy, loadState, up, type ProjectOptions } from "../engine/miniEngine";
import { startQemuPlugin } from "../engine/plugin";
import { writeProgram } from "../engine/program";
import { ensureTestGuest, guestKernelArguments, READY_MARKER } from "../guest/testGuest";

/**
 * customTimeouts on the dynamic path (the npm package's classes, through the real
 * dynamic-provider plugin) and on the plugin path (the package's own provider plugin), through the
 * mini engine: a VM whose readiness never comes fails at its
 * `customTimeouts.create` instead of the readiness default (120 s), says which limit it hit, and
 * leaves nothing behind — no QEMU, no VM directory, nothing in the stack's state; with a generous
 * one the VM comes up as usual. (That a default wait follows a longer customTimeouts is in
 * tests/unit/callDeadline.test.ts: a real wait past 120 s would cost the suite two minutes.)
 */

const PROGRAM = `
const pulumi = require("@pulumi/pulumi");
const qemu = require("pulumi-qemu");
const cfg = new pulumi.Config();
const args = {
    vm: { name: "timeouts", accel: "tcg", kernel: cfg.require("kernel"), initrd: cfg.require("initrd"), kernelArguments: cfg.requireObject("kernelArguments") },
    ready: { serialPattern: cfg.require("ready") },
};
const options = { customTimeouts: { create: cfg.require("createTimeout") } };
// The npm package's dynamic class, or the plugin's token as a generated SDK declares it.
const vm = cfg.getBoolean("plugin") === true
    ? new pulumi.CustomResource("qemu:index:VirtualMachine", "slow", { pid: undefined, ...args }, options)
    : new qemu.VirtualMachine("slow", args, options);
exports.pid = vm.pid;
`;

let work: string;
let opts: ProjectOptions;
let stateDir: string;

beforeAll(async () => {
    assertBuilt();
    const guest = await ensureTestGuest();
    work = await mkdtemp(path.join(os.tmpdir(), "pq-timeouts-"));
    const dir = path.join(work, "program");
    await writeProgram(dir, "pq-timeouts", PROGRAM);
    stateDir = path.join(work, "qs");
    opts = {
        dir,
        project: "pq-timeouts",
        stack: "test",
        statePath: path.join(work, "state.json"),
        env: { PULUMI_QEMU_STATE_DIR: stateDir },
        // The plugin runs with the program's environment, as the engine starts it.
        plugins: {
            qemu: (engineAddress) => startQemuPlugin(engineAddress, { env: { PULUMI_QEMU_STATE_DIR: stateDir } }),
        },
        config: {
            kernel: guest.kernel,
            initrd: guest.initrd,
            kernelArguments: guestKernelArguments({ name: "timeouts" }),
        },
    };
}, 180_000);

afterAll(async () => {
    if (opts && existsSync(opts.statePath))
        await destroy(opts).catch((err) => console.error(`cleanup destroy: ${err.message}`));
    if (work) await rm(work, { recursive: true, force: true });
}, 120_000);

/** QEMU processes whose command line names this test's state directory. */
function qemusOfThisTest(): number[] {
    const pids: number[] = [];
    for (const entry of readdirSync("/proc")) {
        if (!/^\d+$/.test(entry)) continue;
        try {
            const cmdline = readFileSync(`/proc/${entry}/cmdline`, "utf8");
            if (cmdline.includes("qemu-system") && cmdline.includes(stateDir)) pids.push(Number(entry));
        } catch {
            // gone meanwhile
        }
    }
    return pids;
}

// The dynamic path gets customTimeouts as an input its classes add; the plugin as the timeout of
// the engine's Create request (which @pulumi/pulumi's provider server drops: plugin/requestTimeouts.ts).
describe.each(["dynamic", "plugin"])("through the %s provider", (kind) => {
    const plugin = kind === "plugin";

    test("a create past customTimeouts.create fails naming it, well before the readiness default, and leaves nothing", async () => {
        const t0 = Date.now();
        const err = await up({
            ...opts,
            config: { ...opts.config, plugin, ready: "a line this guest never prints", createTimeout: "8s" },
        }).catch((e: Error) => e);
        const seconds = (Date.now() - t0) / 1000;
        expect(err).toBeInstanceOf(Error);
        expect((err as Error).message).toMatch(/customTimeouts\.create \(8 s\)/);
        // The readiness default is 120 s; the program and plugins start in a few seconds.
        expect(seconds).toBeLessThan(60);
        expect(qemusOfThisTest()).toEqual([]);
        const vms = path.join(stateDir, "vms");
        expect(existsSync(vms) ? readdirSync(vms) : []).toEqual([]);
        expect((await loadState(opts.statePath)).resources.filter((r) => r.type.includes("VirtualMachine"))).toEqual(
            [],
        );
    }, 180_000);

    test("with a generous customTimeouts.create the VM comes up as usual, and destroy stops it", async () => {
        const r = await up({ ...opts, config: { ...opts.config, plugin, ready: READY_MARKER, createTimeout: "10m" } });
        expect(r.counts.create).toBe(1);
        const pid = Number(r.outputs.pid);
        expect(qemusOfThisTest()).toEqual([pid]);
        await destroy(opts);
        expect(qemusOfThisTest()).toEqual([]);
    }, 300_000);
});
