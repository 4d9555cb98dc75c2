import { defaultImagePath, ext4Identifiers, sidecarPath } from "../../provider/core/diskImageSpec";
import { imageFormat, imageInputHash, parseDiskImageSpec } from "../../provider/resources/diskImage/spec";
import { InputError } from "../../provider/core/validation";

function problems(inputs: Record<string, unknown>): { property: string; reason: string }[] {
    try {
        parseDiskImageSpec(inputs);
    } catch (err) {
        if (err instanceof InputError) return err.problems;
        throw err;
    }
    throw new Error(`expected ${JSON.stringify(inputs)} to be refused`);
}

describe("parseDiskImageSpec", () => {
    test("each kind parses, with sizes in bytes and defaults filled", () => {
        expect(parseDiskImageSpec({ source: { kind: "blank", size: "1G", format: "qcow2" } }).source).toEqual({
            kind: "blank",
            sizeBytes: 1024 ** 3,
            format: "qcow2",
        });
        expect(parseDiskImageSpec({ source: { kind: "file", path: "/a/../b.img" } }).source).toEqual({
            kind: "file",
            path: "/b.img",
            format: undefined,
        });
        expect(
            parseDiskImageSpec({ source: { kind: "directory", path: "/d", size: 64 * 1024 ** 2, label: "root" } })
                .source,
        ).toEqual({
            kind: "directory",
            path: "/d",
            sizeBytes: 64 * 1024 ** 2,
            fsType: "ext4",
            label: "root",
        });
        expect(
            parseDiskImageSpec({
                source: { kind: "overlay", backing: "/b.raw", backingFormat: "raw" },
                path: "/o.qcow2",
                stateDir: "/s",
            }),
        ).toEqual({
            source: {
                kind: "overlay",
                backing: "/b.raw",
                backingFormat: "raw",
                sizeBytes: undefined,
                backingInputHash: undefined,
            },
            path: "/o.qcow2",
            stateDir: "/s",
            mode: 0o600,
        });
    });

    test("keys Pulumi adds next to the inputs (__provider, output names) are ignored", () => {
        expect(() =>
            parseDiskImageSpec({
                source: { kind: "blank", size: 512, format: "raw" },
                __provider: "x",
                inputHash: undefined,
            } as never),
        ).not.toThrow();
    });

    test.each([
        [{ source: { kind: "blank", size: "-1G", format: "raw" } }, "source.size", /binary suffix.*got "-1G"/],
        [{ source: { kind: "blank", size: "12Q", format: "raw" } }, "source.size", /got "12Q"/],
        [{ source: { kind: "blank", size: 0, format: "raw" } }, "source.size", /greater than 0.*got 0/],
        [{ source: { kind: "blank", size: "1G", format: "vmdk" } }, "source.format", /"raw" or "qcow2".*got "vmdk"/],
        [{ source: { kind: "blank", format: "raw" } }, "source.size", /size must be/],
        [{ source: { kind: "floppy" } }, "source.kind", /kind must be one of "blank", "file", "directory", "overlay"/],
        [{ source: { kind: "file", path: "relative.img" } }, "source.path", /absolute/],
        [
            { source: { kind: "file", path: "/x", sise: 3 } },
            "source.sise",
            /"sise" is not a key of source \(it takes: kind, path, format\)$/,
        ],
        [{ source: { kind: "directory", path: "/d", size: "1M", fsType: "xfs" } }, "source.fsType", /"ext4"/],
        [
            { source: { kind: "directory", path: "/d", size: "1M", label: "a-label-that-is-too-long" } },
            "source.label",
            /16 bytes/,
        ],
        [
            { source: { kind: "overlay", backing: "/b", backingInputHash: "XYZ" } },
            "source.backingInputHash",
            /hex digest/,
        ],
        [{ source: { kind: "overlay", backing: "/b", size: "1.1K" } }, "source.size", /whole number of bytes/],
        [
            { source: { kind: "overlay", backing: "/img/x.qcow2" }, path: "/img/./x.qcow2" },
            "source.backing",
            /own path/,
        ],
        [{ source: { kind: "file", path: "/img/x.raw" }, path: "/img/x.raw" }, "source.path", /own path/],
        [{ source: { kind: "blank", size: 512, format: "raw" }, path: "rel" }, "path", /absolute/],
        [{ source: { kind: "blank", size: 512, format: "raw" }, stateDir: "" }, "stateDir", /empty/],
        [{}, "source", /kind/],
        [{ source: "blank" }, "source", /object/],
    ])("%j → %s", (inputs, property, reason) => {
        const found = problems(inputs as Record<string, unknown>);
        const p = found.find((x) => x.property === property);
        if (!p) throw new Error(`no problem for ${property}; got ${JSON.stringify(found)}`);
        expect(p.reason).toMatch(reason);
    });
});

