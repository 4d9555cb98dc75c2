import { execFileSync } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, readFile, rm, stat, truncate, writeFile } from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import execa from "execa";
import * as runScript from "../../provider/resources/runScript";
import { UNKNOWN } from "../../provider/resources/common";
import { ensureTestGuest, guestKernelArguments, READY_MARKER } from "../guest/testGuest";
import { startWatched, type Watched } from "../support/process";

/**
 * RunScript against real files and a real guest: the launcher it writes boots the test guest
 * when run by hand, its identity follows the argv (not the spelling of the spec), drift is
 * seen, and files it did not write are never touched.
 */

let dir: string;
let stateDir: string;
let guest: { kernel: string; initrd: string };
const watched: Watched[] = [];

beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), "pq-runscript-"));
    stateDir = path.join(dir, "state");
    guest = await ensureTestGuest();
}, 180_000);

afterAll(async () => {
    for (const w of watched) await w.stop();
    await rm(dir, { recursive: true, force: true });
});

function guestVm(extra: Record<string, unknown> = {}) {
    return {
        accel: "tcg",
        kernel: guest.kernel,
        initrd: guest.initrd,
        kernelArguments: guestKernelArguments({ name: "runscript" }),
        ...extra,
    };
}

test("the launcher it writes boots the test guest when run by hand", async () => {
    const inputs = { vm: guestVm({ network: "none" }), stateDir };
    expect(await runScript.check({}, inputs)).toEqual({ inputs });
    const { id, outs } = await runScript.create(inputs);
    expect(id).toBe(outs.path);
    expect(path.dirname(outs.path)).toBe(path.join(stateDir, "launchers"));
    expect(path.basename(outs.path)).toMatch(new RegExp(`^run-vm-${outs.argvHash.slice(0, 16)}-[0-9a-f]{8}\\.sh$`));
    expect(outs.argv.slice(0, 3)).toEqual(["qemu-system-x86_64", "-accel", "tcg"]);
    expect(outs.accel).toBe("tcg");
    expect(JSON.stringify(outs)).not.toContain("undefined");
    expect((await stat(outs.path)).mode & 0o777).toBe(0o500);
    expect((await stat(stateDir)).mode & 0o777).toBe(0o700);
    // No temp file is left beside it.
    expect((await execa("ls", ["-A", path.dirname(outs.path)])).stdout.split("\n")).toEqual([path.basename(outs.path)]);

    const t0 = Date.now();
    const vm = startWatched(outs.path, []);
    watched.push(vm);
    await vm.waitFor(READY_MARKER, 120_000);
    console.log(`launcher run by hand: ${READY_MARKER} after ${((Date.now() - t0) / 1000).toFixed(2)} s`);
    await vm.stop();

    expect(await runScript.read(id, outs)).toEqual({ id, props: outs });
    await runScript.remove(id, outs);
    expect(existsSync(outs.path)).toBe(false);
}, 180_000);

test("diff: a default spelled out is no change; an argv change or a new path replaces", async () => {
    const inputs = { vm: guestVm(), stateDir };
    const { id, outs } = await runScript.create(inputs);
    try {
        const spelled = {
            vm: guestVm({ memoryMiB: 256, cpus: 1, network: "user", disks: [], volatile: false }),
            stateDir,
        };
        expect(await runScript.diff(id, outs, spelled)).toEqual({ changes: false });
        // A bigger VM gets a new default file of its own, so the new file can be written before the old goes.
        expect(await runScript.diff(id, outs, { vm: guestVm({ memoryMiB: 512 }), stateDir })).toEqual({
            changes: true,
            replaces: ["vm"],
            deleteBeforeReplace: false,
        });
        // Another argv written where the old file is: the old file must go first or the new one would be deleted with it.
        expect(await runScript.diff(id, outs, { vm: guestVm({ memoryMiB: 512 }), path: outs.path })).toEqual({
            changes: true,
            replaces: ["vm", "path"],
            deleteBeforeReplace: true,
        });
        expect(await runScript.diff(id, outs, { vm: guestVm(), path: path.join(dir, "elsewhere.sh") })).toMatchObject({
            changes: true,
            replaces: ["path"],
        });
        // A preview with unknowns decides without failing.
        const unknown = { vm: guestVm({ kernel: UNKNOWN }), stateDir };
        expect(await runScript.check({}, unknown)).toEqual({ inputs: unknown });
        expect(await runScript.diff(id, outs, unknown)).toMatchObject({ changes: true });
    } finally {
        await runScript.remove(id, outs);
    }
});

