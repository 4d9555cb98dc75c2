import execa from "execa";
import { createHash } from "node:crypto";
import { chmod, chown, link, mkdir, mkdtemp, readFile, rm, symlink, writeFile } from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import { InputError } from "../../provider/core/validation";
import { createDiskImage, diffImage } from "../../provider/resources/diskImage";

/**
 * Directory images with `owners: "preserve"`: what a real root filesystem needs — owners,
 * setuid/setgid bits, symlinks, hard links, device nodes and named pipes — kept by mkfs.ext4 -d
 * and checked in the image with debugfs. Needs root (mknod, chown), as building a system does.
 */

let work: string;

beforeAll(() => {
    if (process.getuid?.() !== 0)
        throw new Error("these tests make device nodes and chown files: run them as root (CI does)");
});

beforeEach(async () => {
    work = await mkdtemp(path.join(os.tmpdir(), "pq-owners-"));
});

afterEach(async () => {
    await rm(work, { recursive: true, force: true });
});

async function systemTree(root: string, owner = 1000): Promise<void> {
    await mkdir(path.join(root, "home", "u"), { recursive: true });
    await mkdir(path.join(root, "dev"));
    await mkdir(path.join(root, "usr", "bin"), { recursive: true });
    await writeFile(path.join(root, "home", "u", "notes"), "mine\n");
    await chown(path.join(root, "home", "u"), owner, owner);
    await chown(path.join(root, "home", "u", "notes"), owner, 42);
    await writeFile(path.join(root, "usr", "bin", "su"), "#!/bin/sh\n");
    await chmod(path.join(root, "usr", "bin", "su"), 0o4755);
    await writeFile(path.join(root, "usr", "bin", "wall"), "#!/bin/sh\n");
    await chown(path.join(root, "usr", "bin", "wall"), 0, 5);
    await chmod(path.join(root, "usr", "bin", "wall"), 0o2755);
    await link(path.join(root, "usr", "bin", "su"), path.join(root, "usr", "bin", "su-again"));
    await symlink("usr/bin", path.join(root, "bin"));
    await execa("mknod", ["-m", "666", path.join(root, "dev", "null"), "c", "1", "3"]);
    await execa("mknod", ["-m", "660", path.join(root, "dev", "vdz"), "b", "254", "300"]);
    await execa("mkfifo", ["-m", "600", path.join(root, "dev", "initctl")]);
    await chmod(path.join(root, "dev"), 0o755);
}

async function debugfsStat(image: string, file: string): Promise<string> {
    return (await execa("debugfs", ["-R", `stat "${file}"`, image])).stdout;
}

describe('directory images with owners: "preserve"', () => {
    test("owners, setuid/setgid, hard links, symlinks, device nodes and pipes are in the image", async () => {
        const root = path.join(work, "root");
        await systemTree(root);
        const img = await createDiskImage({
            stateDir: path.join(work, "state"),
            source: { kind: "directory", path: root, size: "8M", owners: "preserve" },
        });

        expect(await debugfsStat(img.path, "/home/u")).toMatch(/User:\s+1000\s+Group:\s+1000/);
        expect(await debugfsStat(img.path, "/home/u/notes")).toMatch(/User:\s+1000\s+Group:\s+42/);
        const su = await debugfsStat(img.path, "/usr/bin/su");
        expect(su).toMatch(/Mode:\s+04755/);
        expect(su).toMatch(/Links: 2/);
        const wall = await debugfsStat(img.path, "/usr/bin/wall");
        expect(wall).toMatch(/User:\s+0\s+Group:\s+5\b/);
        expect(wall).toMatch(/Mode:\s+02755/);
        expect(await debugfsStat(img.path, "/usr/bin/su-again")).toMatch(
            new RegExp(`Inode: ${/Inode: (\d+)/.exec(su)![1]}\\b`),
        );
        expect(await debugfsStat(img.path, "/bin")).toMatch(/Type: symlink/);
        const nul = await debugfsStat(img.path, "/dev/null");
        expect(nul).toMatch(/Type: character special/);
        expect(nul).toMatch(/Device major\/minor number: 01:03/);
        expect(nul).toMatch(/Mode:\s+0666/);
        const vdz = await debugfsStat(img.path, "/dev/vdz");
        expect(vdz).toMatch(/Type: block special/);
        // A minor above 255 takes the new dev_t encoding: debugfs prints it in hex (254:300).
        expect(vdz).toMatch(/Device major\/minor number: fe:12c|Device major\/minor number: 254:300/);
        expect(await debugfsStat(img.path, "/dev/initctl")).toMatch(/Type: FIFO/);
        // Timestamps are still fixed, so the bytes depend on the tree only.
        expect(await debugfsStat(img.path, "/home/u/notes")).toMatch(/mtime: 0x00000001:00000000/);
        const fsck = await execa("e2fsck", ["-fn", img.path], { reject: false });
        expect(fsck.exitCode).toBe(0);

        // The same tree elsewhere gives the same bytes; another owner is another image.
        const again = path.join(work, "again");
        await systemTree(again);
        const img2 = await createDiskImage({
            stateDir: path.join(work, "state2"),
            source: { kind: "directory", path: again, size: "8M", owners: "preserve" },
        });
        expect(img2.inputHash).toBe(img.inputHash);
        const digest = async (f: string) =>
            createHash("sha256")
                .update(await readFile(f))
                .digest("hex");
        expect(await digest(img2.path)).toBe(await digest(img.path));
        await chown(path.join(again, "home", "u", "notes"), 1001, 42);
        const news = {
            stateDir: path.join(work, "state2"),
            source: { kind: "directory", path: again, size: "8M", owners: "preserve" },
        };
        expect(await diffImage(img2.path, img2, news)).toMatchObject({ changes: true, replaces: ["source"] });
    });

    test("by default owners are still root's and a device node is still refused, naming the option", async () => {
        const root = path.join(work, "root");
        await systemTree(root);
        const err = await createDiskImage({
            stateDir: path.join(work, "state"),
            source: { kind: "directory", path: root, size: "8M" },
        }).catch((e: unknown) => e);
        expect(err).toBeInstanceOf(InputError);
        expect((err as InputError).problems[0].property).toBe("source.path");
        expect((err as Error).message).toMatch(
            /dev\/(initctl|null|vdz) is a (named pipe|character device|block device).*owners: "preserve"/,
        );

        await rm(path.join(root, "dev"), { recursive: true });
        const img = await createDiskImage({
            stateDir: path.join(work, "state"),
            source: { kind: "directory", path: root, size: "8M" },
        });
        expect(await debugfsStat(img.path, "/home/u/notes")).toMatch(/User:\s+0\s+Group:\s+0/);
        expect(await debugfsStat(img.path, "/usr/bin/su")).toMatch(/Mode:\s+04755/);
    });
});
