import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import { openDriver, type Driver } from "../engine/driver";
import type { Props } from "../engine/wire";

/**
 * `pulumi import` from the command line: the engine calls Read with the id alone and then checks
 * the inputs Read returned as the program's (it writes them into the generated code). So Read's
 * inputs must pass Check and diff as no change wherever the image tells what it was made from: a
 * blank image (size, format) and an overlay (backing, its format, a grown size). A directory or
 * file image cannot tell; its inputs have no `source`, and check says what to write instead.
 */

const DIFF_NONE = 1;

let driver: Driver;
let dir: string;

beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), "pq-import-source-"));
    driver = await openDriver("qemu");
}, 60_000);

afterAll(async () => {
    await driver?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
});

async function made(name: string, inputs: Props): Promise<{ path: string; inputHash: string }> {
    const urn = driver.urn("DiskImage", name);
    const checked = await driver.plugin.check(urn, {}, driver.news("DiskImage", inputs));
    expect(checked.failures).toEqual([]);
    return (await driver.plugin.create(urn, checked.inputs)).properties as { path: string; inputHash: string };
}

/** The CLI's import: Read(id), then Check and Diff of exactly the inputs Read gave back. */
async function cliImport(name: string, id: string) {
    const urn = driver.urn("DiskImage", name);
    const read = await driver.plugin.read(id, urn, {}, {});
    const checked = await driver.plugin.check(urn, {}, read.inputs ?? {});
    const diff = checked.failures.length
        ? undefined
        : await driver.plugin.diff(read.id, urn, read.properties, checked.inputs, read.inputs);
    return { read, checked, diff };
}

test("a blank image: size and format come back, check passes, no change", async () => {
    const stateDir = path.join(dir, "s1");
    const image = await made("blank", { stateDir, source: { kind: "blank", size: "24M", format: "qcow2" } });
    const { read, checked, diff } = await cliImport("blank-adopted", image.path);
    expect(read.inputs).toEqual({ stateDir, source: { kind: "blank", size: "24M", format: "qcow2" } });
    expect(checked.failures).toEqual([]);
    expect(diff!.changes).toBe(DIFF_NONE);
});

test("a raw blank image at a path of its own, size in bytes when no suffix divides it", async () => {
    const file = path.join(dir, "own", "disk.raw");
    const image = await made("raw", {
        path: file,
        mode: "0640",
        source: { kind: "blank", size: 1536 * 512 + 512, format: "raw" },
    });
    const { read, checked, diff } = await cliImport("raw-adopted", image.path);
    expect(read.inputs).toEqual({
        path: file,
        mode: "0640",
        source: { kind: "blank", size: 1537 * 512, format: "raw" },
    });
    expect(checked.failures).toEqual([]);
    expect(diff!.changes).toBe(DIFF_NONE);
});

test("overlays: the backing, its format and a grown size come back; the base's identity from its record", async () => {
    const stateDir = path.join(dir, "s2");
    const base = await made("base", { stateDir, source: { kind: "blank", size: "32M", format: "raw" } });
    const wired = await made("over", {
        stateDir,
        source: { kind: "overlay", backing: base.path, backingInputHash: base.inputHash },
    });
    const grown = await made("grown", {
        stateDir,
        source: { kind: "overlay", backing: base.path, backingFormat: "raw", size: "64M" },
    });

    const w = await cliImport("over-adopted", wired.path);
    expect(w.read.inputs).toEqual({ stateDir, source: { kind: "overlay", backing: base.path, backingFormat: "raw" } });
    expect(w.checked.failures).toEqual([]);
    expect(w.diff!.changes).toBe(DIFF_NONE);

    const g = await cliImport("grown-adopted", grown.path);
    expect(g.read.inputs).toEqual({
        stateDir,
        source: { kind: "overlay", backing: base.path, backingFormat: "raw", size: "64M" },
    });
    expect(g.checked.failures).toEqual([]);
    expect(g.diff!.changes).toBe(DIFF_NONE);
});

test("a directory image cannot tell its source: no source comes back, and check says what to write", async () => {
    const tree = path.join(dir, "tree");
    await mkdir(tree);
    await writeFile(path.join(tree, "hello.txt"), "hello\n");
    const stateDir = path.join(dir, "s3");
    const image = await made("dir", { stateDir, source: { kind: "directory", path: tree, size: "8M" } });
    const { read, checked } = await cliImport("dir-adopted", image.path);
    expect(read.inputs).toEqual({ stateDir });
    expect(checked.failures.map((f) => f.property)).toEqual(["source"]);
    expect(checked.failures[0].reason).toMatch(/import/);
}, 60_000);
