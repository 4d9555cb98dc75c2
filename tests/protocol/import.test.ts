import { existsSync } from "node:fs";
import { copyFile, mkdtemp, rename, rm, writeFile } from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import { openDriver, type Driver } from "../engine/driver";
import type { Props } from "../engine/wire";

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
async function importAs(name: string, id: string, programInputs: Props, resource: "DiskImage" | "RunScript" = "DiskImage") {
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
    expect(read.properties).toMatchObject({ path: made.path, inputHash: made.inputHash, format: "qcow2", virtualSizeBytes: 8 * 1024 * 1024 });
    // Enough for a generated program: where it is, without the path it would get anyway.
    expect(read.inputs).toEqual({ stateDir });
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
    const base = await madeElsewhere("base", { stateDir, path: basePath, source: { kind: "blank", size: "4M", format: "raw" }, mode: "0640" });
    const overlayInputs = { stateDir, path: path.join(dir, "top.qcow2"), source: { kind: "overlay", backing: basePath, backingFormat: "raw", backingInputHash: base.inputHash } };
    const overlay = await madeElsewhere("top", overlayInputs);

    const b = await importAs("base", basePath, { stateDir, path: basePath, source: { kind: "blank", size: "4M", format: "raw" }, mode: "0640" });
    expect(b.read.inputs).toEqual({ path: basePath, mode: "0640" });
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
    await expect(driver.plugin.read(foreign, urn, {}, {})).rejects.toThrow(/has no pulumi-qemu record .* will not adopt it .*source: \{ kind: "file", path: /);
    expect(existsSync(foreign)).toBe(true);

    await expect(driver.plugin.read("images/x.qcow2", urn, {}, {})).rejects.toThrow(/the id of a DiskImage is the image file's absolute path/);
    await expect(driver.plugin.read(path.join(dir, "nothing-here.qcow2"), urn, {}, {})).rejects.toThrow(/there is no file at that path/);

    // Ours once, but replaced since by another file with the same name: not the image the record describes.
    const made = await madeElsewhere("replaced", blank("1M", { stateDir: path.join(dir, "state3") }));
    await copyFile(made.path, `${made.path}.copy`);
    await rename(`${made.path}.copy`, made.path);
    await expect(driver.plugin.read(made.path, urn, {}, {})).rejects.toThrow(/not the one its record describes/);

    const script = path.join(dir, "mine.sh");
    await writeFile(script, "#!/bin/sh\nexec qemu-system-x86_64 -accel tcg \"$@\"\n", { mode: 0o700 });
    await expect(driver.plugin.read(script, driver.urn("RunScript", "s"), {}, {})).rejects.toThrow(/not a launcher pulumi-qemu wrote .* will not be adopted/);
    expect(existsSync(script)).toBe(true);

    // Other resources say plainly that they cannot be imported yet.
    await expect(driver.plugin.read("vm-abc", driver.urn("VirtualMachine", "vm"), {}, {})).rejects.toThrow(/cannot adopt an existing VirtualMachine/);
});

describe("RunScript", () => {
    const vm = (memoryMiB: number) => ({ name: "imp", accel: "tcg", memoryMiB, kernel: "/boot/vmlinuz", kernelArguments: ["console=ttyS0", "quiet it's"] });

    async function writtenElsewhere(name: string, inputs: Props) {
        const urn = driver.urn("RunScript", name);
        const checked = await driver.plugin.check(urn, {}, driver.news("RunScript", inputs));
        expect(checked.failures).toEqual([]);
        return (await driver.plugin.create(urn, checked.inputs)).properties as { path: string; argv: string[]; contentHash: string };
    }

    test("a launcher at its default place: import shows no change; a changed vm would replace it; refresh, a new mode and destroy work", async () => {
        const stateDir = path.join(dir, "rs-state");
        const made = await writtenElsewhere("orig", { stateDir, vm: vm(128) });
        const { urn, read, checked, diff } = await importAs("adopted", made.path, { stateDir, vm: vm(128) }, "RunScript");
        expect(read.properties).toMatchObject({ path: made.path, argv: made.argv, accel: "tcg", contentHash: made.contentHash, mode: "0500" });
        expect(read.inputs).toEqual({ stateDir });
        expect(diff).toEqual({ changes: DIFF_NONE, replaces: [], deleteBeforeReplace: false });

        const other = await importAs("adopted-wrong", made.path, { stateDir, vm: vm(256) }, "RunScript");
        expect(other.diff.changes).toBe(DIFF_SOME);
        expect(other.diff.replaces).toContain("vm");

        const refreshed = await driver.plugin.read(read.id, urn, read.properties, checked.inputs);
        expect(refreshed.properties.drift).toBeUndefined();
        // A new mode rewrites the adopted launcher in place; from then on its state is complete.
        const widened = await driver.plugin.check(urn, checked.inputs, driver.news("RunScript", { stateDir, vm: vm(128), mode: "0700" }));
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
