import { chmod, lstat, mkdir, mkdtemp, readdir, readFile, rm, stat, symlink, writeFile } from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import * as diskImage from "../../provider/resources/diskImage";
import * as runScript from "../../provider/resources/runScript";
import * as virtualMachine from "../../provider/resources/virtualMachine";
import type { VirtualMachineOutputs } from "../../provider/resources/virtualMachine";

/**
 * The provider only ever changes what it made: it never re-permissions a directory it did not
 * create, never follows a link planted inside its state directory, writes nothing during a
 * preview, and keeps everything it writes owner-only unless asked otherwise.
 */

let work: string;

beforeEach(async () => {
    work = await mkdtemp(path.join(os.tmpdir(), "pq-safety-"));
});

afterEach(async () => {
    await rm(work, { recursive: true, force: true });
});

const modeOf = async (p: string) => (await stat(p)).mode & 0o7777;

async function tree(dir: string): Promise<string[]> {
    const out: string[] = [];
    for (const e of await readdir(dir, { withFileTypes: true }).catch(() => [])) {
        out.push(e.name);
        if (e.isDirectory()) out.push(...(await tree(path.join(dir, e.name))).map((n) => `${e.name}/${n}`));
    }
    return out.sort();
}

describe("a state directory the provider did not create", () => {
    test("a shared sticky 1777 directory keeps its mode; what the provider needs is made owner-only inside", async () => {
        const shared = path.join(work, "shared");
        await mkdir(shared);
        await chmod(shared, 0o1777);
        const img = await diskImage.createDiskImage({
            stateDir: shared,
            source: { kind: "blank", size: "1M", format: "raw" },
        });
        await runScript.create({ vm: { kernel: "/boot/vmlinuz" }, stateDir: shared });
        expect(await modeOf(shared)).toBe(0o1777);
        expect(await modeOf(path.join(shared, "images"))).toBe(0o700);
        expect(await modeOf(path.join(shared, "launchers"))).toBe(0o700);
        expect(await modeOf(img.path)).toBe(0o600);
    });

    test("a directory anyone may rename things in is refused, and its mode is left alone", async () => {
        const open = path.join(work, "open");
        await mkdir(open);
        await chmod(open, 0o777);
        await expect(
            diskImage.createDiskImage({ stateDir: open, source: { kind: "blank", size: "1M", format: "raw" } }),
        ).rejects.toThrow(/stateDir .*open \(mode 0777\) can be written by other users without the sticky bit/);
        expect(await modeOf(open)).toBe(0o777);
        expect(await tree(open)).toEqual([]);
    });

    test("a preview (check and diff) writes nothing: no state directory made, no cache saved", async () => {
        const src = path.join(work, "src.raw");
        await writeFile(src, Buffer.alloc(64 * 1024, 1));
        const stateDir = path.join(work, "state");
        const img = await diskImage.createDiskImage({ stateDir, source: { kind: "file", path: src } });
        const before = await tree(stateDir);
        const cache = path.join(stateDir, "hash-cache.v2.json");
        const cacheBefore = await readFile(cache, "utf8");
        // The source changed: the diff must hash it anew, and still save nothing.
        await writeFile(src, Buffer.alloc(64 * 1024, 2));
        const news = { stateDir, source: { kind: "file", path: src } };
        expect((await diskImage.check({}, news)).failures).toBeUndefined();
        expect(await diskImage.diff(img.path, img, news)).toMatchObject({ changes: true, replaces: ["source"] });
        expect(await tree(stateDir)).toEqual(before);
        expect(await readFile(cache, "utf8")).toBe(cacheBefore);

        const fresh = path.join(work, "never-made");
        await diskImage.diff(img.path, img, { stateDir: fresh, source: { kind: "file", path: src } });
        await expect(lstat(fresh)).rejects.toMatchObject({ code: "ENOENT" });
    });
});