test("two launchers with identical inputs get their own files: deleting one keeps the other", async () => {
    const inputs = { vm: guestVm(), stateDir };
    const a = await runScript.create(inputs);
    const b = await runScript.create(inputs);
    try {
        expect(a.outs.argvHash).toBe(b.outs.argvHash);
        expect(a.outs.path).not.toBe(b.outs.path);
        await runScript.remove(a.id, a.outs);
        expect(existsSync(a.outs.path)).toBe(false);
        expect(existsSync(b.outs.path)).toBe(true);
        // Neither sees a diff against its own inputs: the default path is not compared.
        expect(await runScript.diff(b.id, b.outs, inputs)).toEqual({ changes: false });
    } finally {
        await runScript.remove(b.id, b.outs);
    }
});

test("check names the bad field and value", async () => {
    const r = await runScript.check({}, { vm: { kernel: "relative/vmlinuz", memoryMiB: 8 }, path: "x.sh" });
    expect(r.failures).toEqual(
        expect.arrayContaining([
            { property: "vm.kernel", reason: expect.stringMatching(/absolute path.*relative\/vmlinuz/) },
            { property: "vm.memoryMiB", reason: expect.stringMatching(/at least 16.*8/) },
        ]),
    );
    const p = await runScript.check({}, { vm: {}, path: "x.sh" });
    expect(p.failures).toEqual([{ property: "path", reason: expect.stringMatching(/absolute path.*"x\.sh"/) }]);
});

test("read sees an edited launcher as drift and a deleted one as gone; update rewrites it", async () => {
    const inputs = { vm: guestVm(), path: path.join(dir, "drift", "run.sh") };
    const { id, outs } = await runScript.create(inputs);
    const original = await readFile(outs.path, "utf8");
    await rm(outs.path);
    await writeFile(outs.path, original.replace("exec ", "echo edited by hand\nexec "), { mode: 0o755 });

    const drifted = await runScript.read(id, outs);
    expect(drifted.id).toBe(id);
    expect(drifted.props.drift).toMatch(/was edited/);
    expect(await runScript.diff(id, drifted.props, inputs)).toEqual({ changes: true });
    const { outs: fixed } = await runScript.update(id, drifted.props, inputs);
    expect(fixed.drift).toBeUndefined();
    expect(await readFile(outs.path, "utf8")).toBe(original);
    expect(await runScript.read(id, fixed)).toEqual({ id, props: fixed });

    await rm(outs.path);
    expect(await runScript.read(id, fixed)).toEqual({ id: "", props: {} });
});

test("a file it did not write is neither overwritten nor deleted", async () => {
    const mine = path.join(dir, "users-own.sh");
    await writeFile(mine, "#!/bin/sh\necho the user's script\n");
    const inputs = { vm: guestVm(), path: mine };
    await expect(runScript.create(inputs)).rejects.toThrow(
        /refusing to overwrite .*users-own\.sh: it was not written by pulumi-qemu/,
    );
    expect(await readFile(mine, "utf8")).toBe("#!/bin/sh\necho the user's script\n");

    // Replaced by the user after create: read reports it, update refuses, delete leaves it.
    const at = path.join(dir, "taken-over.sh");
    const { id, outs } = await runScript.create({ vm: guestVm(), path: at });
    await rm(at);
    await writeFile(at, "#!/bin/sh\necho mine now\n");
    const r = await runScript.read(id, outs);
    expect(r.props.drift).toMatch(/no longer carries the pulumi-qemu header/);
    await expect(runScript.update(id, r.props, { vm: guestVm(), path: at })).rejects.toThrow(/refusing to overwrite/);
    await runScript.remove(id, r.props);
    expect(await readFile(at, "utf8")).toBe("#!/bin/sh\necho mine now\n");
});

test("a persistent VM's launcher makes its overlay once and keeps it afterwards", async () => {
    const base = path.join(dir, "base.raw");
    await writeFile(base, "");
    await truncate(base, 1024 * 1024);
    const overlay = path.join(dir, "vm-overlay.qcow2");
    const { id, outs } = await runScript.create({
        vm: guestVm({ disks: [{ path: base, format: "raw", overlay }] }),
        stateDir,
    });
    try {
        // QEMU's own `-version` exits at once, after the launcher's overlay step ran.
        await execa(outs.path, ["-version"]);
        const info = JSON.parse(execFileSync("qemu-img", ["info", "--output=json", overlay], { encoding: "utf8" }));
        expect(info).toMatchObject({ format: "qcow2", "backing-filename": base, "backing-filename-format": "raw" });
        const first = await stat(overlay);
        await execa(outs.path, ["-version"]);
        const second = await stat(overlay);
        expect([second.ino, second.mtimeMs]).toEqual([first.ino, first.mtimeMs]);
        // A volatile VM writes to a throw-away layer instead, so its launcher makes no overlay.
        const vol = await runScript.create({
            vm: guestVm({ volatile: true, disks: [{ path: base, format: "raw" }] }),
            stateDir,
        });
        const volText = await readFile(vol.outs.path, "utf8");
        expect(volText).not.toContain("qemu-img");
        expect(volText).toContain("snapshot=on");
        await runScript.remove(vol.id, vol.outs);
    } finally {
        await runScript.remove(id, outs);
    }
});
