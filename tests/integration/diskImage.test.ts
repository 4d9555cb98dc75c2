import execa from "execa";
import { createHash } from "node:crypto";
import {
    chmod,
    chown,
    link,
    mkdir,
    mkdtemp,
    readdir,
    readFile,
    rm,
    stat,
    symlink,
    utimes,
    writeFile,
} from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import { InputError } from "../../provider/core/validation";
import type { ReadCounter } from "../../provider/host/files/fileHash";
import {
    check,
    createDiskImage,
    diffImage,
    readImage,
    removeImage,
    type DiskImageInputs,
    type DiskImageOutputs,
} from "../../provider/resources/diskImage";

/** Every kind of DiskImage made with the real qemu-img and mkfs.ext4, then diffed, read and deleted. */

const UNKNOWN = "04da6b54-80e4-46f7-96ec-b56ff0331ba9";

let work: string;
let stateDir: string;

beforeEach(async () => {
    work = await mkdtemp(path.join(os.tmpdir(), "pq-diskimage-"));
    stateDir = path.join(work, "state");
});

afterEach(async () => {
    await rm(work, { recursive: true, force: true });
});

interface Info {
    format: string;
    "virtual-size": number;
    "backing-filename"?: string;
    "backing-filename-format"?: string;
}

async function qemuInfo(file: string): Promise<Info> {
    const r = await execa("qemu-img", ["info", "-U", "--output=json", file]);
    return JSON.parse(r.stdout) as Info;
}

async function sha256(file: string): Promise<string> {
    return createHash("sha256")
        .update(await readFile(file))
        .digest("hex");
}

/** BLAKE3 by the reference tool, which the provider's content digests must match. */
async function b3sum(file: string): Promise<string> {
    return (await execa("b3sum", ["--no-names", file])).stdout.trim();
}

async function exists(file: string): Promise<boolean> {
    return stat(file).then(
        () => true,
        () => false,
    );
}

/** Every name in `dir` and below, so a failed create can be shown to leave nothing. */
async function listing(dir: string): Promise<string[]> {
    if (!(await exists(dir))) return [];
    const out: string[] = [];
    for (const e of await readdir(dir, { withFileTypes: true })) {
        out.push(e.name);
        if (e.isDirectory()) out.push(...(await listing(path.join(dir, e.name))).map((n) => `${e.name}/${n}`));
    }
    return out.sort();
}

async function expectFieldError(p: Promise<unknown>, property: string, reason: RegExp): Promise<void> {
    let caught: unknown;
    try {
        await p;
    } catch (err) {
        caught = err;
    }
    if (!(caught instanceof InputError))
        throw new Error(
            `expected an InputError on ${property}, got ${caught instanceof Error ? caught.stack : String(caught)}`,
        );
    const problem = caught.problems.find((x) => x.property === property);
    if (!problem) throw new Error(`no problem reported for ${property}: ${caught.message}`);
    expect(problem.reason).toMatch(reason);
}

const make = (inputs: Omit<DiskImageInputs, "stateDir">, counter?: ReadCounter) =>
    createDiskImage({ stateDir, ...inputs }, { counter });
const diffOf = (olds: DiskImageOutputs, news: Omit<DiskImageInputs, "stateDir">, counter?: ReadCounter) =>
    diffImage(olds.path, olds, { stateDir, ...news }, { counter });

