import execa from "execa";
import { copyFile, mkdir, mkdtemp, open, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import { pathToFileURL } from "node:url";
import { parseChecksum, type Checksum } from "../../provider/core/imageUrl";
import { DownloadError } from "../../provider/host/download/downloadError";
import { downloadsDir } from "../../provider/host/download/downloadCache";
import { checksumFromSums, imageFromUrl, type DownloadSettings } from "../../provider/host/download/imageDownload";
import { isOutOfSpace } from "../../provider/host/files/hostErrors";
import { withProgress, type ProgressSink } from "../../provider/host/progress";
import {
    fileDigest,
    sameBytes,
    selfSignedCert,
    startImageServer,
    startProxy,
    writeSums,
    type ImageServer,
} from "../support/imageServer";

/**
 * The downloader against real servers on 127.0.0.1: a plain one, one that cuts, one that sends
 * wrong bytes, one that stalls, a 404, redirects, compressed images, file: URLs, a forward and
 * CONNECT proxy, a TLS server the host does not trust, a full filesystem, and concurrent callers.
 */

let work: string;
let stateDir: string;
let server: ImageServer;
/** 6 MiB of random bytes: a raw "image" several network chunks long. */
let raw: string;
/** A qcow2 image with data in it. */
let qcow2: string;
let rawSum: Checksum;

const settings = (extra: Partial<DownloadSettings> = {}): DownloadSettings => ({ stallMs: 10_000, env: {}, ...extra });

function sumOf(hex: string, algorithm: "sha256" | "sha512" = "sha256"): Checksum {
    return parseChecksum(`${algorithm}:${hex}`) as Checksum;
}

async function newOut(name = "out.img"): Promise<string> {
    const out = path.join(work, `${Math.random().toString(36).slice(2)}-${name}`);
    await (await open(out, "wx", 0o600)).close();
    return out;
}

async function caught(p: Promise<unknown>): Promise<Error> {
    try {
        await p;
    } catch (err) {
        return err as Error;
    }
    throw new Error("expected a failure");
}

async function names(dir: string): Promise<string[]> {
    return readdir(dir).catch(() => []);
}

const imageGets = (s: ImageServer, p: string) => s.seen.filter((r) => r.url === p);

beforeAll(async () => {
    work = await mkdtemp(path.join(os.tmpdir(), "pq-download-"));
    raw = path.join(work, "disk.raw");
    const bytes = Buffer.alloc(6 * 1024 * 1024);
    for (let i = 0; i < bytes.length; i += 4) bytes.writeUInt32LE((Math.random() * 2 ** 32) >>> 0, i);
    await writeFile(raw, bytes);
    qcow2 = path.join(work, "disk.qcow2");
    await execa("qemu-img", ["create", "-q", "-f", "qcow2", qcow2, "64M"]);
    await execa("qemu-io", ["-f", "qcow2", "-c", "write -P 0xab 0 2M", qcow2]);
    await writeSums(work, [raw, qcow2]);
    rawSum = sumOf(await fileDigest(raw, "sha256"));
});

afterAll(async () => {
    await rm(work, { recursive: true, force: true });
});

beforeEach(async () => {
    stateDir = await mkdtemp(path.join(work, "state-"));
    server = await startImageServer();
    server.serve("/img/disk.raw", raw);
    server.serve("/img/disk.qcow2", qcow2);
    server.serve("/img/SHA256SUMS", path.join(work, "SHA256SUMS"));
    server.serve("/img/SHA512SUMS", path.join(work, "SHA512SUMS"));
});

afterEach(async () => {
    await server.close();
});

test("an image with its SHA512SUMS: downloaded, verified, cached owner-only, format detected, progress told", async () => {
    const url = new URL(`${server.url}/img/disk.qcow2`);
    const checksum = await checksumFromSums(url, new URL(`${server.url}/img/SHA512SUMS`), settings());
    expect(checksum).toEqual(sumOf(await fileDigest(qcow2, "sha512"), "sha512"));
    const out = await newOut();
    const lines: string[] = [];
    const sink: ProgressSink = { status: (m) => lines.push(m), warning: (m) => lines.push(`warning: ${m}`) };
    process.env.PULUMI_QEMU_PROGRESS_SECONDS = "0.001";
    const got = await withProgress(sink, () => imageFromUrl(stateDir, url, checksum, out, settings())).finally(
        () => delete process.env.PULUMI_QEMU_PROGRESS_SECONDS,
    );
    expect(got.format).toBe("qcow2");
    expect(got.cache.hit).toBe(false);
    expect(await sameBytes(out, qcow2)).toBe(true);
    expect((await stat(downloadsDir(stateDir))).mode & 0o777).toBe(0o700);
    expect((await stat(got.cache.file)).mode & 0o777).toBe(0o400);
    expect(lines.some((l) => new RegExp(`^downloading ${url.href}: .* of .* \\(\\d+ %\\) at .*/s$`).test(l))).toBe(
        true,
    );
    // The cache holds the entry and its record, nothing partial.
    expect(await names(downloadsDir(stateDir))).toEqual([`sha512-${checksum.hex}`, `sha512-${checksum.hex}.json`]);
});

test("a cached checksum needs no network, even from another URL", async () => {
    const url = new URL(`${server.url}/img/disk.raw`);
    await imageFromUrl(stateDir, url, rawSum, await newOut(), settings());
    await server.close();
    const out = await newOut();
    const again = await imageFromUrl(
        stateDir,
        new URL("https://mirror.invalid/moved/disk.raw"),
        rawSum,
        out,
        settings(),
    );
    expect(again.cache.hit).toBe(true);
    expect(again.format).toBe("raw");
    expect(await sameBytes(out, raw)).toBe(true);
    server = await startImageServer();
});

test("a connection cut mid-body is resumed with Range, in the same call", async () => {
    server.misbehave("/img/disk.raw", { kind: "cut", afterBytes: 2 * 1024 * 1024, times: 1 });
    const out = await newOut();
    const got = await imageFromUrl(stateDir, new URL(`${server.url}/img/disk.raw`), rawSum, out, settings());
    expect(got.cache.resumed).toBe(true);
    const gets = imageGets(server, "/img/disk.raw");
    expect(gets).toHaveLength(2);
    expect(gets[0].range).toBeUndefined();
    expect(gets[1].range).toMatch(/^bytes=[1-9]\d*-$/);
    expect(await sameBytes(out, raw)).toBe(true);
});

test("without retries a cut keeps the partial, and the next attempt resumes it", async () => {
    server.misbehave("/img/disk.raw", { kind: "cut", afterBytes: 3 * 1024 * 1024, times: 1 });
    const url = new URL(`${server.url}/img/disk.raw`);
    const err = await caught(imageFromUrl(stateDir, url, rawSum, await newOut(), settings({ retries: 0 })));
    expect(err).toBeInstanceOf(DownloadError);
    expect((err as DownloadError).problem).toBe("cut");
    expect(err.message).toMatch(
        new RegExp(`connection to ${url.href} was cut after \\d+ of 6291456 bytes; the bytes so far are kept`),
    );
    const partials = (await names(downloadsDir(stateDir))).filter((n) => n.endsWith(".partial"));
    expect(partials).toHaveLength(1);
    const out = await newOut();
    const got = await imageFromUrl(stateDir, url, rawSum, out, settings());
    expect(got.cache.resumed).toBe(true);
    expect(imageGets(server, "/img/disk.raw").at(-1)!.range).toMatch(/^bytes=[1-9]\d*-$/);
    expect(await sameBytes(out, raw)).toBe(true);
});

test("wrong bytes: a mismatch naming expected and got, and nothing kept", async () => {
    server.misbehave("/img/disk.raw", { kind: "wrong" });
    const url = new URL(`${server.url}/img/disk.raw`);
    const err = await caught(imageFromUrl(stateDir, url, rawSum, await newOut(), settings()));
    expect(err).toBeInstanceOf(DownloadError);
    expect(err.message).toContain(
        `${url.href} does not match its checksum: expected sha256:${rawSum.hex}, got sha256:`,
    );
    expect(err.message).toMatch(/partial download was removed/);
    expect(await names(downloadsDir(stateDir))).toEqual([]);
});

test("a server that stalls is given up after the stall deadline, bytes kept for resume", async () => {
    server.misbehave("/img/disk.raw", { kind: "stall", afterBytes: 1024 * 1024 });
    const url = new URL(`${server.url}/img/disk.raw`);
    const t0 = Date.now();
    const err = await caught(imageFromUrl(stateDir, url, rawSum, await newOut(), settings({ stallMs: 1500 })));
    const took = Date.now() - t0;
    expect(err).toBeInstanceOf(DownloadError);
    expect((err as DownloadError).problem).toBe("stall");
    expect(err.message).toMatch(new RegExp(`${url.href} sent nothing for 1.5 s .* raise source.stallSeconds`));
    // One attempt, then retries that each made no progress beyond the first 1 MiB stop it.
    expect(took).toBeLessThan(20_000);
    expect((await names(downloadsDir(stateDir))).filter((n) => n.endsWith(".partial"))).toHaveLength(1);
});

test("404 and 403 name the URL and what to do; credentials are sent but never shown", async () => {
    const missing = new URL(`http://alice:s3cret@127.0.0.1:${server.port}/img/nothing.raw?token=abc`);
    const err = await caught(imageFromUrl(stateDir, missing, rawSum, await newOut(), settings()));
    expect(err).toBeInstanceOf(DownloadError);
    expect(err.message).toMatch(new RegExp(`^http://127.0.0.1:${server.port}/img/nothing.raw\\?… answered 404`));
    expect(err.message).not.toMatch(/s3cret|alice|token/);
    expect(server.seen.at(-1)!.authorization).toBe(`Basic ${Buffer.from("alice:s3cret").toString("base64")}`);
    server.misbehave("/img/disk.raw", { kind: "status", status: 403 });
    const denied = await caught(
        imageFromUrl(stateDir, new URL(`${server.url}/img/disk.raw`), rawSum, await newOut(), settings()),
    );
    expect(denied.message).toMatch(/answered 403 .*access refused/);
    expect(await names(downloadsDir(stateDir))).toEqual([]);
});

test("redirects are followed, up to a bound; credentials stay with the origin", async () => {
    const other = await startImageServer();
    try {
        other.serve("/real/disk.raw", raw);
        server.misbehave("/latest/disk.raw", { kind: "redirect", to: "/img/moved.raw" });
        server.misbehave("/img/moved.raw", { kind: "redirect", to: `${other.url}/real/disk.raw`, status: 301 });
        const out = await newOut();
        await imageFromUrl(
            stateDir,
            new URL(`http://bob:pw@127.0.0.1:${server.port}/latest/disk.raw`),
            rawSum,
            out,
            settings(),
        );
        expect(await sameBytes(out, raw)).toBe(true);
        expect(other.seen[0].authorization).toBeUndefined();
        server.misbehave("/loop/disk.raw", { kind: "redirect", to: "/loop/disk.raw" });
        const err = await caught(
            imageFromUrl(
                stateDir,
                new URL(`${server.url}/loop/disk.raw`),
                sumOf("0".repeat(64)),
                await newOut(),
                settings(),
            ),
        );
        expect(err.message).toMatch(/redirected more than 10 times/);
    } finally {
        await other.close();
    }
});

test("gzip, xz and zstd images are decompressed; a suffix the content belies is refused", async () => {
    for (const [tool, ext] of [
        ["gzip", "gz"],
        ["xz", "xz"],
        ["zstd", "zst"],
    ] as const) {
        const packed = path.join(work, `disk.qcow2.${ext}`);
        await execa("sh", ["-c", `${tool} -c < "$1" > "$2"`, "sh", qcow2, packed]);
        server.serve(`/img/disk.qcow2.${ext}`, packed);
        const out = await newOut();
        const got = await imageFromUrl(
            stateDir,
            new URL(`${server.url}/img/disk.qcow2.${ext}`),
            sumOf(await fileDigest(packed, "sha256")),
            out,
            settings(),
        );
        expect(got.compression).toBe(tool);
        expect(got.format).toBe("qcow2");
        expect(await sameBytes(out, qcow2)).toBe(true);
    }
    server.serve("/img/fake.raw.xz", raw);
    const err = await caught(
        imageFromUrl(stateDir, new URL(`${server.url}/img/fake.raw.xz`), rawSum, await newOut(), settings()),
    );
    expect(err.message).toMatch(/fake.raw.xz ends in a xz suffix but its content is not compressed/);
});

test("file: URLs go through the same checksum and cache", async () => {
    const out = await newOut();
    const got = await imageFromUrl(stateDir, pathToFileURL(raw), rawSum, out, settings());
    expect(got.cache.hit).toBe(false);
    expect(await sameBytes(out, raw)).toBe(true);
    const sums = await checksumFromSums(pathToFileURL(qcow2), pathToFileURL(path.join(work, "SHA256SUMS")), settings());
    expect(sums.algorithm).toBe("sha256");
    const err = await caught(
        imageFromUrl(
            stateDir,
            pathToFileURL(path.join(work, "absent.raw")),
            sumOf("1".repeat(64)),
            await newOut(),
            settings(),
        ),
    );
    expect(err.message).toMatch(/absent.raw/);
});

test("http_proxy forwards, https_proxy tunnels with CONNECT, no_proxy bypasses", async () => {
    const proxy = await startProxy();
    const certDir = await mkdtemp(path.join(work, "tls-"));
    const tlsCert = await selfSignedCert(certDir);
    const secure = await startImageServer(tlsCert);
    try {
        secure.serve("/img/disk.raw", raw);
        await imageFromUrl(
            stateDir,
            new URL(`${server.url}/img/disk.raw`),
            rawSum,
            await newOut(),
            settings({ env: { http_proxy: proxy.url } }),
        );
        expect(proxy.seen).toEqual([`GET ${server.url}/img/disk.raw`]);
        const qsum = sumOf(await fileDigest(qcow2, "sha256"));
        server.serve("/img/again.qcow2", qcow2);
        await imageFromUrl(
            stateDir,
            new URL(`${server.url}/img/again.qcow2`),
            qsum,
            await newOut(),
            settings({ env: { http_proxy: proxy.url, no_proxy: "127.0.0.1" } }),
        );
        expect(proxy.seen).toHaveLength(1);
        await rm(downloadsDir(stateDir), { recursive: true });
        const out = await newOut();
        await imageFromUrl(
            stateDir,
            new URL(`${secure.url}/img/disk.raw`),
            rawSum,
            out,
            settings({ env: { HTTPS_PROXY: proxy.url }, ca: tlsCert.cert }),
        );
        expect(proxy.seen[1]).toBe(`CONNECT 127.0.0.1:${secure.port}`);
        expect(await sameBytes(out, raw)).toBe(true);
        // The same server, not trusted: a TLS error naming the URL and the way out.
        await rm(downloadsDir(stateDir), { recursive: true });
        const err = await caught(
            imageFromUrl(stateDir, new URL(`${secure.url}/img/disk.raw`), rawSum, await newOut(), settings()),
        );
        expect(err).toBeInstanceOf(DownloadError);
        expect((err as DownloadError).problem).toBe("tls");
        expect(err.message).toMatch(new RegExp(`^TLS failed for ${secure.url}/img/disk.raw: .*NODE_EXTRA_CA_CERTS`));
    } finally {
        await secure.close();
        await proxy.close();
    }
});

test("a cached file changed behind our back is found by its stamp, re-verified and fetched again", async () => {
    const url = new URL(`${server.url}/img/disk.raw`);
    const first = await imageFromUrl(stateDir, url, rawSum, await newOut(), settings());
    const fh = await open(first.cache.file, "r+").catch(async () => {
        await execa("chmod", ["u+w", first.cache.file]);
        return open(first.cache.file, "r+");
    });
    await fh.write(Buffer.from("corrupt"), 0, 7, 4096);
    await fh.close();
    const warnings: string[] = [];
    const out = await newOut();
    const again = await withProgress({ status: () => undefined, warning: (m) => warnings.push(m) }, () =>
        imageFromUrl(stateDir, url, rawSum, out, settings()),
    );
    expect(again.cache.hit).toBe(false);
    expect(warnings.join("\n")).toMatch(/no longer matches sha256:.* downloaded again/);
    expect(imageGets(server, "/img/disk.raw")).toHaveLength(2);
    expect(await sameBytes(out, raw)).toBe(true);
    // Touched but unchanged (a copy-back, a chmod): one re-hash, no download.
    await execa("chmod", ["0400", again.cache.file]);
    const third = await imageFromUrl(stateDir, url, rawSum, await newOut(), settings());
    expect(third.cache).toMatchObject({ hit: true, reverified: true });
    expect(imageGets(server, "/img/disk.raw")).toHaveLength(2);
});

test("a partial left by a dead process is claimed and resumed", async () => {
    const dir = downloadsDir(stateDir);
    await mkdir(dir, { mode: 0o700 });
    // A process that has exited: its pid, with a start time it cannot have had.
    const dead = await execa("sh", ["-c", "echo $$"]);
    const boot = (await readFile("/proc/sys/kernel/random/boot_id", "utf8")).trim().replace(/-/g, "").slice(0, 8);
    const partial = path.join(dir, `sha256-${rawSum.hex}.o-${boot}-${dead.stdout.trim()}-1-abcd.partial`);
    await writeFile(partial, (await readFile(raw)).subarray(0, 1_000_000), { mode: 0o600 });
    const out = await newOut();
    const got = await imageFromUrl(stateDir, new URL(`${server.url}/img/disk.raw`), rawSum, out, settings());
    expect(got.cache.resumed).toBe(true);
    expect(imageGets(server, "/img/disk.raw")[0].range).toBe("bytes=1000000-");
    expect(await sameBytes(out, raw)).toBe(true);
    expect((await names(dir)).filter((n) => n.endsWith(".partial"))).toEqual([]);
});

test("concurrent downloads of one checksum leave one verified entry and correct images", async () => {
    const url = new URL(`${server.url}/img/disk.raw`);
    const outs = await Promise.all([1, 2, 3, 4].map(() => newOut()));
    const results = await Promise.all(outs.map((out) => imageFromUrl(stateDir, url, rawSum, out, settings())));
    for (const out of outs) expect(await sameBytes(out, raw)).toBe(true);
    expect(await names(downloadsDir(stateDir))).toEqual([`sha256-${rawSum.hex}`, `sha256-${rawSum.hex}.json`]);
    // The partial files name their writer: callers wait for a live one instead of all downloading.
    expect(imageGets(server, "/img/disk.raw").length).toBeLessThan(4);
    expect(results.filter((r) => !r.cache.hit).length).toBe(imageGets(server, "/img/disk.raw").length);
});

test("a full disk fails the download with ENOSPC and removes the partial", async () => {
    // A 2 MiB tmpfs as the state directory: the 6 MiB image cannot fit.
    const small = await mkdtemp(path.join(work, "small-"));
    await execa("mount", ["-t", "tmpfs", "-o", "size=2m,mode=0700", "tmpfs", small]);
    try {
        const err = await caught(
            imageFromUrl(small, new URL(`${server.url}/img/disk.raw`), rawSum, await newOut(), settings()),
        );
        expect(isOutOfSpace(err)).toBe(true);
        expect(await names(downloadsDir(small))).toEqual([]);
    } finally {
        await execa("umount", [small]);
    }
});

test("copying keeps holes: a sparse raw image stays sparse", async () => {
    const sparse = path.join(work, "sparse.raw");
    await execa("truncate", ["-s", "256M", sparse]);
    await copyFile(raw, path.join(work, "ignored"));
    await execa("dd", ["if=" + raw, "of=" + sparse, "bs=1M", "count=1", "conv=notrunc", "status=none"]);
    server.serve("/img/sparse.raw", sparse);
    const out = await newOut();
    await imageFromUrl(
        stateDir,
        new URL(`${server.url}/img/sparse.raw`),
        sumOf(await fileDigest(sparse, "sha256")),
        out,
        settings(),
    );
    const st = await stat(out);
    expect(st.size).toBe(256 * 1024 * 1024);
    expect(st.blocks * 512).toBeLessThan(16 * 1024 * 1024);
});
