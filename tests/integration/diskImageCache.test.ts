import execa from "execa";
import { mkdtemp, rm, truncate, utimes, writeFile } from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import { digestFile } from "../../provider/host/files/fileDigest";
import {
    HASH_CACHE_FILE,
    HashCache,
    hashFileCached,
    statStamp,
    waitOutRacyWindow,
    type ReadCounter,
} from "../../provider/host/files/fileHash";
import { createDiskImage, diffImage, readImage } from "../../provider/resources/diskImage";

/**
 * The stat cache on big files: an unchanged 1 GiB file is read once, then never again, across
 * processes (the cache is reloaded from disk); a change of any kind is seen. Overlays over 1 GiB
 * and 20 GiB bases the provider made cost no read of the base at all.
 */

const GiB = 1024 ** 3;

let work: string;
let stateDir: string;

beforeAll(async () => {
    work = await mkdtemp(path.join(os.tmpdir(), "pq-diskimage-cache-"));
    stateDir = path.join(work, "state");
});

afterAll(async () => {
    await rm(work, { recursive: true, force: true });
});

const counter = (): ReadCounter => ({ files: 0, bytes: 0 });
const ms = async <T>(fn: () => Promise<T>): Promise<[T, number]> => {
    const t0 = process.hrtime.bigint();
    const v = await fn();
    return [v, Number(process.hrtime.bigint() - t0) / 1e6];
};

/** A sparse file of `bytes`, stamped a minute ago so the cache may trust it at once. */
async function sparse(name: string, bytes: number): Promise<string> {
    const file = path.join(work, name);
    await writeFile(file, "");
    await truncate(file, bytes);
    await writeFile(file, "head", { flag: "r+" });
    const old = new Date(Date.now() - 60_000);
    await utimes(file, old, old);
    return file;
}

test("a 1 GiB file is read once; the reloaded cache answers without reading; any change is seen", async () => {
    const file = await sparse("one-gib.raw", GiB);
    const cacheFile = path.join(work, HASH_CACHE_FILE);
    const c1 = counter();
    const [first, coldMs] = await ms(async () => hashFileCached(file, await HashCache.load(cacheFile), "blake3", c1));
    expect(first.cached).toBe(false);
    expect(c1.bytes).toBe(GiB);
    const expected = (await execa("b3sum", ["--no-names", file])).stdout.trim();
    expect(first.digest).toBe(expected);

    const cache = await HashCache.load(cacheFile);
    expect(cache.lookup(first.stamp, "blake3")).toBeUndefined(); // not saved yet: nothing persisted by accident
    const c2 = counter();
    const saving = await HashCache.load(cacheFile);
    await hashFileCached(file, saving, "blake3", c2);
    await saving.save();
    const c3 = counter();
    const [again, warmMs] = await ms(async () => hashFileCached(file, await HashCache.load(cacheFile), "blake3", c3));
    expect(again).toEqual({ digest: expected, stamp: first.stamp, cached: true });
    expect(c3).toEqual({ files: 0, bytes: 0 });
    console.log(
        `1 GiB (sparse): hash ${coldMs.toFixed(0)} ms, cached re-hash (cache file reloaded) ${warmMs.toFixed(2)} ms`,
    );

    // Same size, mtime put back as it was: ctime still moves, so the change is seen.
    const stamp = new Date(Number(BigInt(first.stamp.mtimeNs) / 1_000_000n));
    await writeFile(file, "HEAD", { flag: "r+" });
    await utimes(file, stamp, stamp);
    const c4 = counter();
    const changed = await hashFileCached(file, await HashCache.load(cacheFile), "blake3", c4);
    expect(changed.cached).toBe(false);
    expect(c4.bytes).toBe(GiB);
    expect(changed.digest).not.toBe(expected);
});

test("a hash taken right after a write is not remembered (racy stamp); later it is", async () => {
    const file = path.join(work, "fresh.bin");
    await writeFile(file, "fresh");
    const cache = await HashCache.load(path.join(work, "racy-cache.json"));
    const h = await hashFileCached(file, cache, "blake3");
    expect(cache.lookup(h.stamp, "blake3")).toBeUndefined();
    await new Promise((r) => setTimeout(r, 150));
    const later = await hashFileCached(file, cache, "blake3");
    expect(later.cached).toBe(false);
    expect(cache.lookup(later.stamp, "blake3")).toBe((await digestFile(file, "blake3")).digest);
    // One file, two algorithms: neither answer stands in for the other.
    expect(cache.lookup(later.stamp, "sha256")).toBeUndefined();
});

test("a file truncated while b3sum hashes it is reported as changed, and nothing is remembered", async () => {
    const file = await sparse("shrinking.raw", 4 * GiB);
    const cache = await HashCache.load(path.join(work, "shrink-cache.json"));
    const before = await statStamp(file);
    // Under b3sum's mapping a truncate is SIGBUS; if b3sum had already finished, the stamp check sees it.
    const shrink = new Promise<void>((resolve, reject) =>
        setTimeout(() => truncate(file, 1024 * 1024).then(resolve, reject), 30),
    );
    await expect(hashFileCached(file, cache, "blake3")).rejects.toThrow(/changed while it was being hashed/);
    await shrink;
    expect(cache.lookup(before, "blake3")).toBeUndefined();
    expect(cache.lookup(await statStamp(file), "blake3")).toBeUndefined();
});

