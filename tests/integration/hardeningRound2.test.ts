/**
 * Issue 25, the part that needs a host: secrets kept off QEMU's command line, orphans of killed
 * creates cleaned by any create in their state directory (and named when they hold a disk), a
 * killed switch's sockets removed on delete, a truncated qcow2 seen as drift, a switch pidfile
 * others cannot read, and a snapshot of another argv refused at restore. Real QEMU, vde_switch
 * and qemu-img throughout; every process a test starts it stops.
 */
import { spawn } from "node:child_process";
import { existsSync, readdirSync, readFileSync, statSync, truncateSync } from "node:fs";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import execa from "execa";
import { buildQemuArgv } from "../../provider/core/qemuArgv";
import { parseVmSpec } from "../../provider/core/vmSpec";
import { withQmp } from "../../provider/host/qemu/qmp";
import { identify, readCmdline, startDaemonized, type ProcessIdentity } from "../../provider/host/qemu/qemuProcess";
import { restoreSnapshot, saveSnapshot } from "../../provider/host/qemu/snapshots";
import * as diskImage from "../../provider/resources/diskImage";
import * as network from "../../provider/resources/network";
import * as vmResource from "../../provider/resources/virtualMachine";
import type { VirtualMachineOutputs } from "../../provider/resources/virtualMachine";
import { qemuProvider } from "../../provider/plugin/serve";
import { makeSecret } from "../../provider/plugin/secrets";
import { isRunning, processesMentioning } from "../support/process";

let dir: string;
const vms: VirtualMachineOutputs[] = [];
const started: ProcessIdentity[] = [];

beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), "pq-harden-"));
});

afterAll(async () => {
    for (const outs of vms) await vmResource.remove("", outs).catch(() => undefined);
    for (const id of started) if (isRunning(id.pid)) process.kill(id.pid, "SIGKILL");
    expect(processesMentioning(dir)).toEqual([]);
    await rm(dir, { recursive: true, force: true });
}, 120_000);

/** A VM that boots nothing (SeaBIOS idles): enough for QMP, disks and the command line. */
function idleVm(extra: Record<string, unknown> = {}) {
    return { accel: "tcg", memoryMiB: 64, network: "none", ...extra };
}

async function createVm(inputs: Record<string, unknown>): Promise<VirtualMachineOutputs> {
    const { outs } = await vmResource.create({ ready: { timeoutSeconds: 60 }, ...inputs } as never);
    vms.push(outs as VirtualMachineOutputs);
    return outs as VirtualMachineOutputs;
}

/**
 * An orphan as a create killed after QEMU detached leaves it: a VM directory whose record says
 * "creating" by a creator that is gone, and a daemonized QEMU whose pidfile is in it.
 */
async function makeOrphan(
    stateDir: string,
    vm: Record<string, unknown>,
): Promise<{ vmDir: string; identity: ProcessIdentity }> {
    const vmsDir = path.join(stateDir, "vms");
    await mkdir(vmsDir, { recursive: true, mode: 0o700 });
    const vmDir = await mkdtemp(path.join(vmsDir, "vm-"));
    // The creator: a process that ran and is gone.
    const creatorChild = spawn("sleep", ["30"], { stdio: "ignore" });
    const creator = (await identify(creatorChild.pid!))!;
    await new Promise<void>((resolve) => {
        creatorChild.once("exit", () => resolve());
        creatorChild.kill("SIGKILL");
    });
    const record = { tool: "pulumi-qemu", resource: "VirtualMachine", version: 1, state: "creating", creator };
    await writeFile(path.join(vmDir, "record.json"), JSON.stringify(record), { mode: 0o600 });
    const runtime = {
        pidfile: path.join(vmDir, "qemu.pid"),
        qmpSocket: path.join(vmDir, "qmp.sock"),
        serialLog: path.join(vmDir, "serial.log"),
    };
    const argv = buildQemuArgv(parseVmSpec(vm), { accel: "tcg" }, runtime);
    const identity = await startDaemonized(argv, runtime.pidfile);
    started.push(identity);
    return { vmDir, identity };
}

