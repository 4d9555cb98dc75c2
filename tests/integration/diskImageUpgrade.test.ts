import { createHash } from "node:crypto";
import { chmod, mkdir, mkdtemp, readFile, rm, symlink, utimes, writeFile } from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import { sidecarPath } from "../../provider/core/diskImageSpec";
import { imageInputHash, parseDiskImageSpec } from "../../provider/resources/diskImage/spec";
import { HASH_CACHE_FILE, HASH_CACHE_FILE_V1, statStamp, type ReadCounter } from "../../provider/host/files/fileHash";
import {
    createDiskImage,
    diffImage,
    readImage,
    removeImage,
    type DiskImageOutputs,
} from "../../provider/resources/diskImage";

/**
 * Upgrading from 0.1, which digested file contents with SHA-256, to BLAKE3 must replace nothing:
 * a record without `digestAlgorithm` is compared the way it was made. The golden inputHashes
 * below were written by pulumi-qemu 0.1 (commit 3a6c27e) for these exact fixtures.
 */

const GOLDEN_V01 = {
    file: "2707eebdeabe1d10841042b8ea6478ff5ea0da097eb359d7312f2ccb44ba77ee",
    directory: "ff91e5091d28cbda6885b09a7e6baeb83a4a57b73c68959c52921231115fa867",
};

let work: string;
let stateDir: string;

beforeEach(async () => {
    work = await mkdtemp(path.join(os.tmpdir(), "pq-upgrade-"));
    stateDir = path.join(work, "state");
});

afterEach(async () => {
    await rm(work, { recursive: true, force: true });
});

/** 3 MiB of a fixed pattern: above the size from which tree hashing consults the stat cache. */
function pattern(): Buffer {
    const big = Buffer.alloc(3 * 1024 * 1024);
    for (let i = 0; i < big.length; i++) big[i] = ((i * 7 + i) >>> 11) & 255;
    return big;
}

async function fixtures(): Promise<{ file: string; tree: string }> {
    const fx = path.join(work, "fx");
    const tree = path.join(fx, "tree");
    await mkdir(path.join(tree, "sub"), { recursive: true });
    await writeFile(path.join(fx, "file.raw"), pattern());
    await writeFile(path.join(tree, "big.bin"), pattern());
    await writeFile(path.join(tree, "hello.txt"), "hello from pulumi-qemu\n");
    await writeFile(path.join(tree, "sub", "run.sh"), "#!/bin/sh\necho hi\n");
    await symlink("../hello.txt", path.join(tree, "sub", "link"));
    for (const [rel, mode] of [
        ["", 0o755],
        ["sub", 0o750],
        ["big.bin", 0o644],
        ["hello.txt", 0o600],
        ["sub/run.sh", 0o755],
    ] as const)
        await chmod(path.join(tree, rel), mode);
    // Old enough for the stat cache to trust.
    const old = new Date(Date.now() - 60_000);
    for (const f of [path.join(fx, "file.raw"), path.join(tree, "big.bin")]) await utimes(f, old, old);
    return { file: path.join(fx, "file.raw"), tree };
}

async function sha256(file: string): Promise<string> {
    return createHash("sha256")
        .update(await readFile(file))
        .digest("hex");
}

/** What 0.1 recorded for an image: SHA-256 everywhere, no digestAlgorithm, the sidecar to match. */
async function asRecordedBy01(img: DiskImageOutputs, inputHash: string): Promise<DiskImageOutputs> {
    const { digestAlgorithm: _none, ...rest } = img;
    const old: DiskImageOutputs = { ...rest, inputHash, contentFingerprint: await sha256(img.path) };
    const sidecar = JSON.parse(await readFile(sidecarPath(img.path), "utf8"));
    await writeFile(sidecarPath(img.path), JSON.stringify({ ...sidecar, inputHash }));
    return old;
}

const counter = (): ReadCounter => ({ files: 0, bytes: 0 });

test.each([
    ["file", (fx: { file: string }) => ({ kind: "file", path: fx.file })],
    ["directory", (fx: { tree: string }) => ({ kind: "directory", path: fx.tree, size: "16M" })],
] as const)(
    "a %s image recorded by 0.1 (SHA-256) diffs as unchanged, reads without drift, and is deleted",
    async (kind, sourceOf) => {
        const fx = await fixtures();
        const news = { stateDir, source: sourceOf(fx as { file: string; tree: string }) };
        const img = await createDiskImage(news);
        expect(img.digestAlgorithm).toBe("blake3");
        // The new identity is not 0.1's: without the record's algorithm, an upgrade would replace the image.
        expect(img.inputHash).not.toBe(GOLDEN_V01[kind]);

        const old = await asRecordedBy01(img, GOLDEN_V01[kind]);
        expect(await diffImage(old.path, old, news)).toEqual({ changes: false });
        const read = await readImage(old.path, old);
        expect(read.props).toEqual(old);

        // A real change of content is still seen through the old algorithm.
        const changed = kind === "file" ? fx.file : path.join(fx.tree, "hello.txt");
        await writeFile(changed, "changed", { flag: "r+" });
        expect(await diffImage(old.path, old, news)).toMatchObject({ changes: true, replaces: ["source"] });

        expect(await removeImage(old)).toBe("removed");
    },
);

