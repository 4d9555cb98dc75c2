import execa from "execa";
import { mkdir, mkdtemp, open, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import { InputError } from "../../provider/core/validation";
import { downloadsDir } from "../../provider/host/download/downloadCache";
import {
    check,
    createDiskImage,
    diffImage,
    readImage,
    removeImage,
    type DiskImageOutputs,
} from "../../provider/resources/diskImage";
import { bareGuestArgv, ensureTestGuest, waitForSerial } from "../guest/testGuest";
import { fileDigest, sameBytes, startImageServer, writeSums, type ImageServer } from "../support/imageServer";

/**
 * DiskImage with `source.kind: "url"` through its lifecycle, against a real HTTP server on
 * 127.0.0.1: create (downloaded, verified, read-only), diff (no network; the URL is not the
 * identity), read (drift), an overlay on it, delete (the cache entry stays), errors naming the
 * field; and a guest that boots with an overlay over a URL image as its disk.
 */

let work: string;
let stateDir: string;
let server: ImageServer;
let qcow2: string;
let qcowSha256: string;

beforeAll(async () => {
    work = await mkdtemp(path.join(os.tmpdir(), "pq-diskimage-url-"));
    qcow2 = path.join(work, "cloud.qcow2");
    await execa("qemu-img", ["create", "-q", "-f", "qcow2", qcow2, "32M"]);
    await execa("qemu-io", ["-f", "qcow2", "-c", "write -P 0x5a 0 1M", qcow2]);
    await writeSums(work, [qcow2]);
    qcowSha256 = await fileDigest(qcow2, "sha256");
});

afterAll(async () => {
    await rm(work, { recursive: true, force: true });
});

beforeEach(async () => {
    stateDir = await mkdtemp(path.join(work, "state-"));
    server = await startImageServer();
    server.serve("/debian/cloud.qcow2", qcow2);
    server.serve("/debian/SHA512SUMS", path.join(work, "SHA512SUMS"));
});

afterEach(async () => {
    await server.close();
});

async function fieldError(p: Promise<unknown>): Promise<InputError> {
    try {
        await p;
    } catch (err) {
        if (err instanceof InputError) return err;
        throw err;
    }
    throw new Error("expected an InputError");
}

test("created from a URL: verified, read-only, format detected; diff needs no network and ignores where the bytes came from", async () => {
    const source = { kind: "url", url: `${server.url}/debian/cloud.qcow2`, checksum: `sha256:${qcowSha256}` };
    const outs = await createDiskImage({ stateDir, source });
    expect(outs.format).toBe("qcow2");
    expect(outs.mode).toBe("0400");
    expect((await stat(outs.path)).mode & 0o777).toBe(0o400);
    expect(outs.virtualSizeBytes).toBe(32 * 1024 * 1024);
    expect(await sameBytes(outs.path, qcow2)).toBe(true);
    expect(outs.contentFingerprint).toBeDefined();
    await server.close();
    // The server is gone: a diff must not need it. Another URL with the same checksum is the same image.
    expect(
        await diffImage(outs.path, outs, {
            stateDir,
            source: { ...source, url: "https://mirror.invalid/elsewhere/cloud.qcow2" },
        }),
    ).toEqual({ changes: false });
    expect(await diffImage(outs.path, outs, { stateDir, source: { ...source, stallSeconds: 5 } })).toEqual({
        changes: false,
    });
    const other = await diffImage(outs.path, outs, {
        stateDir,
        source: { ...source, checksum: `sha256:${"0".repeat(64)}` },
    });
    expect(other).toMatchObject({ changes: true, replaces: ["source"] });
    // A second image of the same checksum comes from the cache.
    const again = await createDiskImage({
        stateDir,
        source: { ...source, url: "https://mirror.invalid/elsewhere/cloud.qcow2" },
    });
    expect(again.inputHash).toBe(outs.inputHash);
    expect(again.path).not.toBe(outs.path);
    server = await startImageServer();
    for (const o of [outs, again]) expect(await removeImage(o)).toBe("removed");
});

test("checksumUrl: the sums file is read at create and remembered, so a preview needs no network; same identity as the checksum", async () => {
    const sha512 = await fileDigest(qcow2, "sha512");
    const source = {
        kind: "url",
        url: `${server.url}/debian/cloud.qcow2`,
        checksumUrl: `${server.url}/debian/SHA512SUMS`,
    };
    const outs = await createDiskImage({ stateDir, source });
    const pinned = await createDiskImage({
        stateDir,
        source: { kind: "url", url: source.url, checksum: `sha512:${sha512}` },
    });
    expect(outs.inputHash).toBe(pinned.inputHash);
    expect(server.seen.filter((r) => r.url === "/debian/cloud.qcow2")).toHaveLength(1);
    await server.close();
    expect(await diffImage(outs.path, outs, { stateDir, source })).toEqual({ changes: false });
    expect(
        await diffImage(outs.path, outs, {
            stateDir,
            source: { kind: "url", url: source.url, checksum: `sha512:${sha512}` },
        }),
    ).toEqual({ changes: false });
    server = await startImageServer();
    for (const o of [outs, pinned]) expect(await removeImage(o)).toBe("removed");
});

test("read finds the image changed behind our back; an overlay on it works; delete leaves the shared cache", async () => {
    const source = { kind: "url", url: `${server.url}/debian/cloud.qcow2`, checksum: `sha256:${qcowSha256}` };
    const base = await createDiskImage({ stateDir, source });
    const overlay = await createDiskImage({
        stateDir,
        source: { kind: "overlay", backing: base.path, backingInputHash: base.inputHash },
    });
    const info = JSON.parse((await execa("qemu-img", ["info", "-U", "--output=json", overlay.path])).stdout);
    expect(info["backing-filename"]).toBe(base.path);
    expect((await readImage(base.path, base)).props).toEqual(base);
    expect((await readImage(overlay.path, overlay)).props).toEqual(overlay);

    expect(await removeImage(overlay as DiskImageOutputs)).toBe("removed");
    await execa("chmod", ["u+w", base.path]);
    const fh = await open(base.path, "r+");
    await fh.write(Buffer.from("changed"), 0, 7, 600_000);
    await fh.close();
    const found = (await readImage(base.path, base)).props as DiskImageOutputs;
    expect(found.drift).toMatch(/content changed/);
    expect(await diffImage(base.path, found, { stateDir, source })).toMatchObject({
        changes: true,
        replaces: ["source"],
    });
    // The repair: a new create, from the cache (its entry was never written to), no network.
    await server.close();
    const repaired = await createDiskImage({ stateDir, source });
    expect(await sameBytes(repaired.path, qcow2)).toBe(true);
    server = await startImageServer();

    expect(await removeImage(base)).toBe("removed");
    expect(await removeImage(repaired)).toBe("removed");
    await expect(stat(base.path)).rejects.toThrow();
    expect(await readdir(downloadsDir(stateDir))).toContain(`sha256-${qcowSha256}`);
});

test("bad input and failed downloads name the field; credentials appear nowhere", async () => {
    const url = `${server.url}/debian/cloud.qcow2`;
    const checked = await check({}, { source: { kind: "url", url } });
    expect(checked.failures?.[0]).toMatchObject({
        property: "source.checksum",
        reason: expect.stringMatching(/needs a checksum: give checksum .* or checksumUrl/),
    });
    const both = await check(
        {},
        {
            source: {
                kind: "url",
                url,
                checksum: `sha256:${qcowSha256}`,
                checksumUrl: `${server.url}/debian/SHA512SUMS`,
            },
        },
    );
    expect(both.failures?.[0].reason).toMatch(/not both/);
    const bad = await check(
        {},
        { source: { kind: "url", url: "ftp://alice:pw@example.org/x.img", checksum: "sha256:abc" } },
    );
    expect(bad.failures?.map((f) => f.property).sort()).toEqual(["source.checksum", "source.url"]);
    expect(JSON.stringify(bad.failures)).not.toMatch(/alice|:pw@/);
    expect(
        (await check({}, { source: { kind: "url", url, checksum: `sha256:${qcowSha256}`, extra: 1 } })).failures?.[0]
            .reason,
    ).toMatch(/extra/);

    const secretUrl = `http://alice:s3cret@127.0.0.1:${server.port}/debian/missing.qcow2?token=t0ken`;
    const err = await fieldError(
        createDiskImage({ stateDir, source: { kind: "url", url: secretUrl, checksum: `sha256:${qcowSha256}` } }),
    );
    expect(err.problems[0].property).toBe("source.url");
    expect(err.message).toMatch(/missing.qcow2\?… answered 404/);
    expect(err.message).not.toMatch(/s3cret|alice|t0ken/);
    server.misbehave("/debian/wrong.qcow2", { kind: "wrong" });
    server.serve("/debian/wrong.qcow2", qcow2);
    const mismatch = await fieldError(
        createDiskImage({
            stateDir,
            source: { kind: "url", url: `${server.url}/debian/wrong.qcow2`, checksum: `sha256:${qcowSha256}` },
        }),
    );
    expect(mismatch.message).toMatch(/expected sha256:[0-9a-f]{64}, got sha256:[0-9a-f]{64}/);
    const sums = await fieldError(
        createDiskImage({
            stateDir,
            source: {
                kind: "url",
                url: `${server.url}/debian/other.qcow2`,
                checksumUrl: `${server.url}/debian/SHA512SUMS`,
            },
        }),
    );
    expect(sums.problems[0].property).toBe("source.checksumUrl");
    expect(sums.message).toMatch(/lists no SHA-256 or SHA-512 checksum for "other.qcow2"/);

    // A URL with credentials that works: the outputs carry it without them.
    const ok = await createDiskImage({
        stateDir,
        source: {
            kind: "url",
            url: `http://alice:s3cret@127.0.0.1:${server.port}/debian/cloud.qcow2`,
            checksum: `sha256:${qcowSha256}`,
        },
    });
    expect(JSON.stringify(ok)).not.toMatch(/s3cret/);
    expect(
        await readdir(path.join(stateDir, "downloads")).then((n) =>
            Promise.all(n.map((f) => readFile(path.join(stateDir, "downloads", f), "latin1"))),
        ),
    ).not.toContainEqual(expect.stringMatching(/s3cret/));
    expect(await removeImage(ok)).toBe("removed");
});

test("a full disk under the state directory is told against stateDir, with the URL, and leaves no partial", async () => {
    // 1 MiB of tmpfs: the 1.3 MiB qcow2 cannot be downloaded into it.
    const small = await mkdtemp(path.join(work, "small-"));
    await execa("mount", ["-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", small]);
    try {
        const url = `${server.url}/debian/cloud.qcow2`;
        const err = await fieldError(
            createDiskImage({ stateDir: small, source: { kind: "url", url, checksum: `sha256:${qcowSha256}` } }),
        );
        expect(err.problems[0].property).toBe("stateDir");
        expect(err.message).toMatch(
            new RegExp(`ran out of space .*free some space there or choose another stateDir \\(downloading ${url}`),
        );
        expect(await readdir(downloadsDir(small))).toEqual([]);
    } finally {
        await execa("umount", [small]);
    }
});

test("a guest boots with an overlay over a URL image (xz-compressed, SHA512SUMS) as its disk", async () => {
    const guest = await ensureTestGuest();
    const content = path.join(work, "content");
    await mkdir(content, { recursive: true });
    await writeFile(path.join(content, "hello.txt"), "hello from a downloaded image\n");
    const built = await createDiskImage({
        stateDir: path.join(work, "build-state"),
        source: { kind: "directory", path: content, size: "16M", label: "url" },
    });
    const published = path.join(work, "publish");
    await mkdir(published);
    await execa("sh", ["-c", 'xz -c < "$1" > "$2"', "sh", built.path, path.join(published, "disk.raw.xz")]);
    await writeSums(published, [path.join(published, "disk.raw.xz")]);
    server.serve("/img/disk.raw.xz", path.join(published, "disk.raw.xz"));
    server.serve("/img/SHA512SUMS", path.join(published, "SHA512SUMS"));

    const base = await createDiskImage({
        stateDir,
        source: { kind: "url", url: `${server.url}/img/disk.raw.xz`, checksumUrl: `${server.url}/img/SHA512SUMS` },
    });
    expect(base.format).toBe("raw");
    const overlay = await createDiskImage({
        stateDir,
        source: { kind: "overlay", backing: base.path, backingInputHash: base.inputHash },
    });
    const share = path.join(work, "share");
    await mkdir(share, { recursive: true });
    await writeFile(
        path.join(share, "pq-init.sh"),
        [
            "mkdir -p /mnt/img",
            "mount -t ext4 /dev/vda /mnt/img && cat /mnt/img/hello.txt && echo written > /mnt/img/new.txt && umount /mnt/img && echo PQ-URL-DONE",
            "",
        ].join("\n"),
    );
    const log = path.join(work, "serial.log");
    const argv = bareGuestArgv(guest, { name: "url", log, disk: overlay.path, share });
    const qemu = execa("qemu-system-x86_64", argv, { stdin: "ignore", reject: false });
    try {
        const serial = await waitForSerial(log, "PQ-URL-DONE", 240_000, qemu);
        expect(serial).toContain("hello from a downloaded image");
    } finally {
        qemu.kill("SIGKILL");
        await qemu;
    }
    // The guest wrote through the overlay; the downloaded image is as it was.
    expect((await readImage(base.path, base)).props).toEqual(base);
    for (const img of [overlay, base]) expect(await removeImage(img)).toBe("removed");
});
