import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, readdirSync } from "node:fs";
import { mkdir, mkdtemp, readdir, rm, utimes, writeFile } from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import { sidecarPath } from "../../provider/core/diskImageSpec";
import { statStamp } from "../../provider/host/files/fileHash";
import { readBootId } from "../../provider/host/qemu/qemuProcess";
import * as diskImage from "../../provider/resources/diskImage";
import { partialName, writeIntent } from "../../provider/resources/diskImage/record";
import * as vmResource from "../../provider/resources/virtualMachine";
import type { VirtualMachineOutputs } from "../../provider/resources/virtualMachine";
import { DEAD_VM_RETENTION_MS, sweepVmDirs } from "../../provider/resources/virtualMachine/record";
import { assertBuilt, MAIN_ROOT } from "../engine/driver";
import { ensureTestGuest, guestKernelArguments } from "../guest/testGuest";
import { freePort } from "../support/net";
import { processesMentioning } from "../support/process";

/**
 * The provider killed with SIGKILL in the middle of a create — the way a crashed `pulumi up`
 * leaves things — and the next run finding and cleaning what it left. The killed provider is a
 * real separate Node process running the compiled lifecycle.
 */

let dir: string;
let guest: { kernel: string; initrd: string };
const children: ChildProcess[] = [];
const made: VirtualMachineOutputs[] = [];

beforeAll(async () => {
    assertBuilt();
    dir = await mkdtemp(path.join(os.tmpdir(), "pq-crash-"));
    guest = await ensureTestGuest();
}, 180_000);

afterAll(async () => {
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
    for (const outs of made) await vmResource.remove("", outs).catch(() => undefined);
    await rm(dir, { recursive: true, force: true });
}, 120_000);

/** Runs one lifecycle call of the compiled package in a child process that we can kill -9. */
function providerProcess(module: string, fn: string, inputs: unknown): ChildProcess {
    const script = `require(${JSON.stringify(path.join(MAIN_ROOT, "bin", "provider", "resources", module))}).${fn}(JSON.parse(process.argv[1])).then(() => console.log("finished"), (e) => { console.error(e); process.exit(1); });`;
    const child = spawn(process.execPath, ["-e", script, JSON.stringify(inputs)], {
        stdio: ["ignore", "pipe", "pipe"],
    });
    children.push(child);
    return child;
}

async function until<T>(
    what: string,
    timeoutMs: number,
    probe: () => T | undefined | Promise<T | undefined>,
): Promise<T> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
        const v = await probe();
        if (v !== undefined) return v;
        if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
        await new Promise((r) => setTimeout(r, 50));
    }
}

function killed(child: ChildProcess): Promise<void> {
    return new Promise((resolve) => {
        if (child.exitCode !== null || child.signalCode !== null) return resolve();
        child.once("exit", () => resolve());
        child.kill("SIGKILL");
    });
}

test("a provider killed after QEMU detached leaves an orphan that the next create stops, freeing its port", async () => {
    const stateDir = path.join(dir, "vm-state");
    const port = await freePort();
    const vm = {
        name: "orphan",
        accel: "tcg",
        kernel: guest.kernel,
        initrd: guest.initrd,
        kernelArguments: guestKernelArguments({ name: "orphan" }),
        portForwards: [{ host: port, guest: 80 }],
    };
    // A pattern the guest never prints keeps the create waiting long after QEMU has detached.
    const child = providerProcess("virtualMachine.js", "create", {
        vm,
        stateDir,
        ready: { serialPattern: "never printed", timeoutSeconds: 600 },
    });
    const vms = path.join(stateDir, "vms");
    const pidfile = await until("the orphan's pidfile", 60_000, () => {
        for (const d of existsSync(vms) ? readdirSync(vms) : [])
            if (existsSync(path.join(vms, d, "qemu.pid"))) return path.join(vms, d, "qemu.pid");
        return undefined;
    });
    await until("QEMU to run", 10_000, () => (processesMentioning(pidfile).length > 0 ? true : undefined));
    await killed(child);
    // The orphan: QEMU runs on, holding the port, with no Pulumi state that knows it.
    expect(processesMentioning(pidfile).length).toBeGreaterThan(0);

    const { outs } = await vmResource.create({
        vm,
        stateDir,
        ready: { serialPattern: "PQ-GUEST-READY", timeoutSeconds: 120 },
    });
    made.push(outs);
    expect(processesMentioning(pidfile)).toEqual([]);
    expect(existsSync(path.dirname(pidfile))).toBe(false);
    expect(await readdir(vms)).toEqual([path.basename(outs.vmDir)]);
    await vmResource.remove("", outs);
    expect(await readdir(vms)).toEqual([]);
}, 240_000);