test("0.1's hash cache (SHA-256, version 1) still answers, so the first preview after an upgrade reads no image, and is never rewritten", async () => {
    const fx = await fixtures();
    const news = { stateDir, source: { kind: "file", path: fx.file } };
    const img = await createDiskImage(news);
    const old = await asRecordedBy01(img, GOLDEN_V01.file);
    const entry = async (file: string) => {
        const st = await statStamp(file);
        return [
            `${st.dev}:${st.ino}`,
            { size: st.size, mtimeNs: st.mtimeNs, ctimeNs: st.ctimeNs, sha256: await sha256(file), used: Date.now() },
        ] as const;
    };
    // Exactly the shape 0.1 wrote.
    const v1 = { version: 1, entries: Object.fromEntries([await entry(fx.file), await entry(img.path)]) };
    const v1File = path.join(stateDir, HASH_CACHE_FILE_V1);
    await writeFile(v1File, JSON.stringify(v1));
    const c = counter();
    expect(await diffImage(old.path, old, news, { counter: c })).toEqual({ changes: false });
    expect((await readImage(old.path, old, { counter: c })).props).toEqual(old);
    expect(c).toEqual({ files: 0, bytes: 0 });

    // The carried-over entries outlive a save of our own cache (here, one that a new import causes),
    // and 0.1's file is left exactly as 0.1 wrote it, for a 0.1 provider still using this state directory.
    const other = path.join(work, "other.raw");
    await writeFile(other, Buffer.alloc(64 * 1024, 9));
    await utimes(other, new Date(Date.now() - 60_000), new Date(Date.now() - 60_000));
    await createDiskImage({ stateDir, source: { kind: "file", path: other } });
    const saved = JSON.parse(await readFile(path.join(stateDir, HASH_CACHE_FILE), "utf8"));
    expect(saved.version).toBe(2);
    expect(JSON.parse(await readFile(v1File, "utf8"))).toEqual(v1);
    const c2 = counter();
    expect(await diffImage(old.path, old, news, { counter: c2 })).toEqual({ changes: false });
    expect(c2).toEqual({ files: 0, bytes: 0 });
});

test("an overlay recorded by 0.1 over a foreign base (identity = the base's SHA-256) diffs as unchanged", async () => {
    const foreign = path.join(work, "foreign.raw");
    await writeFile(foreign, pattern());
    const news = { stateDir, source: { kind: "overlay", backing: foreign } };
    const img = await createDiskImage(news);
    expect(img.backingIdentityFrom).toBe("content");
    const legacyIdentity = await sha256(foreign);
    expect(img.backingInputHash).not.toBe(legacyIdentity);
    // 0.1's overlay identity: the same formula, fed the base's SHA-256 (overlays have no content digest of their own).
    const inputHash = imageInputHash(parseDiskImageSpec(news).source, {
        kind: "overlay",
        backingFormat: "raw",
        backingIdentity: legacyIdentity,
    });
    const old = { ...(await asRecordedBy01(img, inputHash)), backingInputHash: legacyIdentity };
    delete old.contentFingerprint;
    expect(await diffImage(old.path, old, news)).toEqual({ changes: false });
    expect((await readImage(old.path, old)).props).toEqual(old);
    await writeFile(foreign, "another base", { flag: "r+" });
    expect(await diffImage(old.path, old, news)).toMatchObject({ changes: true, replaces: ["source"] });
});

test("a record made with BLAKE3 never reads 0.1's cache file", async () => {
    const fx = await fixtures();
    const news = { stateDir, source: { kind: "file", path: fx.file } };
    const img = await createDiskImage(news);
    // 0.1's cache, poisoned: it claims the source's SHA-256 is zeros. Whoever reads it sees a changed source.
    const st = await statStamp(fx.file);
    const poisoned = {
        [`${st.dev}:${st.ino}`]: {
            size: st.size,
            mtimeNs: st.mtimeNs,
            ctimeNs: st.ctimeNs,
            sha256: "0".repeat(64),
            used: Date.now(),
        },
    };
    await writeFile(path.join(stateDir, HASH_CACHE_FILE_V1), JSON.stringify({ version: 1, entries: poisoned }), {
        mode: 0o600,
    });
    expect(await diffImage(img.path, img, news)).toEqual({ changes: false });
    expect((await readImage(img.path, img)).props).toEqual(img);
    // The same image recorded by 0.1 does read it: that is how we know the BLAKE3 record did not.
    expect(await diffImage(img.path, await asRecordedBy01(img, GOLDEN_V01.file), news)).toMatchObject({
        changes: true,
        replaces: ["source"],
    });
});