describe("blank images", () => {
    test("raw and qcow2 have the format and size asked for, under a private state directory", async () => {
        const raw = await make({ source: { kind: "blank", size: "64M", format: "raw" } });
        expect(raw.format).toBe("raw");
        expect(raw.virtualSizeBytes).toBe(64 * 1024 ** 2);
        expect(raw.pathDefaulted).toBe(true);
        expect(path.dirname(raw.path)).toBe(path.join(stateDir, "images"));
        expect(path.basename(raw.path)).toMatch(new RegExp(`^${raw.inputHash.slice(0, 16)}-[0-9a-f]{8}\\.raw$`));
        expect((await stat(stateDir)).mode & 0o777).toBe(0o700);
        expect((await stat(path.join(stateDir, "images"))).mode & 0o777).toBe(0o700);
        expect(await qemuInfo(raw.path)).toMatchObject({ format: "raw", "virtual-size": 64 * 1024 ** 2 });

        // Sizes are whole 512-byte sectors (others are refused at check), so qemu-img makes exactly what was asked.
        const q = await make({ source: { kind: "blank", size: 100000256, format: "qcow2" } });
        const info = await qemuInfo(q.path);
        expect(info.format).toBe("qcow2");
        expect(info["virtual-size"]).toBe(100000256);
        expect(q.virtualSizeBytes).toBe(100000256);
        expect(q.sizeRequested).toBe(100000256);
        expect(await diffOf(q, { source: { kind: "blank", size: 100000256, format: "qcow2" } })).toEqual({
            changes: false,
        });
        expect(JSON.stringify(q)).not.toContain("undefined");
        expect(Object.values(q).includes(undefined)).toBe(false);
    });

    test("the same size written another way is no change; another size or format replaces", async () => {
        const img = await make({ source: { kind: "blank", size: "1G", format: "qcow2" } });
        expect(await diffOf(img, { source: { kind: "blank", size: 1024 ** 3, format: "qcow2" } })).toEqual({
            changes: false,
        });
        expect(await diffOf(img, { source: { kind: "blank", size: "1024MiB", format: "qcow2" } })).toEqual({
            changes: false,
        });
        expect(await diffOf(img, { source: { kind: "blank", size: "2G", format: "qcow2" } })).toMatchObject({
            changes: true,
            replaces: ["source"],
            deleteBeforeReplace: false,
        });
        expect(await diffOf(img, { source: { kind: "blank", size: "1G", format: "raw" } })).toMatchObject({
            changes: true,
            replaces: ["source"],
        });
    });

    test("two resources with the same inputs get two files", async () => {
        const a = await make({ source: { kind: "blank", size: "1M", format: "qcow2" } });
        const b = await make({ source: { kind: "blank", size: "1M", format: "qcow2" } });
        expect(a.inputHash).toBe(b.inputHash);
        expect(a.path).not.toBe(b.path);
    });

    test("an explicit path: same path is no change, another path replaces, and the same path replaces delete-first", async () => {
        const p = path.join(work, "disk.qcow2");
        const img = await make({ source: { kind: "blank", size: "1M", format: "qcow2" }, path: p });
        expect(img.path).toBe(p);
        expect(img.pathDefaulted).toBe(false);
        expect(await diffOf(img, { source: { kind: "blank", size: "1M", format: "qcow2" }, path: p })).toEqual({
            changes: false,
        });
        expect(
            await diffOf(img, {
                source: { kind: "blank", size: "1M", format: "qcow2" },
                path: path.join(work, "other.qcow2"),
            }),
        ).toMatchObject({
            changes: true,
            replaces: ["path"],
            deleteBeforeReplace: false,
        });
        expect(await diffOf(img, { source: { kind: "blank", size: "2M", format: "qcow2" }, path: p })).toMatchObject({
            changes: true,
            replaces: ["source"],
            deleteBeforeReplace: true,
        });
        // Dropping the explicit path moves the image under the state directory.
        expect(await diffOf(img, { source: { kind: "blank", size: "1M", format: "qcow2" } })).toMatchObject({
            changes: true,
            replaces: ["path"],
        });
    });
});

