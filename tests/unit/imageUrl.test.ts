import {
    checksumKey,
    compressionByMagic,
    compressionBySuffix,
    formatByMagic,
    parseChecksum,
    parseImageUrl,
    proxyFor,
    redactUrl,
    sumsEntry,
    urlFileName,
} from "../../provider/core/imageUrl";

/** Checksums, sums files, URLs as shown, proxy choice and magic bytes: the pure half of images by URL. */

const H256 = "a".repeat(64);
const H512 = "b".repeat(128);

test("checksums are sha256 or sha512 with the right number of hex digits", () => {
    expect(parseChecksum(`sha256:${H256.toUpperCase()}`)).toEqual({ algorithm: "sha256", hex: H256 });
    expect(parseChecksum(`sha512:${H512}`)).toEqual({ algorithm: "sha512", hex: H512 });
    expect(parseChecksum(`sha256:${H512}`)).toEqual({
        problem: expect.stringMatching(/64 hex digits, this one has 128/),
    });
    expect(parseChecksum(`md5:${"c".repeat(32)}`)).toEqual({
        problem: expect.stringMatching(/sha256:<64 hex digits>/),
    });
    expect(parseChecksum(H256)).toHaveProperty("problem");
    expect(checksumKey({ algorithm: "sha256", hex: H256 })).toBe(`sha256-${H256}`);
});

test("a sums file entry is found by file name in GNU and BSD layouts", () => {
    const gnu = `${H512}  debian-12-genericcloud-amd64.qcow2\n${"c".repeat(128)}  debian-12-genericcloud-amd64.raw\n`;
    expect(sumsEntry(gnu, "debian-12-genericcloud-amd64.qcow2")).toEqual({ algorithm: "sha512", hex: H512 });
    expect(sumsEntry(`${H256} *./disk.img\n`, "disk.img")).toEqual({ algorithm: "sha256", hex: H256 });
    expect(sumsEntry(`SHA256 (disk.img) = ${H256}\n`, "disk.img")).toEqual({ algorithm: "sha256", hex: H256 });
    expect(sumsEntry(`${H256}  sub/disk.img\n`, "disk.img")).toEqual({ algorithm: "sha256", hex: H256 });
    expect(sumsEntry(gnu, "other.qcow2")).toEqual({
        problem: expect.stringMatching(/lists no SHA-256 or SHA-512 checksum for "other.qcow2"/),
    });
    expect(sumsEntry(`${H256}  disk.img\n${"d".repeat(64)}  disk.img\n`, "disk.img")).toEqual({
        problem: expect.stringMatching(/2 different checksums/),
    });
    // A name that only ends like ours is another file.
    expect(sumsEntry(`${H256}  olddisk.img\n`, "disk.img")).toHaveProperty("problem");
});

test("URLs are shown without user, password or query string", () => {
    expect(redactUrl("https://alice:s3cret@example.org/img/disk.qcow2?X-Amz-Signature=abc")).toBe(
        "https://example.org/img/disk.qcow2?…",
    );
    expect(redactUrl("https://example.org/disk.qcow2")).toBe("https://example.org/disk.qcow2");
    expect(redactUrl("not a url alice:s3cret@host?token=x")).not.toMatch(/token=x/);
    expect(redactUrl("http//alice:s3cret@host/x")).not.toMatch(/s3cret/);
});

test("only https, http and file URLs naming a file are accepted", () => {
    expect(parseImageUrl("ftp://example.org/disk.img")).toEqual({
        problem: expect.stringMatching(/ftp:, only https:, http: and file:/),
    });
    expect(parseImageUrl("https://example.org/images/")).toEqual({ problem: expect.stringMatching(/names no file/) });
    expect(parseImageUrl("disk.img")).toEqual({ problem: expect.stringMatching(/is not a URL/) });
    expect(parseImageUrl("file://otherhost/disk.img")).toEqual({
        problem: expect.stringMatching(/names host otherhost/),
    });
    const ok = parseImageUrl("https://example.org/images/my%20disk.qcow2");
    expect(ok).toBeInstanceOf(URL);
    expect(urlFileName(ok as URL)).toBe("my disk.qcow2");
});

test("the proxy follows curl's reading of the environment", () => {
    const u = (s: string) => new URL(s);
    const env = {
        https_proxy: "http://proxy:3128",
        HTTP_PROXY: "proxy2:8080",
        NO_PROXY: "internal.example, .corp, 10.0.0.0/8, 127.0.0.1:8443",
    };
    expect(proxyFor(u("https://example.org/x"), env)?.href).toBe("http://proxy:3128/");
    expect(proxyFor(u("http://example.org/x"), env)?.href).toBe("http://proxy2:8080/");
    expect(proxyFor(u("file:///x"), env)).toBeUndefined();
    expect(proxyFor(u("https://internal.example/x"), env)).toBeUndefined();
    expect(proxyFor(u("https://a.b.internal.example/x"), env)).toBeUndefined();
    expect(proxyFor(u("https://x.corp/x"), env)).toBeUndefined();
    expect(proxyFor(u("https://10.1.2.3/x"), env)).toBeUndefined();
    expect(proxyFor(u("https://11.1.2.3/x"), env)).toBeDefined();
    expect(proxyFor(u("https://127.0.0.1:8443/x"), env)).toBeUndefined();
    expect(proxyFor(u("https://127.0.0.1:9443/x"), env)).toBeDefined();
    expect(proxyFor(u("https://notinternal.example/x"), env)).toBeDefined();
    expect(proxyFor(u("https://example.org/x"), { ...env, no_proxy: "*" })).toBeUndefined();
});

test("compression and format are read from names and first bytes", () => {
    expect(compressionBySuffix("disk.raw.xz")).toBe("xz");
    expect(compressionBySuffix("disk.img.GZ")).toBe("gzip");
    expect(compressionBySuffix("disk.raw.zst")).toBe("zstd");
    expect(compressionBySuffix("disk.qcow2")).toBeUndefined();
    expect(compressionByMagic(Buffer.from([0x1f, 0x8b, 8, 0]))).toBe("gzip");
    expect(compressionByMagic(Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]))).toBe("xz");
    expect(compressionByMagic(Buffer.from([0x28, 0xb5, 0x2f, 0xfd]))).toBe("zstd");
    expect(compressionByMagic(Buffer.from("QFI\xfb", "latin1"))).toBeUndefined();
    expect(formatByMagic(Buffer.from("QFI\xfb", "latin1"))).toBe("qcow2");
    expect(formatByMagic(Buffer.alloc(4))).toBe("raw");
});