test("a VM found dead by refresh keeps only its serial log, for a day, then the sweep removes it", async () => {
    const stateDir = path.join(dir, "dead-state");
    const vm = {
        name: "dies",
        accel: "tcg",
        kernel: guest.kernel,
        initrd: guest.initrd,
        kernelArguments: guestKernelArguments({ name: "dies" }),
    };
    const { id, outs } = await vmResource.create({
        vm,
        stateDir,
        ready: { serialPattern: "PQ-GUEST-READY", timeoutSeconds: 120 },
    });
    made.push(outs);
    process.kill(outs.pid, "SIGKILL");
    await until("QEMU to be gone", 10_000, () => (processesMentioning(outs.pidfile).length === 0 ? true : undefined));
    expect(await vmResource.read(id, outs)).toEqual({ id: "", props: {} });
    expect((await readdir(outs.vmDir)).sort()).toEqual(["record.json", "serial.log"]);
    // Within the day the log stays; after it, any sweep of `vms` takes the directory away.
    const vms = path.dirname(outs.vmDir);
    expect(await sweepVmDirs(vms)).toEqual([]);
    expect(await sweepVmDirs(vms, Date.now() + DEAD_VM_RETENTION_MS + 1000)).toEqual([id]);
    expect(await readdir(vms)).toEqual([]);
}, 180_000);

test("a provider killed while building a directory image leaves a partial that the next create at that path cleans", async () => {
    const src = path.join(dir, "tree");
    await mkdir(src);
    // Enough files that mkfs.ext4 and the re-hash take a while.
    for (let i = 0; i < 800; i++) await writeFile(path.join(src, `f${i}`), Buffer.alloc(256 * 1024, i));
    const target = path.join(dir, "images", "tree.raw");
    const inputs = {
        stateDir: path.join(dir, "img-state"),
        path: target,
        source: { kind: "directory", path: src, size: "256M" },
    };
    const child = providerProcess("diskImage.js", "createDiskImage", inputs);
    const partial = await until("the partial image", 60_000, () => {
        const names = existsSync(path.dirname(target)) ? readdirSync(path.dirname(target)) : [];
        return names.find((n) => n.endsWith(".partial"));
    });
    // Killed while mkfs.ext4 writes the partial: the tool must not outlive the provider.
    const partialPath = path.join(path.dirname(target), partial);
    await until("mkfs.ext4 at work", 60_000, () => (processesMentioning(partialPath).length > 0 ? true : undefined));
    await killed(child);
    await until("mkfs.ext4 to die with the provider", 5_000, () =>
        processesMentioning(partialPath).length === 0 ? true : undefined,
    );
    expect(readdirSync(path.dirname(target))).toContain(partial);
    expect(existsSync(sidecarPath(target))).toBe(true);

    const img = await diskImage.createDiskImage(inputs);
    expect(img.path).toBe(target);
    expect(readdirSync(path.dirname(target)).sort()).toEqual(["tree.raw", "tree.raw.pulumi-qemu.json"]);
    expect(await diskImage.removeImage(img)).toBe("removed");
}, 180_000);

test("killed between linking an image and recording it: the next create knows the image for its own leftover", async () => {
    const target = path.join(dir, "linked", "disk.qcow2");
    await mkdir(path.dirname(target), { recursive: true });
    await writeFile(target, "an image linked by a create that was then killed");
    // The record such a create leaves: `linking`, naming the file's identity, by a creator long gone.
    const gone = { pid: 4194303, startTime: "1", bootId: await readBootId() };
    await writeIntent(target, {
        state: "linking",
        inputHash: "ab".repeat(32),
        partial: partialName(target, "0123456789ab"),
        stamp: await statStamp(target),
    });
    const record = JSON.parse(require("node:fs").readFileSync(sidecarPath(target), "utf8"));
    await writeFile(sidecarPath(target), JSON.stringify({ ...record, creator: gone }));

    const img = await diskImage.createDiskImage({
        stateDir: path.join(dir, "linked-state"),
        path: target,
        source: { kind: "blank", size: "1M", format: "qcow2" },
    });
    expect(img.format).toBe("qcow2");
    // A file at the path that the record does not name is someone else's, and is refused.
    await diskImage.removeImage(img);
    await writeFile(target, "the user's own file");
    await utimes(target, new Date(), new Date());
    await writeIntent(target, {
        state: "linking",
        inputHash: "ab".repeat(32),
        partial: partialName(target, "0123456789ab"),
        stamp: { dev: "0", ino: "0", size: "0", mtimeNs: "0", ctimeNs: "0", birthNs: "0" },
    });
    const again = JSON.parse(require("node:fs").readFileSync(sidecarPath(target), "utf8"));
    await writeFile(sidecarPath(target), JSON.stringify({ ...again, creator: gone }));
    await expect(
        diskImage.createDiskImage({
            stateDir: path.join(dir, "linked-state"),
            path: target,
            source: { kind: "blank", size: "1M", format: "qcow2" },
        }),
    ).rejects.toThrow(/already exists and it was not created by pulumi-qemu/);
});