describe("file imports", () => {
    test("a raw file is copied with its format detected, and the source is never modified", async () => {
        const src = path.join(work, "src.raw");
        await writeFile(src, Buffer.alloc(3 * 1024 * 1024, 7));
        const before = await stat(src, { bigint: true });
        const srcHash = await sha256(src);
        const img = await make({ source: { kind: "file", path: src } });
        expect(img.format).toBe("raw");
        expect(await sha256(img.path)).toBe(srcHash);
        expect(img.contentFingerprint).toBe(await b3sum(src));
        expect(img.digestAlgorithm).toBe("blake3");
        const after = await stat(src, { bigint: true });
        expect([after.mtimeNs, after.ctimeNs, after.size]).toEqual([before.mtimeNs, before.ctimeNs, before.size]);
        expect(await sha256(src)).toBe(srcHash);
        expect(await diffOf(img, { source: { kind: "file", path: src } })).toEqual({ changes: false });
        // The format spelled out is the one detected: no change.
        expect(await diffOf(img, { source: { kind: "file", path: src, format: "raw" } })).toEqual({ changes: false });
    });

    test("changing the source's content replaces the import; moving it elsewhere with the same bytes does not", async () => {
        const src = path.join(work, "src.raw");
        await writeFile(src, Buffer.alloc(1024 * 1024, 1));
        const img = await make({ source: { kind: "file", path: src } });
        const moved = path.join(work, "moved.raw");
        await writeFile(moved, Buffer.alloc(1024 * 1024, 1));
        expect(await diffOf(img, { source: { kind: "file", path: moved } })).toEqual({ changes: false });
        await writeFile(src, Buffer.alloc(1024 * 1024, 2));
        expect(await diffOf(img, { source: { kind: "file", path: src } })).toMatchObject({
            changes: true,
            replaces: ["source"],
        });
    });

    test("a qcow2 with a backing file is flattened into a standalone image", async () => {
        const base = path.join(work, "base.raw");
        await writeFile(base, Buffer.alloc(1024 * 1024, 9));
        const top = path.join(work, "top.qcow2");
        // A relative backing name, read from the overlay's directory, not from the provider's cwd.
        await execa("qemu-img", ["create", "-q", "-f", "qcow2", "-b", "base.raw", "-F", "raw", top]);
        const img = await make({ source: { kind: "file", path: top } });
        expect(img.format).toBe("qcow2");
        const info = await qemuInfo(img.path);
        expect(info.format).toBe("qcow2");
        expect(info["backing-filename"]).toBeUndefined();
        const flat = path.join(work, "flat.raw");
        await execa("qemu-img", ["convert", "-O", "raw", img.path, flat]);
        expect(await sha256(flat)).toBe(await sha256(base));
        // The layer below is part of what the import is made from.
        await writeFile(base, Buffer.alloc(1024 * 1024, 8));
        expect(await diffOf(img, { source: { kind: "file", path: top } })).toMatchObject({
            changes: true,
            replaces: ["source"],
        });
    });

    test("a missing source, a directory, and a file qemu-img cannot read are field errors, and nothing is left", async () => {
        await expectFieldError(
            make({ source: { kind: "file", path: path.join(work, "nope.img") } }),
            "source.path",
            /nope\.img does not exist/,
        );
        await expectFieldError(
            make({ source: { kind: "file", path: work } }),
            "source.path",
            /is a directory; a disk image must be a regular file/,
        );
        const bad = path.join(work, "bad.qcow2");
        // A qcow2 header whose size field is absurd: qemu-img's own complaint must reach the user.
        const header = Buffer.alloc(512);
        header.write("QFI\xfb", 0, "latin1");
        header.writeUInt32BE(3, 4);
        header.writeUInt32BE(99, 20); // cluster_bits out of range
        await writeFile(bad, header);
        await expectFieldError(
            make({ source: { kind: "file", path: bad, format: "qcow2" } }),
            "source.path",
            /cannot be opened as a disk image: qemu-img: .*[Cc]luster size/,
        );
        expect(await listing(path.join(stateDir, "images"))).toEqual([]);
    });
});

