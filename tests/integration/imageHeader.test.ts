import execa from "execa";
import { mkdtemp, rm, stat, writeFile } from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import { readImageHeader } from "../../provider/host/images/imageHeader";

/** The in-process header reader against qemu-img's own answer, on images qemu-img made. */

let work: string;

beforeAll(async () => {
    work = await mkdtemp(path.join(os.tmpdir(), "pq-header-"));
});

afterAll(async () => {
    await rm(work, { recursive: true, force: true });
});

async function qemuImgSays(file: string, format: string): Promise<{ virtualSize: number; backingFilename?: string }> {
    const info = JSON.parse((await execa("qemu-img", ["info", "-U", "--output=json", "-f", format, file])).stdout);
    return {
        virtualSize: info["virtual-size"],
        ...(info["backing-filename"] !== undefined ? { backingFilename: info["backing-filename"] } : {}),
    };
}

/**
 * What qemu-img says of the header, and, for qcow2, where the image's own tables end, which no
 * file qemu-img made stops short of (a shorter one was truncated: drift).
 */
async function readAndCheckTables(
    file: string,
    format: "raw" | "qcow2",
): Promise<{ virtualSize: number; backingFilename?: string }> {
    const { metadataEnd, ...header } = await readImageHeader(file, format);
    if (format === "qcow2") {
        expect(metadataEnd).toBeGreaterThan(0);
        expect(metadataEnd).toBeLessThanOrEqual((await stat(file)).size);
    } else expect(metadataEnd).toBeUndefined();
    return header;
}

test.each([
    ["raw, an odd size", "raw", [], "100000000"],
    ["qcow2 v3, an odd size (qemu-img rounds it)", "qcow2", [], "100000001"],
    ["qcow2 v2 (compat=0.10), 3 GiB", "qcow2", ["-o", "compat=0.10"], "3G"],
    ["qcow2, 20 TiB", "qcow2", [], "20T"],
])("%s: the size qemu-img reports", async (_what, format, opts, size) => {
    const file = path.join(work, `img-${size}.${format}`);
    await execa("qemu-img", ["create", "-q", "-f", format, ...opts, file, size]);
    expect(await readAndCheckTables(file, format as "raw" | "qcow2")).toEqual(await qemuImgSays(file, format));
});

test.each([
    ["a plain path", "base.raw"],
    ["spaces, a comma and non-ASCII", "a dir, with spaces/bäse ✓.raw"],
    ["a long name", `${"d".repeat(200)}/${"n".repeat(200)}.raw`],
])("an overlay's backing file name with %s, and its size", async (_what, rel) => {
    const base = path.join(work, rel);
    await execa("mkdir", ["-p", path.dirname(base)]);
    await writeFile(base, Buffer.alloc(1024 * 1024));
    for (const compat of ["1.1", "0.10"]) {
        const overlay = path.join(work, `overlay-${compat}-${rel.length}.qcow2`);
        await execa("qemu-img", [
            "create",
            "-q",
            "-f",
            "qcow2",
            "-o",
            `compat=${compat}`,
            "-b",
            base,
            "-F",
            "raw",
            overlay,
            "5M",
        ]);
        const got = await readAndCheckTables(overlay, "qcow2");
        expect(got).toEqual(await qemuImgSays(overlay, "qcow2"));
        expect(got).toEqual({ virtualSize: 5 * 1024 * 1024, backingFilename: base });
    }
});

test("a file that is not qcow2 is refused by name", async () => {
    const file = path.join(work, "not.qcow2");
    await writeFile(file, "just text, not an image, long enough to hold a header");
    await expect(readImageHeader(file, "qcow2")).rejects.toThrow(/not a qcow2 header we can read: magic 0x6a757374/);
});