describe("imageInputHash", () => {
    const blank = (size: string | number) =>
        parseDiskImageSpec({ source: { kind: "blank", size, format: "raw" } }).source;

    test("the same size however written is the same image; another size is another", () => {
        expect(imageInputHash(blank("1G"), { kind: "blank" })).toBe(
            imageInputHash(blank(1024 ** 3), { kind: "blank" }),
        );
        expect(imageInputHash(blank("1G"), { kind: "blank" })).toBe(imageInputHash(blank("1024M"), { kind: "blank" }));
        expect(imageInputHash(blank("1G"), { kind: "blank" })).not.toBe(imageInputHash(blank("2G"), { kind: "blank" }));
    });

    test("a file source is its content, not where it lies", () => {
        const a = parseDiskImageSpec({ source: { kind: "file", path: "/a.img" } }).source;
        const b = parseDiskImageSpec({ source: { kind: "file", path: "/b.img" } }).source;
        const content = { kind: "file" as const, format: "raw" as const, sha256: "ab".repeat(32), chain: [] };
        expect(imageInputHash(a, content)).toBe(imageInputHash(b, content));
        expect(imageInputHash(a, content)).not.toBe(imageInputHash(a, { ...content, sha256: "cd".repeat(32) }));
        expect(imageInputHash(a, content)).not.toBe(imageInputHash(a, { ...content, format: "qcow2" }));
    });

    test("an overlay depends on its backing's path and identity", () => {
        const o = (backing: string) => parseDiskImageSpec({ source: { kind: "overlay", backing } }).source;
        const c = (id: string) => ({ kind: "overlay" as const, backingFormat: "raw" as const, backingIdentity: id });
        expect(imageInputHash(o("/b1"), c("aa"))).toBe(imageInputHash(o("/b1"), c("aa")));
        expect(imageInputHash(o("/b1"), c("aa"))).not.toBe(imageInputHash(o("/b2"), c("aa")));
        expect(imageInputHash(o("/b1"), c("aa"))).not.toBe(imageInputHash(o("/b1"), c("bb")));
    });

    test("a directory's label and tree are part of it", () => {
        const d = (label?: string) =>
            parseDiskImageSpec({ source: { kind: "directory", path: "/d", size: "8M", label } }).source;
        const t = (h: string) => ({ kind: "directory" as const, treeHash: h });
        expect(imageInputHash(d(), t("1"))).toBe(
            imageInputHash(
                parseDiskImageSpec({ source: { kind: "directory", path: "/d", size: "8M", fsType: "ext4" } }).source,
                t("1"),
            ),
        );
        expect(imageInputHash(d(), t("1"))).not.toBe(imageInputHash(d("x"), t("1")));
        expect(imageInputHash(d(), t("1"))).not.toBe(imageInputHash(d(), t("2")));
    });

    test('owners "root" is the default and hashes as before; "preserve" is another image', () => {
        const d = (owners?: string) =>
            parseDiskImageSpec({ source: { kind: "directory", path: "/d", size: "8M", owners } }).source;
        const t = { kind: "directory" as const, treeHash: "1" };
        expect(d("root")).toEqual(d());
        expect(d("preserve")).toMatchObject({ owners: "preserve" });
        // Pinned: the hash of this directory image as computed before the owners field existed.
        expect(imageInputHash(d(), t)).toBe("d2a1e6cbdce32304200a3d300b873ca834aa649fa57449c5a8e55b111a537a9d");
        expect(imageInputHash(d("root"), t)).toBe(imageInputHash(d(), t));
        expect(imageInputHash(d("preserve"), t)).not.toBe(imageInputHash(d(), t));
        expect(() => d("keep")).toThrow(/owners must be "root" .* or "preserve"/);
    });

    test("content of another kind is a programming error", () => {
        expect(() => imageInputHash(blank(512), { kind: "directory", treeHash: "x" })).toThrow(
            /blank source with directory content/,
        );
    });
});

describe("names and identifiers", () => {
    test("default path sits under images/ and carries the hash prefix", () => {
        expect(defaultImagePath("/s", "0123456789abcdef0123", "qcow2", "k3j2")).toBe(
            "/s/images/0123456789abcdef-k3j2.qcow2",
        );
        expect(() => defaultImagePath("/s", "0123456789abcdef", "raw", "../x")).toThrow(/nonce/);
        expect(sidecarPath("/s/a.raw")).toBe("/s/a.raw.pulumi-qemu.json");
    });

    test("formats", () => {
        expect(imageFormat({ kind: "directory", path: "/d", sizeBytes: 1, fsType: "ext4" })).toBe("raw");
        expect(imageFormat({ kind: "overlay", backing: "/b" })).toBe("qcow2");
        expect(imageFormat({ kind: "file", path: "/f" }, "qcow2")).toBe("qcow2");
        expect(() => imageFormat({ kind: "file", path: "/f" })).toThrow(/detected format/);
    });

    test("ext4 identifiers are fixed by the hash and shaped like UUIDs", () => {
        const a = ext4Identifiers("aa");
        expect(a).toEqual(ext4Identifiers("aa"));
        expect(a.uuid).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
        expect(a.hashSeed).not.toBe(a.uuid);
        expect(ext4Identifiers("bb").uuid).not.toBe(a.uuid);
    });
});