describe("2. secrets off QEMU's command line", () => {
    test("a VM's name reaches QEMU through an owner-only file, not its command line", async () => {
        const name = "s3cret-name-4711";
        const outs = await createVm({ vm: idleVm({ name }), stateDir: path.join(dir, "name-state") });
        const argv = (await readCmdline(outs.pid))!;
        expect(argv.join(" ")).not.toContain(name);
        // QEMU still knows its name.
        const reply = await withQmp(outs.qmpSocket, 10_000, (qmp) => qmp.execute("query-name", {}));
        expect(reply).toEqual({ name });
        // Every file of the VM's that holds the name is the owner's alone.
        const files = readdirSync(outs.vmDir)
            .map((f) => path.join(outs.vmDir, f))
            .filter((f) => statSync(f).isFile() && readFileSync(f, "utf8").includes(name));
        expect(files.length).toBeGreaterThan(0);
        for (const f of files) expect(statSync(f).mode & 0o077).toBe(0);
        await vmResource.remove("", outs);
    }, 120_000);

    test("on the plugin path, secret kernel arguments are refused at check, saying why and what to use", async () => {
        const provider = qemuProvider("0.0.0-test");
        const urn = "urn:pulumi:s::p::qemu:index:VirtualMachine::v";
        const news = { vm: { kernel: "/boot/vmlinuz", kernelArguments: ["console=ttyS0", makeSecret("pw=hunter2")] } };
        const result = await provider.check!(urn, {}, news as never);
        const failures = (result.failures ?? []).map((f) => `${f.property}: ${f.reason}`);
        expect(failures).toHaveLength(1);
        expect(failures[0]).toMatch(/^vm\.kernelArguments\[1\]: .*command line.*ps.*cloud-init seed/);
        expect(failures[0]).not.toContain("hunter2");
        // The same arguments, not secret, pass.
        const plain = await provider.check!(urn, {}, {
            vm: { kernel: "/boot/vmlinuz", kernelArguments: ["console=ttyS0", "quiet"] },
        } as never);
        expect(plain.failures ?? []).toEqual([]);
    });
});

describe("3. a switch's pidfile is the owner's alone", () => {
    test("networks/<id>/switch.pid is 0600", async () => {
        const { id, outs } = await network.create({ stateDir: path.join(dir, "pid-state") });
        try {
            expect(statSync(outs.pidfile).mode & 0o777).toBe(0o600);
        } finally {
            await network.remove(id, outs);
        }
    });
});

describe("4. orphans of killed creates", () => {
    test.each(["Network", "DiskImage"])(
        "a %s create in the same state directory stops the orphan and removes its directory",
        async (kind) => {
            const stateDir = path.join(dir, `orphan-${kind}`);
            const { vmDir, identity } = await makeOrphan(stateDir, idleVm());
            expect(isRunning(identity.pid)).toBe(true);
            if (kind === "Network") {
                const { id, outs } = await network.create({ stateDir });
                await network.remove(id, outs);
            } else {
                const img = await diskImage.createDiskImage({
                    stateDir,
                    source: { kind: "blank", size: "1M", format: "raw" },
                });
                await diskImage.removeImage(img);
            }
            expect(isRunning(identity.pid)).toBe(false);
            expect(existsSync(vmDir)).toBe(false);
        },
        120_000,
    );

    test("re-creating a VM whose disk an orphan holds works even right after a sweep (the throttle)", async () => {
        const stateDir = path.join(dir, "orphan-lock");
        const disk = path.join(dir, "locked.raw");
        await writeFile(disk, Buffer.alloc(1 << 20));
        // A create now: the once-per-30-s sweep of this `vms` has just run.
        const first = await createVm({ vm: idleVm(), stateDir });
        await vmResource.remove("", first);
        const { vmDir, identity } = await makeOrphan(stateDir, idleVm({ disks: [{ path: disk, format: "raw" }] }));
        const outs = await createVm({ vm: idleVm({ disks: [{ path: disk, format: "raw" }] }), stateDir });
        expect(isRunning(identity.pid)).toBe(false);
        expect(existsSync(vmDir)).toBe(false);
        await vmResource.remove("", outs);
    }, 180_000);

    test("a disk held by another live QEMU is refused naming that process, not with QEMU's bare lock error", async () => {
        const stateDir = path.join(dir, "held");
        const disk = path.join(dir, "held.raw");
        await writeFile(disk, Buffer.alloc(1 << 20));
        const other = await createVm({
            vm: idleVm({ disks: [{ path: disk, format: "raw" }] }),
            stateDir: path.join(dir, "held-other"),
        });
        const err = await vmResource
            .create({
                vm: idleVm({ disks: [{ path: disk, format: "raw" }] }),
                stateDir,
                ready: { timeoutSeconds: 60 },
            } as never)
            .then(
                () => undefined,
                (e: Error) => e,
            );
        expect(err?.message).toMatch(
            new RegExp(`vm\\.disks\\[0\\].*${disk.replace(/[.]/g, "\\.")}.*in use by.*pid ${other.pid}`),
        );
        await vmResource.remove("", other);
    }, 180_000);
});

