import execa from "execa";
import { mkdir, mkdtemp, readdir, rm, writeFile } from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import { InputError } from "../../provider/core/validation";
import * as diskImage from "../../provider/resources/diskImage";
import * as runScript from "../../provider/resources/runScript";

/**
 * Host trouble said in the user's terms: a full disk is the filesystem's problem (which one, how
 * much is free), not a size the user asked for; a path that cannot exist names its field. The
 * full disk is a real one: a 4 MiB tmpfs mounted for the test (CI runs as root).
 */

let work: string;
let full: string;

beforeAll(async () => {
    work = await mkdtemp(path.join(os.tmpdir(), "pq-hosterr-"));
    full = path.join(work, "full");
    await mkdir(full);
    await execa("mount", ["-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs", full]);
});

afterAll(async () => {
    await execa("umount", [full]).catch(() => undefined);
    await rm(work, { recursive: true, force: true });
});

async function problemOf(p: Promise<unknown>): Promise<{ property: string; reason: string }> {
    const err = await p.then(
        () => undefined,
        (e: unknown) => e,
    );
    if (!(err instanceof InputError))
        throw new Error(`expected an InputError, got ${err instanceof Error ? err.stack : String(err)}`);
    return err.problems[0];
}

test("a full disk during a directory image or an import is reported as the filesystem being full, and nothing is left", async () => {
    const src = path.join(work, "src");
    await mkdir(src);
    await writeFile(path.join(src, "big"), Buffer.alloc(6 * 1024 * 1024, 1));
    const dirImage = await problemOf(
        diskImage.createDiskImage({
            stateDir: path.join(work, "state"),
            path: path.join(full, "tree.raw"),
            source: { kind: "directory", path: src, size: "64M" },
        }),
    );
    expect(dirImage.property).toBe("path");
    expect(dirImage.reason).toMatch(
        new RegExp(`the filesystem holding ${full} ran out of space \\(it has [0-9.]+ [KM]iB free of 4 MiB now`),
    );
    expect(dirImage.reason).not.toMatch(/source\.size .* too small|does not hold/);

    const imported = await problemOf(
        diskImage.createDiskImage({
            stateDir: path.join(full, "state"),
            source: { kind: "file", path: path.join(src, "big") },
        }),
    );
    expect(imported.property).toBe("stateDir");
    expect(imported.reason).toMatch(/ran out of space .*No space left on device/);
    expect((await readdir(full)).filter((n) => n !== "state")).toEqual([]);
    expect(await readdir(path.join(full, "state", "images"))).toEqual([]);
});

test("paths that cannot be are errors on their field, not raw ENAMETOOLONG or ENOTDIR", async () => {
    const blank = { kind: "blank", size: "1M", format: "raw" };
    const long = await problemOf(
        diskImage.createDiskImage({
            stateDir: path.join(work, "s"),
            path: path.join(work, "x".repeat(300)),
            source: blank,
        }),
    );
    expect(long).toEqual({
        property: "path",
        reason: expect.stringMatching(/^path .*x… is too long for the filesystem .*\(ENAMETOOLONG\)$/),
    });
    expect(long.reason.length).toBeLessThan(400);

    const file = path.join(work, "a-file");
    await writeFile(file, "");
    const notDir = await problemOf(
        diskImage.createDiskImage({ stateDir: path.join(work, "s"), path: path.join(file, "disk.raw"), source: blank }),
    );
    expect(notDir).toEqual({
        property: "path",
        reason: expect.stringMatching(/goes through something that is not a directory \(ENOTDIR\)$/),
    });

    const stateUnderFile = await problemOf(
        runScript.create({ vm: { kernel: "/boot/vmlinuz" }, stateDir: path.join(file, "state") }),
    );
    expect(stateUnderFile).toEqual({
        property: "stateDir",
        reason: expect.stringMatching(/state cannot be created: .*a-file is a file, not a directory$/),
    });
});
