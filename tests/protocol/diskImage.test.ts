import { existsSync } from "node:fs";
import execa from "execa";
import { mkdtemp, rm, unlink, writeFile } from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import { openDriver, type Driver, type PluginKind } from "../engine/driver";
import type { Props } from "../engine/wire";
import { UNKNOWN } from "../engine/wire";

/** DiskImage's lifecycle over gRPC, the engine's calls in the engine's order, through both plugins. */

const DIFF_NONE = 1;
const DIFF_SOME = 2;
const MiB = 1024 * 1024;

interface ImageOuts {
    path: string;
    format: string;
    virtualSizeBytes: number;
    inputHash: string;
    backingPath?: string;
}

describe.each<PluginKind>(["dynamic", "qemu"])("DiskImage through the %s plugin", (kind) => {
    let driver: Driver;
    let dir: string;

    beforeAll(async () => {
        dir = await mkdtemp(path.join(os.tmpdir(), `pq-proto-img-${kind}-`));
        driver = await openDriver(kind);
    }, 60_000);

    afterAll(async () => {
        await driver?.close();
        if (dir) await rm(dir, { recursive: true, force: true });
    });

    /** Check then Create, as the engine does for a new resource. */
    async function make(name: string, inputs: Props) {
        const urn = driver.urn("DiskImage", name);
        const checked = await driver.plugin.check(urn, {}, driver.news("DiskImage", inputs));
        expect(checked.failures).toEqual([]);
        const made = await driver.plugin.create(urn, checked.inputs);
        return {
            urn,
            id: made.id,
            inputs: checked.inputs,
            props: made.properties,
            outs: made.properties as unknown as ImageOuts,
        };
    }

    const blank = (size: string, stateDir = path.join(dir, "state")) => ({
        stateDir,
        source: { kind: "blank", size, format: "raw" },
    });

    test("create, no-op diff, replace on a changed size, read after the file is gone, delete", async () => {
        const base = await make("base", blank("16M"));
        expect(base.outs).toMatchObject({ format: "raw", virtualSizeBytes: 16 * MiB });
        expect(base.outs.path.startsWith(path.join(dir, "state") + path.sep)).toBe(true);
        expect(existsSync(base.outs.path)).toBe(true);

        const again = await driver.plugin.check(base.urn, base.inputs, driver.news("DiskImage", blank("16M")));
        expect(await driver.plugin.diff(base.id, base.urn, base.props, again.inputs, base.inputs)).toEqual({
            changes: DIFF_NONE,
            replaces: [],
            deleteBeforeReplace: false,
        });

        const bigger = await driver.plugin.check(base.urn, base.inputs, driver.news("DiskImage", blank("32M")));
        const diff = await driver.plugin.diff(base.id, base.urn, base.props, bigger.inputs, base.inputs);
        expect(diff.changes).toBe(DIFF_SOME);
        expect(diff.replaces).toContain("source");
        expect(diff.deleteBeforeReplace).toBe(false);
        const replacement = await driver.plugin.create(base.urn, bigger.inputs);
        const newOuts = replacement.properties as unknown as ImageOuts;
        expect(newOuts.virtualSizeBytes).toBe(32 * MiB);
        expect(newOuts.path).not.toBe(base.outs.path);
        await driver.plugin.delete(base.id, base.urn, base.props, base.inputs);
        expect(existsSync(base.outs.path)).toBe(false);
        expect(existsSync(newOuts.path)).toBe(true);

        expect((await driver.plugin.read(replacement.id, base.urn, replacement.properties, bigger.inputs)).id).toBe(
            replacement.id,
        );
        await unlink(newOuts.path);
        expect((await driver.plugin.read(replacement.id, base.urn, replacement.properties, bigger.inputs)).id).toBe("");
        await driver.plugin.delete(replacement.id, base.urn, replacement.properties, bigger.inputs);
        expect(driver.engine.errors()).toEqual([]);
    });

    test("drift survives a refresh: Read's state, diffed as the engine does, replaces the image", async () => {
        const src = path.join(dir, `src-${kind}.raw`);
        await writeFile(src, Buffer.alloc(MiB, 5));
        const img = await make("drifting", { stateDir: path.join(dir, "state"), source: { kind: "file", path: src } });
        await execa("dd", ["if=/dev/urandom", `of=${img.outs.path}`, "bs=4096", "count=1", "seek=16", "conv=notrunc"]);
        // Two refreshes: the second gets the first's state, as the engine would store it.
        const first = await driver.plugin.read(img.id, img.urn, img.props, img.inputs);
        const second = await driver.plugin.read(first.id, img.urn, first.properties, first.inputs ?? img.inputs);
        expect(second.properties.drift).toMatch(/content changed/);
        const checked = await driver.plugin.check(
            img.urn,
            img.inputs,
            driver.news("DiskImage", { stateDir: path.join(dir, "state"), source: { kind: "file", path: src } }),
        );
        const diff = await driver.plugin.diff(second.id, img.urn, second.properties, checked.inputs, img.inputs);
        expect(diff.changes).toBe(DIFF_SOME);
        expect(diff.replaces).toContain("source");
        await driver.plugin.delete(second.id, img.urn, second.properties, img.inputs);
        expect(existsSync(img.outs.path)).toBe(false);
        expect(driver.engine.errors()).toEqual([]);
    });

    test("an overlay records its backing; a preview with an unknown backing neither fails nor touches disk", async () => {
        const base = await make("overlay-base", blank("8M"));
        const overlayInputs = (backing: string, backingInputHash: string, stateDir = path.join(dir, "state")) => ({
            stateDir,
            source: { kind: "overlay", backing, backingFormat: "raw", backingInputHash },
        });
        const overlay = await make("overlay", overlayInputs(base.outs.path, base.outs.inputHash));
        expect(overlay.outs).toMatchObject({ format: "qcow2", backingPath: base.outs.path, virtualSizeBytes: 8 * MiB });

        // A preview of a new stack: the base is not made yet, so its path and hash are unknown.
        const previewState = path.join(dir, "preview-state");
        const urn = driver.urn("DiskImage", "preview-overlay");
        const checked = await driver.plugin.check(
            urn,
            {},
            driver.news("DiskImage", overlayInputs(UNKNOWN, UNKNOWN, previewState)),
        );
        expect(checked.failures).toEqual([]);
        expect((checked.inputs.source as Props).backing).toBe(UNKNOWN);
        expect(existsSync(previewState)).toBe(false);

        // A preview of a base about to be replaced: the overlay's diff sees the unknown and replaces.
        const pending = await driver.plugin.check(
            overlay.urn,
            overlay.inputs,
            driver.news("DiskImage", overlayInputs(UNKNOWN, UNKNOWN)),
        );
        expect(pending.failures).toEqual([]);
        const diff = await driver.plugin.diff(overlay.id, overlay.urn, overlay.props, pending.inputs, overlay.inputs);
        expect(diff.changes).toBe(DIFF_SOME);
        expect(diff.replaces).toContain("source");
        expect(existsSync(overlay.outs.path)).toBe(true);

        await driver.plugin.delete(overlay.id, overlay.urn, overlay.props, overlay.inputs);
        await driver.plugin.delete(base.id, base.urn, base.props, base.inputs);
        expect(existsSync(overlay.outs.path)).toBe(false);
        expect(existsSync(base.outs.path)).toBe(false);
        expect(driver.engine.errors()).toEqual([]);
    });
});