describe("directory images", () => {
    async function tree(root: string, when: Date, owner: number): Promise<void> {
        await mkdir(path.join(root, "etc", "deep"), { recursive: true });
        await writeFile(path.join(root, "etc", "hostname"), "guest\n");
        await writeFile(path.join(root, "etc", "deep", 'we"ird name'), "quoted\n");
        await writeFile(path.join(root, "big"), Buffer.alloc(2 * 1024 * 1024, 5));
        await chmod(path.join(root, "big"), 0o600);
        await symlink("etc/hostname", path.join(root, "link"));
        await link(path.join(root, "etc", "hostname"), path.join(root, "hard"));
        for (const p of ["etc/hostname", 'etc/deep/we"ird name', "big", "etc/deep", "etc", ""]) {
            await chown(path.join(root, p), owner, owner);
            await utimes(path.join(root, p), when, when);
        }
    }

    test("the same tree built twice, with other owners and times, gives the same bytes", async () => {
        const a = path.join(work, "a");
        const b = path.join(work, "b");
        await tree(a, new Date("2001-01-01"), 1234);
        await tree(b, new Date("2011-11-11"), 4321);
        const one = await make({ source: { kind: "directory", path: a, size: "16M", label: "data" } });
        const two = await make({ source: { kind: "directory", path: b, size: "16M", label: "data" } });
        expect(one.inputHash).toBe(two.inputHash);
        expect(one.path).not.toBe(two.path);
        expect(await sha256(one.path)).toBe(await sha256(two.path));
        expect(one.contentFingerprint).toBe(await b3sum(one.path));
        expect(one.format).toBe("raw");
        expect(one.virtualSizeBytes).toBe(16 * 1024 ** 2);

        const dump = await execa("debugfs", ["-R", 'stat "/etc/deep/we""ird name"', one.path]);
        expect(dump.stdout).toMatch(/User:\s+0\s+Group:\s+0/);
        expect(dump.stdout).toMatch(/mtime: 0x00000001:00000000/);
        expect(dump.stdout).toMatch(/ctime: 0x00000001:00000000/);
        const cat = await execa("debugfs", ["-R", 'cat "/etc/deep/we""ird name"', one.path]);
        expect(cat.stdout).toBe("quoted");
        const label = await execa("dumpe2fs", ["-h", one.path]);
        expect(label.stdout).toMatch(/Filesystem volume name:\s+data/);
        const fsck = await execa("e2fsck", ["-fn", one.path], { reject: false });
        expect(fsck.exitCode).toBe(0);
    });

    test("a changed file, a new file or a changed mode replaces; touching a file does not", async () => {
        const d = path.join(work, "d");
        await tree(d, new Date("2001-01-01"), 0);
        const img = await make({ source: { kind: "directory", path: d, size: "16M" } });
        const same = { source: { kind: "directory", path: d, size: "16M" } };
        expect(await diffOf(img, same)).toEqual({ changes: false });
        await utimes(path.join(d, "etc", "hostname"), new Date(), new Date());
        expect(await diffOf(img, same)).toEqual({ changes: false });
        await writeFile(path.join(d, "etc", "hostname"), "other\n");
        expect(await diffOf(img, same)).toMatchObject({ changes: true, replaces: ["source"] });
        await writeFile(path.join(d, "etc", "hostname"), "guest\n");
        expect(await diffOf(img, same)).toEqual({ changes: false });
        await chmod(path.join(d, "etc", "hostname"), 0o755);
        expect(await diffOf(img, same)).toMatchObject({ changes: true, replaces: ["source"] });
        await chmod(path.join(d, "etc", "hostname"), 0o644);
        await writeFile(path.join(d, "new"), "");
        expect(await diffOf(img, same)).toMatchObject({ changes: true, replaces: ["source"] });
    });

    test("a tree larger than size, a missing directory and a socket are field errors, and nothing is left", async () => {
        const d = path.join(work, "d");
        await mkdir(d);
        await writeFile(path.join(d, "big"), Buffer.alloc(3 * 1024 * 1024, 1));
        await expectFieldError(
            make({ source: { kind: "directory", path: d, size: "2M" } }),
            "source.size",
            /too small for .* holds 3 MiB/,
        );
        // Room for the data but not for the filesystem around it: mkfs's own words, on the same field.
        await expectFieldError(
            make({ source: { kind: "directory", path: d, size: "3080K" } }),
            "source.size",
            /does not hold|too small/,
        );
        await expectFieldError(
            make({ source: { kind: "directory", path: path.join(work, "none"), size: "2M" } }),
            "source.path",
            /does not exist/,
        );
        const s = path.join(work, "s");
        await mkdir(s);
        const server = require("node:net").createServer();
        await new Promise<void>((r) => server.listen(path.join(s, "sock"), r));
        try {
            await expectFieldError(
                make({ source: { kind: "directory", path: s, size: "4M" } }),
                "source.path",
                /sock is a socket/,
            );
        } finally {
            server.close();
        }
        expect(await listing(path.join(stateDir, "images"))).toEqual([]);
    });
});