describe("links planted inside the state directory are refused, never followed", () => {
    test("`images` swapped for a link: create refuses, delete leaves the link's target alone", async () => {
        const stateDir = path.join(work, "state");
        const img = await diskImage.createDiskImage({ stateDir, source: { kind: "blank", size: "1M", format: "raw" } });
        const elsewhere = path.join(work, "elsewhere");
        await mkdir(elsewhere, { mode: 0o700 });
        // The attacker's copy: same names, so a followed delete would take them.
        const name = path.basename(img.path);
        await writeFile(path.join(elsewhere, name), "victim");
        await writeFile(path.join(elsewhere, `${name}.pulumi-qemu.json`), "victim record");
        await rm(path.join(stateDir, "images"), { recursive: true });
        await symlink(elsewhere, path.join(stateDir, "images"));

        await expect(
            diskImage.createDiskImage({ stateDir, source: { kind: "blank", size: "1M", format: "raw" } }),
        ).rejects.toThrow(/images is a symbolic link/);
        expect(await diskImage.removeImage(img)).toBe("not-ours");
        expect(await tree(elsewhere)).toEqual([name, `${name}.pulumi-qemu.json`]);
        expect(await readFile(path.join(elsewhere, name), "utf8")).toBe("victim");
    });

    test("a VM directory swapped for a link: delete removes nothing through it", async () => {
        const stateDir = path.join(work, "state");
        const vms = path.join(stateDir, "vms");
        await mkdir(vms, { recursive: true, mode: 0o700 });
        const elsewhere = path.join(work, "elsewhere");
        await mkdir(elsewhere, { mode: 0o700 });
        for (const f of ["qemu.pid", "qmp.sock", "serial.log", "run-vm.sh"])
            await writeFile(path.join(elsewhere, f), "victim");
        const vmDir = path.join(vms, "vm-planted");
        await symlink(elsewhere, vmDir);
        // The record of a VM whose QEMU is long gone (pid 2^22 - 1 is never a live QEMU of ours).
        const props = {
            vmDir,
            stateDir,
            pid: 4194303,
            processStartTime: "1",
            bootId: "not-this-boot",
            argvHash: "00",
            pidfile: path.join(vmDir, "qemu.pid"),
            qmpSocket: path.join(vmDir, "qmp.sock"),
            serialLog: path.join(vmDir, "serial.log"),
            launcherPath: path.join(vmDir, "run-vm.sh"),
        } as unknown as VirtualMachineOutputs;
        await virtualMachine.remove("vm-planted", props);
        expect(await tree(elsewhere)).toEqual(["qemu.pid", "qmp.sock", "run-vm.sh", "serial.log"]);
    });
});

describe("what the provider writes is owner-only unless asked", () => {
    test("an image built from a private directory is 0600 at a user's path, in a parent made 0700", async () => {
        const secret = path.join(work, "secret");
        await mkdir(secret, { mode: 0o700 });
        await writeFile(path.join(secret, "id_ed25519"), "PRIVATE KEY", { mode: 0o600 });
        const target = path.join(work, "out", "deep", "disk.raw");
        const img = await diskImage.createDiskImage({
            stateDir: path.join(work, "state"),
            path: target,
            source: { kind: "directory", path: secret, size: "4M" },
        });
        expect(await modeOf(img.path)).toBe(0o600);
        expect(img.mode).toBe("0600");
        expect(await modeOf(path.join(work, "out"))).toBe(0o700);
        expect(await modeOf(path.join(work, "out", "deep"))).toBe(0o700);
        expect(await modeOf(`${img.path}.pulumi-qemu.json`)).toBe(0o600);
    });

    test("mode widens an image when asked; a new mode replaces it; bad modes are refused by name", async () => {
        const stateDir = path.join(work, "state");
        const inputs = { stateDir, mode: "0640", source: { kind: "blank", size: "1M", format: "qcow2" } };
        const img = await diskImage.createDiskImage(inputs);
        expect(await modeOf(img.path)).toBe(0o640);
        expect(await diskImage.diff(img.path, img, inputs)).toEqual({ changes: false });
        expect(await diskImage.diff(img.path, img, { ...inputs, mode: "0600" })).toMatchObject({
            changes: true,
            replaces: ["mode"],
        });
        expect(await diskImage.diff(img.path, img, { ...inputs, mode: undefined })).toMatchObject({
            changes: true,
            replaces: ["mode"],
        });

        const bad = async (mode: unknown) => (await diskImage.check({}, { ...inputs, mode })).failures;
        expect(await bad("0755")).toEqual([
            expect.objectContaining({ property: "mode", reason: expect.stringContaining("no execute") }),
        ]);
        expect(await bad("0200")).toEqual([
            expect.objectContaining({ property: "mode", reason: expect.stringContaining("required 0400") }),
        ]);
        expect(await bad(420)).toEqual([
            expect.objectContaining({ property: "mode", reason: expect.stringContaining("octal digits") }),
        ]);
        expect(await bad("rw-r--r--")).toEqual([
            expect.objectContaining({ property: "mode", reason: expect.stringContaining("three octal digits") }),
        ]);
    });

    test("launchers are 0500 unless asked, a new mode is rewritten in place, and no one else may write one", async () => {
        const file = path.join(work, "bin", "run.sh");
        const inputs = { vm: { kernel: "/boot/vmlinuz" }, path: file };
        const { id, outs } = await runScript.create(inputs);
        expect(await modeOf(file)).toBe(0o500);
        expect(await modeOf(path.dirname(file))).toBe(0o700);
        expect(await runScript.diff(id, outs, inputs)).toEqual({ changes: false });
        const wider = { ...inputs, mode: "0755" };
        expect(await runScript.diff(id, outs, wider)).toEqual({ changes: true });
        const { outs: after } = await runScript.update(id, outs, wider);
        expect(await modeOf(file)).toBe(0o755);
        expect(after.mode).toBe("0755");
        expect((await runScript.check({}, { ...inputs, mode: "0775" })).failures).toEqual([
            expect.objectContaining({ property: "mode", reason: expect.stringContaining("no one else may write it") }),
        ]);
    });
});