// The small import is hashed within milliseconds of being written: without waiting out the racy
// window, create could not remember its digest and the first preview would read it again.
test.each([
    ["4 MiB", 4 * 1024 * 1024],
    ["1 GiB", GiB],
])("a %s import: once created, a no-op diff and a read read no image byte", async (label, bytes) => {
    const src = await sparse(`import-src-${bytes}.raw`, bytes);
    const cCreate = counter();
    const [img, createMs] = await ms(() =>
        createDiskImage({ stateDir, source: { kind: "file", path: src } }, { counter: cCreate }),
    );
    // The source once, the new image once for its fingerprint.
    expect(cCreate.bytes).toBe(2 * bytes);
    const news = { stateDir, source: { kind: "file", path: src } };
    const cDiff = counter();
    const [d, diffMs] = await ms(() => diffImage(img.path, img, news, { counter: cDiff }));
    expect(d).toEqual({ changes: false });
    expect(cDiff).toEqual({ files: 0, bytes: 0 });
    const cRead = counter();
    const r = await readImage(img.path, img, { counter: cRead });
    expect(r.props).toEqual(img);
    expect(cRead).toEqual({ files: 0, bytes: 0 });
    console.log(`${label} import: create ${createMs.toFixed(0)} ms, no-op diff ${diffMs.toFixed(1)} ms (0 bytes read)`);
});

test("an entry does not answer for another file that took the same inode (birth time differs)", async () => {
    const file = await sparse("reborn.bin", 4096);
    const cache = await HashCache.load(path.join(work, "birth-cache.json"));
    const h = await hashFileCached(file, cache, "blake3");
    expect(cache.lookup(h.stamp, "blake3")).toBe(h.digest);
    expect(cache.lookup({ ...h.stamp, birthNs: String(BigInt(h.stamp.birthNs) + 1n) }, "blake3")).toBeUndefined();
});

test("a just-made file stamped in the future (a server clock ahead) is not waited for", async () => {
    const file = path.join(work, "future.bin");
    await writeFile(file, "x");
    const hourAhead = new Date(Date.now() + 3600_000);
    await utimes(file, hourAhead, hourAhead);
    const t0 = Date.now();
    await waitOutRacyWindow(file);
    expect(Date.now() - t0).toBeLessThan(1000);
    // A fresh stamp is waited out: a hash taken right after may be remembered.
    await writeFile(file, "y");
    await waitOutRacyWindow(file);
    const cache = await HashCache.load(path.join(work, "future-cache.json"));
    const h = await hashFileCached(file, cache, "blake3");
    expect(cache.lookup(h.stamp, "blake3")).toBe(h.digest);
});

test("a cache file that is not an object, or has broken entries, is an empty cache", async () => {
    const file = path.join(work, "broken-cache.json");
    const probe = await sparse("probe.bin", 1024);
    for (const body of [
        "null",
        "[]",
        '{"version":2,"entries":null}',
        '{"version":2,"entries":{"x":null}}',
        '{"version":1,"entries":{"1:2":null}}',
        "{torn",
    ]) {
        await writeFile(file, body);
        const cache = await HashCache.load(file);
        const h = await hashFileCached(probe, cache, "blake3");
        expect(h.cached).toBe(false);
        await cache.save();
        expect((await hashFileCached(probe, await HashCache.load(file), "blake3")).cached).toBe(true);
    }
});

test.each([
    ["1 GiB", GiB],
    ["20 GiB", 20 * GiB],
])("an overlay over a %s base the provider made reads nothing of the base", async (label, bytes) => {
    const base = await createDiskImage({ stateDir, source: { kind: "blank", size: bytes, format: "raw" } });
    const c = counter();
    const [overlay, overlayMs] = await ms(() =>
        createDiskImage({ stateDir, source: { kind: "overlay", backing: base.path } }, { counter: c }),
    );
    expect(c).toEqual({ files: 0, bytes: 0 });
    expect(overlay.backingIdentityFrom).toBe("sidecar");
    expect(overlay.virtualSizeBytes).toBe(bytes);
    const [, diffMs] = await ms(() =>
        diffImage(overlay.path, overlay, { stateDir, source: { kind: "overlay", backing: base.path } }, { counter: c }),
    );
    expect(c).toEqual({ files: 0, bytes: 0 });
    const raw = path.join(work, `raw-overlay-${bytes}.qcow2`);
    const [, qemuImgMs] = await ms(() =>
        execa("qemu-img", ["create", "-q", "-f", "qcow2", "-b", base.path, "-F", "raw", raw]),
    );
    console.log(
        `overlay over ${label}: createDiskImage ${overlayMs.toFixed(0)} ms, no-op diff ${diffMs.toFixed(0)} ms, bare qemu-img create ${qemuImgMs.toFixed(0)} ms`,
    );
});