describe("overlays", () => {
    async function base(size = "8M"): Promise<DiskImageOutputs> {
        return make({ source: { kind: "blank", size, format: "raw" } });
    }

    test("an overlay names its backing by absolute path and format, and the base stays untouched", async () => {
        const b = await base();
        const before = await stat(b.path, { bigint: true });
        const o = await make({ source: { kind: "overlay", backing: b.path } });
        expect(o.format).toBe("qcow2");
        expect(o.backingPath).toBe(b.path);
        expect(o.backingFormat).toBe("raw");
        expect(o.virtualSizeBytes).toBe(8 * 1024 ** 2);
        const info = await qemuInfo(o.path);
        expect(info).toMatchObject({
            format: "qcow2",
            "backing-filename": b.path,
            "backing-filename-format": "raw",
            "virtual-size": 8 * 1024 ** 2,
        });
        // The base was made by us: its identity comes from its sidecar, without reading it.
        expect(o.backingIdentityFrom).toBe("sidecar");
        expect(o.backingInputHash).toBe(b.inputHash);
        const after = await stat(b.path, { bigint: true });
        expect([after.mtimeNs, after.ctimeNs]).toEqual([before.mtimeNs, before.ctimeNs]);

        const grown = await make({ source: { kind: "overlay", backing: b.path, backingFormat: "raw", size: "16M" } });
        expect((await qemuInfo(grown.path))["virtual-size"]).toBe(16 * 1024 ** 2);
        // Spelling out the detected backing format is no change.
        expect(await diffOf(o, { source: { kind: "overlay", backing: b.path, backingFormat: "raw" } })).toEqual({
            changes: false,
        });
    });

    test("the explicit backingInputHash, the sidecar and the content each give the backing's identity", async () => {
        const b = await base();
        const wired = await make({ source: { kind: "overlay", backing: b.path, backingInputHash: b.inputHash } });
        expect(wired.backingIdentityFrom).toBe("input");
        const found = await make({ source: { kind: "overlay", backing: b.path } });
        // Wired or found, the overlay is the same image.
        expect(wired.inputHash).toBe(found.inputHash);
        expect(
            await diffOf(found, { source: { kind: "overlay", backing: b.path, backingInputHash: b.inputHash } }),
        ).toEqual({ changes: false });
        // A rebuilt base has another inputHash: every overlay on it is replaced.
        expect(
            await diffOf(wired, { source: { kind: "overlay", backing: b.path, backingInputHash: "ab".repeat(32) } }),
        ).toMatchObject({ changes: true, replaces: ["source"] });

        const foreign = path.join(work, "foreign.raw");
        await writeFile(foreign, Buffer.alloc(1024 * 1024, 3));
        const o = await make({ source: { kind: "overlay", backing: foreign } });
        expect(o.backingIdentityFrom).toBe("content");
        expect(o.backingInputHash).toBe(await b3sum(foreign));
    });

    test("a base changed under its overlay: diff replaces, read reports drift", async () => {
        const b = await base();
        const o = await make({ source: { kind: "overlay", backing: b.path } });
        const same = { source: { kind: "overlay", backing: b.path } };
        expect(await diffOf(o, same)).toEqual({ changes: false });
        expect((await readImage(o.path, o)).props).not.toHaveProperty("drift");
        await writeFile(b.path, Buffer.alloc(8 * 1024 * 1024, 1));
        const r = await readImage(o.path, o);
        expect(r.id).toBe(o.path);
        expect(r.props!.drift).toMatch(/backing file .* changed since the overlay was made/);
        expect(await diffOf(o, same)).toMatchObject({ changes: true, replaces: ["source"] });
        // Even when the user wires an identity that did not change, the changed file is not used silently.
        const wired = await make({ source: { kind: "overlay", backing: b.path, backingInputHash: b.inputHash } });
        await writeFile(b.path, Buffer.alloc(8 * 1024 * 1024, 2));
        expect(
            await diffOf(wired, { source: { kind: "overlay", backing: b.path, backingInputHash: b.inputHash } }),
        ).toMatchObject({ changes: true, replaces: ["source"] });
        await rm(b.path);
        expect((await readImage(o.path, o)).props!.drift).toMatch(/backing file .* is gone/);
    });

    test("an overlay rebased onto another file behind our back is drift on refresh", async () => {
        const b = await base();
        const other = await base();
        const o = await make({ source: { kind: "overlay", backing: b.path } });
        expect((await readImage(o.path, o)).props!.drift).toBeUndefined();
        await execa("qemu-img", ["rebase", "-u", "-b", other.path, "-F", "raw", o.path]);
        expect((await readImage(o.path, o)).props!.drift).toMatch(
            new RegExp(`now names ${other.path.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")} backing file instead of`),
        );
    });

    test("an overlay whose header was overwritten, or names a backing file that is not UTF-8, is drift on refresh, not a failure", async () => {
        const b = await base();
        const o = await make({ source: { kind: "overlay", backing: b.path } });
        // execa passes arguments as UTF-8 strings; printf gives qemu-img the raw byte 0xff (-u: the file need not exist).
        await execa("sh", [
            "-c",
            `qemu-img rebase -u -b "$(printf '%s-\\377' "$1")" -F raw "$2"`,
            "sh",
            b.path,
            o.path,
        ]);
        expect((await readImage(o.path, o)).props!.drift).toMatch(
            /is not a qcow2 header we can read: a backing file name that is not UTF-8/,
        );
        await writeFile(o.path, "junk where the header was, long enough to be read as one", { flag: "r+" });
        expect((await readImage(o.path, o)).props!.drift).toMatch(
            /is not a qcow2 header we can read: magic 0x6a756e6b/,
        );
    });

    test("loops, a missing backing, a smaller size and an unknown backing format are field errors", async () => {
        const self = path.join(work, "self.qcow2");
        await expectFieldError(
            make({ source: { kind: "overlay", backing: self }, path: self }),
            "source.backing",
            /own path/,
        );
        // a ← b, then ask for a new a over b: b's chain already names a.
        const a = path.join(work, "a.qcow2");
        await execa("qemu-img", ["create", "-q", "-f", "qcow2", a, "1M"]);
        const b = await make({ source: { kind: "overlay", backing: a }, path: path.join(work, "b.qcow2") });
        await expectFieldError(
            make({ source: { kind: "overlay", backing: b.path }, path: a }),
            "source.backing",
            /chain would loop/,
        );
        // A chain that already loops on disk: found by reading the headers, before qemu-img opens anything.
        await execa("qemu-img", ["rebase", "-u", "-b", b.path, "-F", "qcow2", a]);
        await expectFieldError(
            make({ source: { kind: "overlay", backing: b.path } }),
            "source.backing",
            /the backing chain loops at .*b\.qcow2/,
        );
        await expectFieldError(
            make({ source: { kind: "overlay", backing: path.join(work, "gone.raw") } }),
            "source.backing",
            /does not exist/,
        );
        const big = await base("8M");
        await expectFieldError(
            make({ source: { kind: "overlay", backing: big.path, size: "4M" } }),
            "source.size",
            /smaller than the backing image \(8 MiB\)/,
        );
        const vdi = path.join(work, "x.vdi");
        await execa("qemu-img", ["create", "-q", "-f", "vdi", vdi, "1M"]);
        await expectFieldError(
            make({ source: { kind: "overlay", backing: vdi } }),
            "source.backingFormat",
            /vdi image; only "raw" and "qcow2"/,
        );
        expect(
            (await listing(path.join(stateDir, "images"))).filter((n) => !n.startsWith(path.basename(big.path))),
        ).toEqual([]);
    });
});

