import { existsSync, readFileSync, statSync } from "node:fs";
import { chmod, copyFile, mkdir, mkdtemp, readFile, rename, rm, writeFile } from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import { openDriver, type Driver } from "../engine/driver";
import { makeSecret, type Props } from "../engine/wire";
import { ensureTestGuest, guestKernelArguments, READY_MARKER } from "../guest/testGuest";
import { isRunning } from "../support/process";

/**
 * `pulumi import` through our plugin, as the engine does it: Read with the id alone, then
 * Check of the program's inputs and Diff against what Read returned, which must show no change
 * (the engine refuses an import whose diff changes anything). Then the adopted image is managed
 * like one created in this stack: a refresh keeps it, destroy deletes it. What cannot be
 * adopted is refused with the reason and the way out.
 */

const DIFF_NONE = 1;
const DIFF_SOME = 2;

let driver: Driver;
let dir: string;

beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), "pq-import-"));
    driver = await openDriver("qemu");
}, 60_000);

afterAll(async () => {
    await driver?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
});

/** Creates an image in one "stack" and forgets its state, as a lost or other stack would. */
async function madeElsewhere(name: string, inputs: Props) {
    const urn = driver.urn("DiskImage", name);
    const checked = await driver.plugin.check(urn, {}, driver.news("DiskImage", inputs));
    expect(checked.failures).toEqual([]);
    const made = await driver.plugin.create(urn, checked.inputs);
    return made.properties as { path: string; inputHash: string };
}

/** The engine's import step: Read(id), Check(read inputs, program inputs), Diff(read outputs, checked). */
async function importAs(
    name: string,
    id: string,
    programInputs: Props,
    resource: "DiskImage" | "RunScript" = "DiskImage",
) {
    const urn = driver.urn(resource, name);
    const read = await driver.plugin.read(id, urn, {}, {});
    const checked = await driver.plugin.check(urn, read.inputs ?? {}, driver.news(resource, programInputs));
    expect(checked.failures).toEqual([]);
    const diff = await driver.plugin.diff(read.id, urn, read.properties, checked.inputs, read.inputs);
    return { urn, read, checked, diff };
}

const blank = (size: string, extra: Props = {}) => ({ source: { kind: "blank", size, format: "qcow2" }, ...extra });

test("an image at its default path in a state directory: import shows no change, refresh keeps it, destroy deletes it", async () => {
    const stateDir = path.join(dir, "state");
    const made = await madeElsewhere("orig", blank("8M", { stateDir }));

    const { urn, read, checked, diff } = await importAs("adopted", made.path, blank("8M", { stateDir }));
    expect(read.id).toBe(made.path);
    expect(read.properties).toMatchObject({
        path: made.path,
        inputHash: made.inputHash,
        format: "qcow2",
        virtualSizeBytes: 8 * 1024 * 1024,
    });
    // Enough for a generated program: where it is, without the path it would get anyway, and the
    // source the image tells (tests/protocol/importSource.test.ts has the other kinds).
    expect(read.inputs).toEqual({ stateDir, source: { kind: "blank", size: "8M", format: "qcow2" } });
    expect(diff).toEqual({ changes: DIFF_NONE, replaces: [], deleteBeforeReplace: false });

    // Inputs that do not match what the image was made from would replace it: the engine refuses such an import.
    const other = await importAs("adopted-wrong", made.path, blank("16M", { stateDir }));
    expect(other.diff.changes).toBe(DIFF_SOME);
    expect(other.diff.replaces).toContain("source");

    const refreshed = await driver.plugin.read(read.id, urn, read.properties, checked.inputs);
    expect(refreshed.id).toBe(made.path);
    expect(refreshed.properties.drift).toBeUndefined();
    await driver.plugin.delete(read.id, urn, refreshed.properties, checked.inputs);
    expect(existsSync(made.path)).toBe(false);
    expect(existsSync(`${made.path}.pulumi-qemu.json`)).toBe(false);
    expect(driver.engine.errors()).toEqual([]);
});