describe("5. a Network whose switch was killed", () => {
    test("delete removes everything, the port sockets of attached NICs too", async () => {
        const { id, outs } = await network.create({ stateDir: path.join(dir, "killed-switch") });
        // A NIC plugged in (QEMU, paused) makes the switch open a port socket in its directory.
        const qemu = spawn(
            "qemu-system-x86_64",
            [
                "-accel",
                "tcg",
                "-display",
                "none",
                "-nodefaults",
                "-S",
                "-netdev",
                `vde,id=n0,sock=${outs.switchDir}`,
                "-device",
                "e1000,netdev=n0",
            ],
            { stdio: "ignore" },
        );
        try {
            const deadline = Date.now() + 20_000;
            while (readdirSync(outs.switchDir).filter((n) => n !== "ctl").length === 0) {
                if (Date.now() > deadline) throw new Error(`no port socket appeared in ${outs.switchDir}`);
                await new Promise((r) => setTimeout(r, 100));
            }
        } finally {
            qemu.kill("SIGKILL");
        }
        process.kill(outs.pid, "SIGKILL");
        while (isRunning(outs.pid)) await new Promise((r) => setTimeout(r, 50));
        await network.remove(id, outs);
        expect(existsSync(outs.networkDir)).toBe(false);
    }, 60_000);
});

describe("6. drift of a blank qcow2", () => {
    test("one truncated to 4 KiB (its header intact) is drift", async () => {
        const img = await diskImage.createDiskImage({
            stateDir: path.join(dir, "trunc"),
            path: path.join(dir, "trunc.qcow2"),
            source: { kind: "blank", size: "8M", format: "qcow2" },
        });
        try {
            truncateSync(img.path, 4096);
            for (let i = 0; i < 2; i++) {
                const found = await diskImage.readImage(img.path, img);
                expect((found.props as { drift?: string }).drift).toMatch(
                    /trunc\.qcow2.*(cut short|truncated|ends at)/,
                );
            }
        } finally {
            await diskImage.removeImage(img);
        }
    });
});

describe("15. a snapshot of another argv", () => {
    test("is refused at restore; the same snapshot with the right argv restores", async () => {
        const stateDir = path.join(dir, "snap-state");
        const img = await diskImage.createDiskImage({
            stateDir,
            path: path.join(dir, "snap.qcow2"),
            source: { kind: "blank", size: "16M", format: "qcow2" },
        });
        const outs = await createVm({
            vm: idleVm({ disks: [{ path: img.path, format: "qcow2", inputHash: img.inputHash }] }),
            stateDir,
        });
        const target = { qmpSocket: outs.qmpSocket, vmDir: outs.vmDir, vm: outs.vm, argvHash: outs.argvHash };
        await saveSnapshot(target, "before");
        const other = { ...target, argvHash: "f".repeat(outs.argvHash.length) };
        await expect(restoreSnapshot(other, "before")).rejects.toThrow(
            /taken of a VM with another argv.*cannot be restored here/,
        );
        // The right argv restores it: the refusal above was the argv check, not a broken snapshot.
        await expect(restoreSnapshot(target, "before")).resolves.toEqual({ loadMs: expect.any(Number) });
        await vmResource.remove("", outs);
        await diskImage.removeImage(img);
        await execa("true");
    }, 180_000);
});