describe("drift, safety and delete", () => {
    test("an existing foreign file at path is refused by name and left byte for byte", async () => {
        const p = path.join(work, "mine.img");
        await writeFile(p, "precious");
        await expectFieldError(
            make({ source: { kind: "blank", size: "1M", format: "raw" }, path: p }),
            "path",
            /mine\.img already exists and it was not created by pulumi-qemu/,
        );
        expect(await readFile(p, "utf8")).toBe("precious");
        expect(await listing(work)).toEqual(["mine.img", "state"]);
    });

    test("a file or directory image edited behind our back is drift, the found fingerprint kept beside the created one", async () => {
        const d = path.join(work, "d");
        await mkdir(d);
        await writeFile(path.join(d, "f"), "x");
        const img = await make({ source: { kind: "directory", path: d, size: "4M" } });
        const r0 = await readImage(img.path, img);
        expect(r0.props).toEqual(img);
        await execa("dd", ["if=/dev/urandom", `of=${img.path}`, "bs=4096", "count=1", "seek=100", "conv=notrunc"]);
        const r = await readImage(img.path, img);
        expect(r.props!.drift).toMatch(/content changed/);
        expect(r.props!.contentFingerprint).toBe(img.contentFingerprint);
        expect(r.props!.foundFingerprint).not.toBe(img.contentFingerprint);
        expect(await diffOf(img, { source: { kind: "directory", path: d, size: "4M" } })).toMatchObject({
            changes: true,
            replaces: ["source"],
        });
    });

    test("a guest writing into a blank image is not drift: that is what it is for", async () => {
        const img = await make({ source: { kind: "blank", size: "1M", format: "raw" } });
        await execa("dd", ["if=/dev/urandom", `of=${img.path}`, "bs=4096", "count=1", "conv=notrunc"]);
        expect((await readImage(img.path, img)).props).toEqual(img);
        expect(await diffOf(img, { source: { kind: "blank", size: "1M", format: "raw" } })).toEqual({ changes: false });
    });

    test("a file gone makes read return no id and diff replace", async () => {
        const img = await make({ source: { kind: "blank", size: "1M", format: "raw" } });
        await rm(img.path);
        expect(await readImage(img.path, img)).toEqual({ id: "", props: {} });
        expect(await diffOf(img, { source: { kind: "blank", size: "1M", format: "raw" } })).toMatchObject({
            changes: true,
            replaces: ["source"],
        });
    });

    test("delete removes what create made, is fine with a missing file, and keeps a file that replaced ours", async () => {
        const img = await make({ source: { kind: "blank", size: "1M", format: "raw" } });
        expect(await exists(`${img.path}.pulumi-qemu.json`)).toBe(true);
        expect(await removeImage(img)).toBe("removed");
        expect(await listing(path.join(stateDir, "images"))).toEqual([]);
        expect(await removeImage(img)).toBe("missing");

        const other = await make({ source: { kind: "blank", size: "1M", format: "raw" } });
        await rm(other.path);
        await writeFile(other.path, "the user's own file now");
        expect(await removeImage(other)).toBe("not-ours");
        expect(await readFile(other.path, "utf8")).toBe("the user's own file now");
        expect((await readImage(other.path, other)).props!.drift).toMatch(/replaced by another file/);
    });

    test("a failing qemu-img leaves nothing and reports its own message", async () => {
        // ext4 holds no file over 16 TiB: qemu-img refuses, and the partial file must not stay.
        await expect(make({ source: { kind: "blank", size: "17T", format: "raw" } })).rejects.toThrow(
            /qemu-img create .* failed: qemu-img: .*too large for file format 'raw'/,
        );
        expect(await listing(path.join(stateDir, "images"))).toEqual([]);
    });
});