test("an image at a path the program names, and an overlay on it", async () => {
    const stateDir = path.join(dir, "state2");
    const basePath = path.join(dir, "base.raw");
    const base = await madeElsewhere("base", {
        stateDir,
        path: basePath,
        source: { kind: "blank", size: "4M", format: "raw" },
        mode: "0640",
    });
    const overlayInputs = {
        stateDir,
        path: path.join(dir, "top.qcow2"),
        source: { kind: "overlay", backing: basePath, backingFormat: "raw", backingInputHash: base.inputHash },
    };
    const overlay = await madeElsewhere("top", overlayInputs);

    const b = await importAs("base", basePath, {
        stateDir,
        path: basePath,
        source: { kind: "blank", size: "4M", format: "raw" },
        mode: "0640",
    });
    expect(b.read.inputs).toEqual({
        path: basePath,
        mode: "0640",
        source: { kind: "blank", size: "4M", format: "raw" },
    });
    expect(b.diff.changes).toBe(DIFF_NONE);
    const t = await importAs("top", overlay.path, overlayInputs);
    expect(t.read.properties).toMatchObject({ backingPath: basePath });
    expect(t.diff.changes).toBe(DIFF_NONE);
    // The adopted overlay notices its backing image changing, as one created here would.
    await writeFile(basePath, Buffer.alloc(4 * 1024 * 1024, 1));
    const refreshed = await driver.plugin.read(t.read.id, t.urn, t.read.properties, t.checked.inputs);
    expect(refreshed.properties.drift).toMatch(/backing file .* changed/);
    expect(driver.engine.errors()).toEqual([]);
});

