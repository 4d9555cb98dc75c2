import { existsSync } from "node:fs";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import execa from "execa";
import { assertBuilt, MAIN_ROOT } from "../engine/driver";
import { destroy, loadState, up, type ProjectOptions, type RunSummary } from "../engine/miniEngine";
import { startQemuPlugin } from "../engine/plugin";
import { writeProgram } from "../engine/program";
import { ensureTestGuest, guestKernelArguments, READY_MARKER } from "../guest/testGuest";
import { migrateExport, migrateResources, type StateResource } from "../../provider/plugin/migrateState";

/**
 * Moving a stack from the dynamic resources to the provider plugin keeps every resource (docs/
 * drift-and-import.md, "Moving from dynamic resources to the plugin"): a program of dynamic
 * resources is brought up through the mini engine, its state is migrated with the package's
 * `pulumi-qemu-migrate-state`, and the same program declaring the plugin's tokens comes up with
 * no create, replace, update or delete — the very same QEMU still running. Plus the rewrite itself
 * on a `pulumi stack export` document: URNs, parents, dependencies, the default provider.
 */

const PROGRAM = `
const pulumi = require("@pulumi/pulumi");
const qemu = require("pulumi-qemu");
const cfg = new pulumi.Config();
const viaPlugin = cfg.getBoolean("plugin") === true;
// The same resource either way: the npm package's dynamic class, or the plugin's token (as a generated SDK declares it).
function declare(kind, name, args, outputs) {
    if (!viaPlugin) return new qemu[kind](name, args);
    return new pulumi.CustomResource("qemu:index:" + kind, name, { ...Object.fromEntries(outputs.map((k) => [k, undefined])), ...args });
}
const disk = declare("DiskImage", "scratch", { source: { kind: "blank", size: "16M", format: "qcow2" } }, ["path", "inputHash"]);
const vm = declare("VirtualMachine", "vm", {
    vm: { name: "migrate", accel: "tcg", kernel: cfg.require("kernel"), initrd: cfg.require("initrd"), kernelArguments: cfg.requireObject("kernelArguments"),
          disks: [{ path: disk.path, format: "qcow2", inputHash: disk.inputHash }] },
    ready: { serialPattern: cfg.require("ready") },
}, ["pid", "processStartTime", "argvHash"]);
exports.pid = vm.pid;
exports.started = vm.processStartTime;
exports.disk = disk.path;
`;

let work: string;
let opts: ProjectOptions;

beforeAll(async () => {
    assertBuilt();
    const guest = await ensureTestGuest();
    work = await mkdtemp(path.join(os.tmpdir(), "pq-migrate-"));
    const dir = path.join(work, "program");
    await writeProgram(dir, "pq-migrate", PROGRAM);
    const env = { PULUMI_QEMU_STATE_DIR: path.join(work, "qs") };
    opts = {
        dir,
        project: "pq-migrate",
        stack: "test",
        statePath: path.join(work, "state.json"),
        env,
        // The plugin runs with the program's environment, as the engine starts it: the same state directory.
        plugins: { qemu: (engineAddress) => startQemuPlugin(engineAddress, { env }) },
        config: {
            kernel: guest.kernel,
            initrd: guest.initrd,
            kernelArguments: guestKernelArguments({ name: "migrate" }),
            ready: READY_MARKER,
        },
    };
}, 180_000);

afterAll(async () => {
    if (opts && existsSync(opts.statePath))
        await destroy(opts).catch((err) => console.error(`cleanup destroy: ${err.message}`));
    if (work) await rm(work, { recursive: true, force: true });
}, 120_000);

const changes = (s: RunSummary) => s.steps.filter((st) => st.op !== "same");

test("dynamic resources migrated to the plugin: no step but `same`, the same QEMU running", async () => {
    const first = await up(opts);
    expect(first.counts.create).toBe(2);
    const before = await loadState(opts.statePath);
    expect(before.resources.map((r) => r.type)).toEqual(
        expect.arrayContaining(["pulumi-nodejs:dynamic/qemu:DiskImage", "pulumi-nodejs:dynamic/qemu:VirtualMachine"]),
    );

    // The mini engine's state is the export's resource list without providers (it does not model
    // provider resources, the real engine does): the same function, its default provider left out.
    const migrated = migrateResources(
        before.resources as unknown as StateResource[],
        "0.2.0",
        "00000000-0000-4000-8000-000000000000",
    );
    const resources = migrated.resources
        .filter((r) => !r.type.startsWith("pulumi:providers:"))
        .map(({ provider: _p, ...r }) => r);
    await writeFile(opts.statePath, JSON.stringify({ resources }, null, 2));

    const second = await up({ ...opts, config: { ...opts.config, plugin: true } });
    expect(changes(second)).toEqual([]);
    expect(second.outputs.pid).toBe(first.outputs.pid);
    expect(second.outputs.started).toBe(first.outputs.started);
    expect(second.outputs.disk).toBe(first.outputs.disk);
    const after = await loadState(opts.statePath);
    expect(after.resources.map((r) => r.type)).toEqual(
        expect.arrayContaining(["qemu:index:DiskImage", "qemu:index:VirtualMachine"]),
    );
    // The QEMU that the dynamic create started is the one still running.
    const pid = Number(first.outputs.pid);
    expect(existsSync(`/proc/${pid}`)).toBe(true);
}, 600_000);

