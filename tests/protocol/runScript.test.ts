import { existsSync, statSync } from "node:fs";
import { mkdtemp, readdir, rm, unlink } from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import { openDriver, type Driver, type PluginKind } from "../engine/driver";
import { UNKNOWN } from "../engine/wire";
import { ensureTestGuest } from "../guest/testGuest";

/** RunScript's lifecycle over gRPC, the engine's calls in the engine's order, through both plugins. */

const DIFF_NONE = 1;
const DIFF_SOME = 2;

describe.each<PluginKind>(["dynamic", "qemu"])("RunScript through the %s plugin", (kind) => {
    let driver: Driver;
    let dir: string;
    let guest: { kernel: string; initrd: string };

    beforeAll(async () => {
        guest = await ensureTestGuest();
        dir = await mkdtemp(path.join(os.tmpdir(), `pq-proto-rs-${kind}-`));
        driver = await openDriver(kind);
    }, 180_000);

    afterAll(async () => {
        await driver?.close();
        if (dir) await rm(dir, { recursive: true, force: true });
    });

    const inputs = (memoryMiB: number) => ({
        vm: {
            name: "proto",
            accel: "tcg",
            memoryMiB,
            kernel: guest.kernel,
            initrd: guest.initrd,
            kernelArguments: ["console=ttyS0"],
        },
        stateDir: path.join(dir, "state"),
    });

    test("create, no-op diff, replace on a changed VM, read after the file is gone, delete", async () => {
        const urn = driver.urn("RunScript", "launcher");
        const news = driver.news("RunScript", inputs(128));
        const checked = await driver.plugin.check(urn, {}, news);
        expect(checked.failures).toEqual([]);

        const made = await driver.plugin.create(urn, checked.inputs);
        const outs = made.properties as { path: string; argv: string[]; argvHash: string };
        expect(made.id).toBe(outs.path);
        expect(outs.path.startsWith(path.join(dir, "state") + path.sep)).toBe(true);
        expect(statSync(outs.path).mode & 0o111).not.toBe(0);
        expect(outs.argv).toEqual(expect.arrayContaining(["-kernel", guest.kernel, "-m", "128"]));
        expect(outs.argvHash).toMatch(/^[0-9a-f]{16,}$/);

        const again = await driver.plugin.check(urn, checked.inputs, driver.news("RunScript", inputs(128)));
        const same = await driver.plugin.diff(made.id, urn, made.properties, again.inputs, checked.inputs);
        expect(same).toEqual({ changes: DIFF_NONE, replaces: [], deleteBeforeReplace: false });

        const changed = await driver.plugin.check(urn, checked.inputs, driver.news("RunScript", inputs(256)));
        const diff = await driver.plugin.diff(made.id, urn, made.properties, changed.inputs, checked.inputs);
        expect(diff.changes).toBe(DIFF_SOME);
        expect(diff.replaces).toContain("vm");
        // Another argv is another default path: the new file can exist beside the old one.
        expect(diff.deleteBeforeReplace).toBe(false);
        const replacement = await driver.plugin.create(urn, changed.inputs);
        expect(replacement.id).not.toBe(made.id);
        await driver.plugin.delete(made.id, urn, made.properties, checked.inputs);
        expect(existsSync(outs.path)).toBe(false);
        expect(existsSync(replacement.id)).toBe(true);

        const present = await driver.plugin.read(replacement.id, urn, replacement.properties, changed.inputs);
        expect(present.id).toBe(replacement.id);
        await unlink(replacement.id);
        const gone = await driver.plugin.read(replacement.id, urn, replacement.properties, changed.inputs);
        expect(gone.id).toBe("");

        // The engine deletes what it still has in state; a file already gone is no error.
        await driver.plugin.delete(replacement.id, urn, replacement.properties, changed.inputs);
        expect(await readdir(path.join(dir, "state", "launchers"))).toEqual([]);
        expect(driver.engine.errors()).toEqual([]);
    });

    test("a preview with an unknown kernel checks and diffs without failing or touching disk", async () => {
        const stateDir = path.join(dir, "preview-state");
        const urn = driver.urn("RunScript", "preview");
        const unknownKernel = { ...inputs(128), stateDir };
        unknownKernel.vm = { ...unknownKernel.vm, kernel: UNKNOWN };
        const checked = await driver.plugin.check(urn, {}, driver.news("RunScript", unknownKernel));
        expect(checked.failures).toEqual([]);
        expect((checked.inputs.vm as { kernel: string }).kernel).toBe(UNKNOWN);

        // An existing launcher whose kernel becomes unknown: the engine asks Diff with the unknown.
        const real = await driver.plugin.check(urn, {}, driver.news("RunScript", inputs(128)));
        const made = await driver.plugin.create(urn, real.inputs);
        const withUnknown = await driver.plugin.check(
            urn,
            real.inputs,
            driver.news("RunScript", { ...inputs(128), vm: { ...inputs(128).vm, kernel: UNKNOWN } }),
        );
        const diff = await driver.plugin.diff(made.id, urn, made.properties, withUnknown.inputs, real.inputs);
        expect(diff.changes).toBe(DIFF_SOME);
        expect(diff.replaces).toContain("vm");
        await driver.plugin.delete(made.id, urn, made.properties, real.inputs);

        expect(existsSync(stateDir)).toBe(false);
        expect(driver.engine.errors()).toEqual([]);
    });

    test("a bad input comes back as a check failure naming the field", async () => {
        const urn = driver.urn("RunScript", "bad");
        const bad = { ...inputs(128), vm: { ...inputs(128).vm, memoryMiB: -1 } };
        const checked = await driver.plugin.check(urn, {}, driver.news("RunScript", bad));
        expect(checked.failures).toEqual([expect.objectContaining({ property: expect.stringContaining("memoryMiB") })]);
        expect(driver.engine.errors()).toEqual([]);
    });
});
