import { statSync } from "node:fs";
import { mkdtemp, readdir, rm } from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import { waitUntilGone } from "../../provider/host/qemu/qemuProcess";
import { pruneWarmRecords } from "../../provider/host/qemu/warmStart";
import * as diskImage from "../../provider/resources/diskImage";
import * as vmResource from "../../provider/resources/virtualMachine";
import type { VirtualMachineOutputs } from "../../provider/resources/virtualMachine";
import { attach } from "../../sdk/testing";
import { ensureTestGuest, guestKernelArguments } from "../guest/testGuest";
import { httpGet } from "../support/net";
import { processesMentioning } from "../support/process";

/**
 * `warmStart: true`: the first create boots and snapshots; after kill -9 and a refresh that
 * finds the VM gone, the next create restores instead of booting (the same guest boot, ready,
 * clock and network working); another argv boots cold; a snapshot overwritten by that other
 * identity is refused with a warning and the VM boots cold.
 */

let dir: string;
let guest: { kernel: string; initrd: string };
const live: VirtualMachineOutputs[] = [];

beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), "pq-warm-"));
    guest = await ensureTestGuest();
}, 180_000);

afterAll(async () => {
    for (const o of live) await vmResource.remove("", o).catch(() => undefined);
    expect(processesMentioning(dir)).toEqual([]);
    await rm(dir, { recursive: true, force: true });
}, 120_000);

async function killAndRefresh(outs: VirtualMachineOutputs): Promise<void> {
    process.kill(outs.pid, "SIGKILL");
    expect(
        await waitUntilGone(
            { pid: outs.pid, startTime: outs.processStartTime, bootId: outs.bootId },
            outs.pidfile,
            10_000,
        ),
    ).toBe(true);
    expect(await vmResource.read("x", outs)).toEqual({ id: "", props: {} });
    live.splice(live.indexOf(outs), 1);
}

test("kill -9, refresh, up: restored, not booted, and ready; another identity boots cold; a stale snapshot is refused with a warning", async () => {
    const stateDir = path.join(dir, "state");
    const img = await diskImage.createDiskImage({
        stateDir,
        path: path.join(dir, "warm.qcow2"),
        source: { kind: "blank", size: "64M", format: "qcow2" },
    });
    const inputs = (memoryMiB = 256) => ({
        vm: {
            name: "warm",
            accel: "tcg",
            agent: "shell",
            memoryMiB,
            kernel: guest.kernel,
            initrd: guest.initrd,
            kernelArguments: guestKernelArguments({ name: "warm" }),
            disks: [{ path: img.path, format: "qcow2", inputHash: img.inputHash }],
            portForwards: [{ guest: 80 }],
        },
        // The kernel makes boot_id on its first read: read it before the snapshot is taken.
        ready: {
            agent: true as const,
            guestPort: 80,
            command: "cat /proc/sys/kernel/random/boot_id",
            timeoutSeconds: 150,
        },
        stateDir,
        warmStart: true,
    });
    expect((await vmResource.check({}, inputs())).failures ?? []).toEqual([]);
    const create = async (i: ReturnType<typeof inputs>) => {
        const outs = (await vmResource.create(i)).outs as VirtualMachineOutputs;
        live.push(outs);
        return outs;
    };

    const first = await create(inputs());
    expect(first.start).toBe("cold");
    expect(first.startNote).toBeUndefined();
    const record = path.join(stateDir, "warm", `${first.argvHash}.json`);
    expect(statSync(record).mode & 0o777).toBe(0o600);
    expect(statSync(path.dirname(record)).mode & 0o777).toBe(0o700);
    let m = attach(first);
    const bootId = await m.succeed("cat /proc/sys/kernel/random/boot_id");
    await m.succeed("echo later > /tmp/after-snapshot");
    m.close();
    await killAndRefresh(first);

    const second = await create(inputs());
    expect(second.start).toBe("restored");
    expect(second.argvHash).toBe(first.argvHash);
    console.log(
        `cold start ready in ${first.readySeconds.toFixed(2)} s, restored in ${second.readySeconds.toFixed(2)} s`,
    );
    expect(second.readySeconds).toBeLessThan(first.readySeconds);
    m = attach(second);
    try {
        // The same boot of the guest, as it was at the snapshot: what came later is not there.
        expect(await m.succeed("cat /proc/sys/kernel/random/boot_id")).toBe(bootId);
        await m.fail("test -e /tmp/after-snapshot");
        expect(Math.abs(Number((await m.succeed("date -u +%s")).trim()) - Date.now() / 1000)).toBeLessThan(5);
        const page = await httpGet(`http://127.0.0.1:${second.ports!["80"]}/`, 10_000);
        expect(page.body).toContain("pulumi-qemu test guest warm");
    } finally {
        m.close();
    }
    await killAndRefresh(second);

    // Another argv is another identity: booted cold (and it takes the disk's warm tag over).
    const other = await create(inputs(320));
    expect(other.argvHash).not.toBe(first.argvHash);
    expect(other.start).toBe("cold");
    expect(other.startNote).toBeUndefined();
    m = attach(other);
    expect(await m.succeed("cat /proc/sys/kernel/random/boot_id")).not.toBe(bootId);
    m.close();
    await killAndRefresh(other);

    // The first identity's record now names a qcow2 snapshot that is no longer there as recorded.
    const again = await create(inputs());
    expect(again.start).toBe("cold");
    expect(again.startNote).toMatch(
        /^booted cold: the warm snapshot is damaged \(disk .*warm\.qcow2 holds a different snapshot pq-warm/,
    );
    m = attach(again);
    expect(await m.succeed("cat /proc/sys/kernel/random/boot_id")).not.toBe(bootId);
    m.close();

    // Records of warm snapshots whose disk is gone are forgotten; those whose disk remains stay.
    await vmResource.remove("", again);
    live.splice(live.indexOf(again), 1);
    const warmDir = path.join(stateDir, "warm");
    expect((await readdir(warmDir)).sort()).toEqual([`${first.argvHash}.json`, `${other.argvHash}.json`].sort());
    expect(await pruneWarmRecords(stateDir)).toEqual([]);
    await diskImage.removeImage(img);
    expect((await pruneWarmRecords(stateDir)).sort()).toEqual(
        [`${first.argvHash}.json`, `${other.argvHash}.json`].sort(),
    );
    expect(await readdir(warmDir)).toEqual([]);
}, 600_000);

test("warmStart on a VM that cannot be snapshotted is refused at check, naming the field", async () => {
    const r = await vmResource.check(
        {},
        { vm: { kernel: guest.kernel, initrd: guest.initrd, shares: [{ source: dir }] }, warmStart: true },
    );
    expect(r.failures).toEqual([
        {
            property: "vm.shares",
            reason: expect.stringMatching(/^warmStart snapshots the VM: a virtio-9p share blocks/),
        },
        { property: "vm.disks", reason: expect.stringMatching(/small blank qcow2 DiskImage/) },
    ]);
    const bad = await vmResource.check({}, { vm: { kernel: guest.kernel }, warmStart: "yes" });
    expect(bad.failures).toEqual([
        { property: "warmStart", reason: 'warmStart must be true (or left out), got "yes"' },
    ]);
});