test("the export rewrite: types, URNs and every reference to them, __provider gone, the default provider added", async () => {
    const stack = "urn:pulumi:dev::fleet::pulumi:pulumi:Stack::fleet-dev";
    const disk = "urn:pulumi:dev::fleet::pulumi-nodejs:dynamic/qemu:DiskImage::disk";
    const vm = "urn:pulumi:dev::fleet::pulumi-nodejs:dynamic/qemu:VirtualMachine::web";
    const other = "urn:pulumi:dev::fleet::aws:s3/bucket:Bucket::logs";
    const doc = {
        version: 3,
        deployment: {
            manifest: {},
            resources: [
                { urn: stack, custom: false, type: "pulumi:pulumi:Stack" },
                {
                    urn: "urn:pulumi:dev::fleet::pulumi:providers:pulumi-nodejs::default",
                    custom: true,
                    id: "p1",
                    type: "pulumi:providers:pulumi-nodejs",
                },
                {
                    urn: disk,
                    custom: true,
                    id: "/s/images/a.qcow2",
                    type: "pulumi-nodejs:dynamic/qemu:DiskImage",
                    parent: stack,
                    inputs: {
                        __provider: "exports.handler = …",
                        __timeouts: { create: 60 },
                        source: { kind: "blank" },
                    },
                    outputs: { __provider: "…", path: "/s/images/a.qcow2" },
                },
                {
                    urn: vm,
                    custom: true,
                    id: "vm-1",
                    type: "pulumi-nodejs:dynamic/qemu:VirtualMachine",
                    parent: stack,
                    dependencies: [disk],
                    propertyDependencies: { vm: [disk], __provider: [] },
                    inputs: { __provider: "…" },
                    outputs: { pid: 7 },
                },
                {
                    urn: other,
                    custom: true,
                    id: "b",
                    type: "aws:s3/bucket:Bucket",
                    parent: stack,
                    dependencies: [vm],
                    deletedWith: vm,
                    inputs: { __provider: "kept: not ours" },
                },
            ],
        },
    };
    const { doc: out, moved } = migrateExport(doc, "0.2.0", "new-id");
    const resources = (out as typeof doc).deployment.resources as StateResource[];
    expect(moved.size).toBe(2);
    const byType = (t: string) => resources.find((r) => r.type === t)!;
    const provider = byType("pulumi:providers:qemu");
    expect(provider.urn).toBe("urn:pulumi:dev::fleet::pulumi:providers:qemu::default_0_2_0");
    const newVm = byType("qemu:index:VirtualMachine");
    const newDisk = byType("qemu:index:DiskImage");
    expect(newDisk.urn).toBe("urn:pulumi:dev::fleet::qemu:index:DiskImage::disk");
    expect(newVm.urn).toBe("urn:pulumi:dev::fleet::qemu:index:VirtualMachine::web");
    expect(newVm.provider).toBe(`${provider.urn}::new-id`);
    expect(newVm.dependencies).toEqual([newDisk.urn]);
    expect(newVm.propertyDependencies).toEqual({ vm: [newDisk.urn] });
    expect(newDisk.inputs).toEqual({ source: { kind: "blank" } });
    expect(newDisk.outputs).toEqual({ path: "/s/images/a.qcow2" });
    const bucket = byType("aws:s3/bucket:Bucket");
    expect(bucket.dependencies).toEqual([newVm.urn]);
    expect(bucket.deletedWith).toBe(newVm.urn);
    expect(bucket.inputs).toEqual({ __provider: "kept: not ours" });
    // Run again: nothing left to move, nothing added.
    const again = migrateExport(out, "0.2.0", "other-id");
    expect(again.moved.size).toBe(0);
    expect(again.doc).toEqual(out);
    expect(() => migrateExport({ version: 2 }, "0.2.0", "x")).toThrow(/version 3/);
});

test("the packed command line: pulumi-qemu-migrate-state EXPORT.json", async () => {
    const file = path.join(work, "export.json");
    await writeFile(
        file,
        JSON.stringify({
            version: 3,
            deployment: {
                resources: [
                    {
                        urn: "urn:pulumi:d::p::pulumi-nodejs:dynamic/qemu:Network::lan",
                        type: "pulumi-nodejs:dynamic/qemu:Network",
                        custom: true,
                        id: "n",
                    },
                ],
            },
        }),
    );
    const pkg = JSON.parse(await readFile(path.join(MAIN_ROOT, "package.json"), "utf8"));
    const bin = pkg.bin["pulumi-qemu-migrate-state"];
    const r = await execa(process.execPath, [path.join(MAIN_ROOT, bin), file]);
    const doc = JSON.parse(r.stdout);
    expect(doc.deployment.resources.map((x: StateResource) => x.type)).toEqual([
        "pulumi:providers:qemu",
        "qemu:index:Network",
    ]);
    expect(r.stderr).toMatch(/1 resource\(s\) moved/);
});