test("what cannot be adopted is refused with the reason and the way out, and left alone", async () => {
    const urn = driver.urn("DiskImage", "refused");
    const foreign = path.join(dir, "foreign.raw");
    await writeFile(foreign, Buffer.alloc(1024 * 1024));
    await expect(driver.plugin.read(foreign, urn, {}, {})).rejects.toThrow(
        /has no pulumi-qemu record .* will not adopt it .*source: \{ kind: "file", path: /,
    );
    expect(existsSync(foreign)).toBe(true);

    await expect(driver.plugin.read("images/x.qcow2", urn, {}, {})).rejects.toThrow(
        /the id of a DiskImage is the image file's absolute path/,
    );
    await expect(driver.plugin.read(path.join(dir, "nothing-here.qcow2"), urn, {}, {})).rejects.toThrow(
        /there is no file at that path/,
    );

    // Ours once, but replaced since by another file with the same name: not the image the record describes.
    const made = await madeElsewhere("replaced", blank("1M", { stateDir: path.join(dir, "state3") }));
    await copyFile(made.path, `${made.path}.copy`);
    await rename(`${made.path}.copy`, made.path);
    await expect(driver.plugin.read(made.path, urn, {}, {})).rejects.toThrow(/not the one its record describes/);

    const script = path.join(dir, "mine.sh");
    await writeFile(script, '#!/bin/sh\nexec qemu-system-x86_64 -accel tcg "$@"\n', { mode: 0o700 });
    await expect(driver.plugin.read(script, driver.urn("RunScript", "s"), {}, {})).rejects.toThrow(
        /not a launcher pulumi-qemu wrote .* will not be adopted/,
    );
    expect(existsSync(script)).toBe(true);

    // Other resources say plainly that they cannot be imported yet.
    await expect(driver.plugin.read("net-abc", driver.urn("Network", "net"), {}, {})).rejects.toThrow(
        /cannot adopt an existing Network/,
    );
});

describe("RunScript", () => {
    const vm = (memoryMiB: number) => ({
        name: "imp",
        accel: "tcg",
        memoryMiB,
        kernel: "/boot/vmlinuz",
        kernelArguments: ["console=ttyS0", "quiet it's"],
    });

    async function writtenElsewhere(name: string, inputs: Props) {
        const urn = driver.urn("RunScript", name);
        const checked = await driver.plugin.check(urn, {}, driver.news("RunScript", inputs));
        expect(checked.failures).toEqual([]);
        return (await driver.plugin.create(urn, checked.inputs)).properties as {
            path: string;
            argv: string[];
            contentHash: string;
        };
    }

    test("a launcher at its default place: import shows no change; a changed vm would replace it; refresh, a new mode and destroy work", async () => {
        const stateDir = path.join(dir, "rs-state");
        const made = await writtenElsewhere("orig", { stateDir, vm: vm(128) });
        const { urn, read, checked, diff } = await importAs(
            "adopted",
            made.path,
            { stateDir, vm: vm(128) },
            "RunScript",
        );
        expect(read.properties).toMatchObject({
            path: made.path,
            argv: made.argv,
            accel: "tcg",
            contentHash: made.contentHash,
            mode: "0500",
        });
        expect(read.inputs).toEqual({ stateDir });
        expect(diff).toEqual({ changes: DIFF_NONE, replaces: [], deleteBeforeReplace: false });

        const other = await importAs("adopted-wrong", made.path, { stateDir, vm: vm(256) }, "RunScript");
        expect(other.diff.changes).toBe(DIFF_SOME);
        expect(other.diff.replaces).toContain("vm");

        const refreshed = await driver.plugin.read(read.id, urn, read.properties, checked.inputs);
        expect(refreshed.properties.drift).toBeUndefined();
        // A new mode rewrites the adopted launcher in place; from then on its state is complete.
        const widened = await driver.plugin.check(
            urn,
            checked.inputs,
            driver.news("RunScript", { stateDir, vm: vm(128), mode: "0700" }),
        );
        const modeDiff = await driver.plugin.diff(read.id, urn, refreshed.properties, widened.inputs, checked.inputs);
        expect(modeDiff).toEqual({ changes: DIFF_SOME, replaces: [], deleteBeforeReplace: false });
        const updated = await driver.plugin.update(read.id, urn, refreshed.properties, widened.inputs, checked.inputs);
        expect(updated.properties).toMatchObject({ path: made.path, mode: "0700", argvHash: expect.any(String) });
        expect(updated.properties.imported).toBeUndefined();
        await driver.plugin.delete(read.id, urn, updated.properties, widened.inputs);
        expect(existsSync(made.path)).toBe(false);
        expect(driver.engine.errors()).toEqual([]);
    });

    test("a launcher at a path the program names, with its mode", async () => {
        const file = path.join(dir, "launch-web.sh");
        const inputs = { path: file, mode: "0700", vm: vm(192) };
        await writtenElsewhere("web", inputs);
        const { read, diff } = await importAs("web", file, inputs, "RunScript");
        expect(read.inputs).toEqual({ path: file, mode: "0700" });
        expect(diff.changes).toBe(DIFF_NONE);
        expect(driver.engine.errors()).toEqual([]);
    });
});

describe("VirtualMachine", () => {
    // A plugin of its own, whose default state directory is `vmState`: a VM there is imported by its id alone.
    let vmDriver: Driver;
    let vdir: string;
    let vmState: string;
    let guest: { kernel: string; initrd: string };
    const started: number[] = [];

    beforeAll(async () => {
        guest = await ensureTestGuest();
        // Short: the QMP socket path must fit in 107 bytes.
        vdir = await mkdtemp(path.join(os.tmpdir(), "pq-vimp-"));
        vmState = path.join(vdir, "d");
        vmDriver = await openDriver("qemu", { env: { PULUMI_QEMU_STATE_DIR: vmState } });
    }, 300_000);

    afterAll(async () => {
        await vmDriver?.close();
        for (const pid of started) if (isRunning(pid)) process.kill(pid, "SIGKILL");
        if (vdir) await rm(vdir, { recursive: true, force: true });
    });

    const vmInputs = (name: string, extra: Props = {}, memoryMiB = 256) => ({
        vm: {
            name,
            accel: "tcg",
            memoryMiB,
            kernel: guest.kernel,
            initrd: guest.initrd,
            kernelArguments: guestKernelArguments({ name }),
        },
        ready: { serialPattern: READY_MARKER, timeoutSeconds: 180 },
        ...extra,
    });

    /** Starts a VM through the plugin; its state is then forgotten, as a lost stack's would be. */
    async function startedElsewhere(name: string, inputs: Props) {
        const urn = vmDriver.urn("VirtualMachine", name);
        const checked = await vmDriver.plugin.check(urn, {}, vmDriver.news("VirtualMachine", inputs));
        expect(checked.failures).toEqual([]);
        const made = await vmDriver.plugin.create(urn, checked.inputs);
        const outs = made.properties as { pid: number; vmDir: string; argvHash: string };
        started.push(outs.pid);
        return { id: made.id, outs, checked: checked.inputs, props: made.properties };
    }

    async function importVm(name: string, id: string, programInputs: Props) {
        const urn = vmDriver.urn("VirtualMachine", name);
        const read = await vmDriver.plugin.read(id, urn, {}, {});
        const checked = await vmDriver.plugin.check(
            urn,
            read.inputs ?? {},
            vmDriver.news("VirtualMachine", programInputs),
        );
        expect(checked.failures).toEqual([]);
        const diff = await vmDriver.plugin.diff(read.id, urn, read.properties, checked.inputs, read.inputs);
        return { urn, read, checked, diff };
    }

    test("a running VM, by its id and by its directory's path: import shows no change, refresh keeps it, an update is remembered, delete stops it and removes its directory", async () => {
        const inputs = vmInputs("imp-vm", { stateDir: vmState });
        const made = await startedElsewhere("orig", inputs);
        expect(made.id).toMatch(/^vm-[A-Za-z0-9]{6}$/);
        const record = path.join(made.outs.vmDir, "record.json");
        // What import rebuilds the state from stays the user's alone.
        expect(statSync(record).mode & 0o777).toBe(0o600);
        expect(statSync(made.outs.vmDir).mode & 0o777).toBe(0o700);

        // A record written before records kept the inputs (the format of older versions) is refused, and nothing changes.
        const kept = await readFile(record, "utf8");
        await writeFile(
            record,
            JSON.stringify({ tool: "pulumi-qemu", resource: "VirtualMachine", version: 1, state: "running" }),
            { mode: 0o600 },
        );
        await expect(vmDriver.plugin.read(made.id, vmDriver.urn("VirtualMachine", "old"), {}, {})).rejects.toThrow(
            new RegExp(
                `import of VirtualMachine "${made.id}": its record was written by an older pulumi-qemu.*Nothing was touched`,
            ),
        );
        expect(isRunning(made.outs.pid)).toBe(true);
        await writeFile(record, kept, { mode: 0o600 });

        for (const id of [made.id, path.join(vmState, "vms", made.id)]) {
            const { read, diff } = await importVm("adopted", id, inputs);
            expect(read.id).toBe(made.id);
            expect(read.properties).toMatchObject({
                pid: made.outs.pid,
                vmDir: made.outs.vmDir,
                argvHash: made.outs.argvHash,
                status: "running",
            });
            expect(read.inputs).toEqual(made.checked);
            expect(diff).toEqual({ changes: DIFF_NONE, replaces: [], deleteBeforeReplace: false });
        }

        // A program declaring another VM would replace it: the engine refuses such an import.
        const other = await importVm("adopted-wrong", made.id, vmInputs("imp-vm", { stateDir: vmState }, 192));
        expect(other.diff.changes).toBe(DIFF_SOME);
        expect(other.diff.replaces).toContain("vm");

        const { urn, read, checked } = await importVm("adopted", made.id, inputs);
        const refreshed = await vmDriver.plugin.read(read.id, urn, read.properties, checked.inputs);
        expect(refreshed).toMatchObject({ id: made.id, properties: { pid: made.outs.pid, status: "running" } });

        // An in-place update is written to the record too: a later import finds the VM as it is now.
        const patientInputs = { ...inputs, ready: { serialPattern: READY_MARKER, timeoutSeconds: 240 } };
        const patient = await vmDriver.plugin.check(
            urn,
            checked.inputs,
            vmDriver.news("VirtualMachine", patientInputs),
        );
        const updated = await vmDriver.plugin.update(
            read.id,
            urn,
            refreshed.properties,
            patient.inputs,
            checked.inputs,
        );
        const again = await importVm("adopted-again", made.id, patientInputs);
        expect(again.read.inputs).toEqual(patient.inputs);
        expect(again.diff.changes).toBe(DIFF_NONE);

        await vmDriver.plugin.delete(read.id, urn, updated.properties, patient.inputs);
        expect(isRunning(made.outs.pid)).toBe(false);
        expect(existsSync(made.outs.vmDir)).toBe(false);
        expect(vmDriver.engine.errors()).toEqual([]);
    }, 400_000);

    test("refused, naming the id, why and what to do: malformed ids, unknown ids, directories not ours, a VM whose inputs held secrets, one whose QEMU died, one a refresh found dead", async () => {
        const urn = vmDriver.urn("VirtualMachine", "refused");
        const read = (id: string) => vmDriver.plugin.read(id, urn, {}, {});
        for (const bad of [
            "vm-abc",
            "my-vm",
            "d/vms/vm-AbC123",
            path.join(vdir, "vm-AbC123"),
            `${vmState}/vms/../vms/vm-AbC123`,
        ]) {
            await expect(read(bad)).rejects.toThrow(
                /the id of a VirtualMachine is its id, like vm-AbC123 .* or the absolute path of its directory, <stateDir>\/vms\/vm-AbC123/,
            );
        }
        await expect(read("vm-Zz9Zz9")).rejects.toThrow(
            /import of VirtualMachine "vm-Zz9Zz9": there is no VM directory of this user at .*vms\/vm-Zz9Zz9.*Nothing was touched/,
        );

        // A directory pulumi-qemu did not make, and one whose record others could have written: neither is believed.
        const vms = path.join(vmState, "vms");
        await mkdir(path.join(vms, "vm-Foreig"), { recursive: true, mode: 0o700 });
        await expect(read("vm-Foreig")).rejects.toThrow(/has no pulumi-qemu record of this user .* will not adopt it/);
        expect(existsSync(path.join(vms, "vm-Foreig"))).toBe(true);
        const plantedRecord = path.join(vms, "vm-Plante", "record.json");
        await mkdir(path.dirname(plantedRecord), { mode: 0o700 });
        await writeFile(
            plantedRecord,
            JSON.stringify({
                tool: "pulumi-qemu",
                resource: "VirtualMachine",
                version: 1,
                state: "running",
                inputs: {},
                outputs: {},
            }),
        );
        await chmod(plantedRecord, 0o622);
        await expect(read("vm-Plante")).rejects.toThrow(/has no pulumi-qemu record of this user/);

        // Secret inputs are not written to disk, so such a VM cannot be rebuilt from its record.
        const secretMarker = READY_MARKER;
        const made = await startedElsewhere("secret", {
            ...vmInputs("imp-secret"),
            ready: { serialPattern: makeSecret(secretMarker), timeoutSeconds: 180 },
        });
        expect(path.dirname(made.outs.vmDir)).toBe(vms);
        const recordText = readFileSync(path.join(made.outs.vmDir, "record.json"), "utf8");
        expect(recordText).not.toContain(secretMarker);
        await expect(read(made.id)).rejects.toThrow(
            new RegExp(
                `import of VirtualMachine "${made.id}": its record does not hold the inputs it was made from: its inputs held secrets`,
            ),
        );
        expect(isRunning(made.outs.pid)).toBe(true);

        process.kill(made.outs.pid, "SIGKILL");
        const until = Date.now() + 10_000;
        while (isRunning(made.outs.pid) && Date.now() < until) await new Promise((r) => setTimeout(r, 100));
        await expect(read(made.id)).rejects.toThrow(
            new RegExp(`import of VirtualMachine "${made.id}": it is not running .*let \`pulumi up\` start a new one`),
        );

        const gone = await vmDriver.plugin.read(
            made.id,
            vmDriver.urn("VirtualMachine", "secret"),
            made.props,
            made.checked,
        );
        expect(gone.id).toBe("");
        await expect(read(made.id)).rejects.toThrow(/it is not running: a refresh found its QEMU gone/);

        await vmDriver.plugin.delete(made.id, vmDriver.urn("VirtualMachine", "secret"), made.props, made.checked);
        expect(existsSync(made.outs.vmDir)).toBe(false);
        expect(vmDriver.engine.errors()).toEqual([]);
    }, 400_000);

    test("a VM made through the dynamic provider keeps no inputs (it cannot tell secrets): its import through the plugin is refused, saying why", async () => {
        const dynamic = await openDriver("dynamic");
        try {
            const urn = dynamic.urn("VirtualMachine", "dyn");
            const checked = await dynamic.plugin.check(
                urn,
                {},
                dynamic.news("VirtualMachine", vmInputs("imp-dyn", { stateDir: vmState })),
            );
            expect(checked.failures).toEqual([]);
            const made = await dynamic.plugin.create(urn, checked.inputs);
            const outs = made.properties as { pid: number; vmDir: string };
            started.push(outs.pid);
            const record = JSON.parse(readFileSync(path.join(outs.vmDir, "record.json"), "utf8"));
            expect(record).toMatchObject({
                tool: "pulumi-qemu",
                state: "running",
                withheld: expect.stringMatching(/dynamic provider/),
            });
            expect(record.inputs).toBeUndefined();
            await expect(vmDriver.plugin.read(made.id, vmDriver.urn("VirtualMachine", "dyn"), {}, {})).rejects.toThrow(
                /its record does not hold the inputs it was made from: it was created through the dynamic provider or the testing API, which cannot tell secret inputs/,
            );
            expect(isRunning(outs.pid)).toBe(true);
            await dynamic.plugin.delete(made.id, urn, made.properties, checked.inputs);
            expect(isRunning(outs.pid)).toBe(false);
            expect(dynamic.engine.errors()).toEqual([]);
        } finally {
            await dynamic.close();
        }
    }, 400_000);
});