describe("check and unknown values", () => {
    test("check reports each bad field", async () => {
        const r = await check({}, { source: { kind: "blank", size: "-1G", format: "vmdk" } });
        expect(r.failures).toEqual(
            expect.arrayContaining([
                expect.objectContaining({ property: "source.size", reason: expect.stringContaining('"-1G"') }),
                expect.objectContaining({
                    property: "source.format",
                    reason: expect.stringContaining('"raw" or "qcow2"'),
                }),
            ]),
        );
        expect((await check({}, { source: { kind: "blank", size: "1G", format: "raw" } })).failures).toBeUndefined();
    });

    test("unknown values pass check and make diff replace without touching the disk", async () => {
        const news = { source: { kind: "overlay", backing: UNKNOWN, backingInputHash: UNKNOWN } };
        expect(await check({}, news)).toEqual({ inputs: news });
        const olds = {
            path: "/nonexistent/x.qcow2",
            inputHash: "00",
            stateDir: "/nonexistent",
        } as unknown as DiskImageOutputs;
        expect(await diffImage("x", olds, { ...news, stateDir: "/nonexistent/state" })).toEqual({
            changes: true,
            replaces: ["source"],
        });
        expect(
            await diffImage("x", olds, { source: { kind: "blank", size: 512, format: "raw" }, path: UNKNOWN }),
        ).toEqual({ changes: true, replaces: ["path"] });
        expect(await exists("/nonexistent")).toBe(false);
    });
});
