import { existsSync, readFileSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import { qmpOnce } from "../../provider/host/qemu/qmp";
import * as diskImage from "../../provider/resources/diskImage";
import * as vmResource from "../../provider/resources/virtualMachine";
import type { VirtualMachineOutputs } from "../../provider/resources/virtualMachine";
import { faults } from "../../sdk/faults";
import { setGuestClock } from "../../sdk/fleet";
import { attach, type Machine } from "../../sdk/testing";
import { ensureTestGuest, guestKernelArguments } from "../guest/testGuest";
import { isRunning, processesMentioning } from "../support/process";

/**
 * Faults beyond a link, each on a real busybox guest, each seen by the guest as documented
 * (docs/fleet-testing.md) and each undone: freeze (its clock jumps), pause (its clock stands
 * still), a slow disk, a failing disk (EIO), a full host disk (the VM pauses), a full guest file system, clock skew, a power cut and power on (the same QEMU), CPU starvation; and
 * deleting a VM with faults still on it works and leaves nothing.
 */

let dir: string;
let guest: { kernel: string; initrd: string };
const created: VirtualMachineOutputs[] = [];

beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), "pq-faults-"));
    guest = await ensureTestGuest();
}, 180_000);

afterAll(async () => {
    for (const o of created) await vmResource.remove("", o).catch(() => undefined);
    expect(processesMentioning(dir)).toEqual([]);
    await rm(dir, { recursive: true, force: true });
}, 180_000);

async function boot(name: string): Promise<VirtualMachineOutputs> {
    const stateDir = path.join(dir, "state");
    const img = await diskImage.createDiskImage({
        stateDir,
        path: path.join(dir, `${name}.qcow2`),
        source: { kind: "blank", size: "64M", format: "qcow2" },
    });
    const outs = (
        await vmResource.create({
            vm: {
                name,
                accel: "tcg",
                agent: "shell",
                network: "none",
                kernel: guest.kernel,
                initrd: guest.initrd,
                kernelArguments: guestKernelArguments({ name }),
                disks: [{ path: img.path, format: "qcow2", inputHash: img.inputHash }],
            },
            ready: { agent: true, timeoutSeconds: 300 },
            stateDir,
        })
    ).outs as VirtualMachineOutputs;
    created.push(outs);
    return outs;
}

const guestSeconds = async (m: Machine) => Number((await m.succeed("date -u +%s")).trim());
const hostSeconds = () => Date.now() / 1000;
const status = async (o: VirtualMachineOutputs) =>
    ((await qmpOnce(o.qmpSocket, "query-status")) as { status: string }).status;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/** Reads 2 MiB of the disk past the guest's page cache; resolves to the wall time it took. */
const timedRead = async (m: Machine) => {
    const t0 = Date.now();
    await m.succeed("echo 3 > /proc/sys/vm/drop_caches; dd if=/dev/vda of=/dev/null bs=64k count=32 2>/dev/null", {
        timeoutSeconds: 120,
    });
    return Date.now() - t0;
};

let outs: VirtualMachineOutputs;
let m: Machine;

beforeAll(async () => {
    outs = await boot("faulty");
    m = attach(outs);
}, 400_000);

afterAll(() => m?.close());

/** A failed test must not leave its fault on the VM for the next one. */
const made: ReturnType<typeof faults>[] = [];
afterEach(async () => {
    for (const f of made.splice(0)) await f.undoAll().catch(() => undefined);
});
const faultsOn = (o: VirtualMachineOutputs) => {
    const f = faults(o);
    made.push(f);
    return f;
};

test("freeze: nothing answers, not even QMP; on thaw the guest's clock has jumped forward with the host's", async () => {
    const f = faultsOn(outs);
    const before = await guestSeconds(m);
    const fault = await f.freeze();
    expect(fault.description).toMatch(/^freeze \(SIGSTOP of QEMU pid \d+\)$/);
    await expect(qmpOnce(outs.qmpSocket, "query-status", undefined, 1500)).rejects.toThrow();
    await sleep(4000);
    await fault.undo();
    const after = await guestSeconds(m);
    expect(after - before).toBeGreaterThanOrEqual(4);
    expect(Math.abs(after - hostSeconds())).toBeLessThan(3);
    expect(f.active()).toEqual([]);
}, 120_000);

test("pause: QMP says paused; after it the guest's clock is behind the host's by the pause", async () => {
    const f = faultsOn(outs);
    await setGuestClock(m);
    const fault = await f.pause();
    expect(await status(outs)).toBe("paused");
    await sleep(4000);
    await fault.undo();
    expect(await status(outs)).toBe("running");
    const behind = hostSeconds() - (await guestSeconds(m));
    expect(behind).toBeGreaterThanOrEqual(3);
    await setGuestClock(m);
}, 120_000);

test("slow disk: reads take as long as the rate says, and are fast again after undo", async () => {
    const f = faultsOn(outs);
    const fast = await timedRead(m);
    const fault = await f.slowDisk(0, { bytesPerSecond: 512 * 1024 });
    expect(fault.description).toMatch(/^slow disk virtio\d .* at 524288 B\/s$/);
    const slow = await timedRead(m);
    // 2 MiB at 512 KiB/s: about 4 s (QEMU lets a first burst through).
    expect(slow).toBeGreaterThan(2500);
    await fault.undo();
    const again = await timedRead(m);
    console.log(`2 MiB read: ${fast} ms, throttled ${slow} ms, after undo ${again} ms`);
    expect(again).toBeLessThan(slow / 2);
}, 300_000);

test("failing disk: reads and writes get EIO in the guest, which logs I/O errors; undo and both work", async () => {
    const f = faultsOn(outs);
    await m.succeed("printf GOOD | dd of=/dev/vda bs=512 count=1 conv=sync,fsync 2>/dev/null");
    const fault = await f.failingDisk(0);
    const read = await m.fail(
        "echo 3 > /proc/sys/vm/drop_caches; dd if=/dev/vda of=/dev/null bs=4k count=1 iflag=direct 2>&1 || dd if=/dev/vda of=/dev/null bs=4k count=1 2>&1",
    );
    expect(read.stdout).toMatch(/I\/O error|Input\/output error/);
    const write = await m.fail("dd if=/dev/zero of=/dev/vda bs=4k count=1 seek=100 conv=fsync 2>&1");
    expect(write.stdout).toMatch(/I\/O error|Input\/output error/);
    expect(await m.succeed("dmesg | tail -20")).toMatch(/I\/O error/);
    await expect(f.failingDisk(0)).rejects.toThrow(
        /^disk virtio\d already has a failing-disk or full-disk fault; undo it first$/,
    );
    await fault.undo();
    expect(
        await m.succeed("echo 3 > /proc/sys/vm/drop_caches; dd if=/dev/vda bs=512 count=1 2>/dev/null | head -c 4"),
    ).toBe("GOOD");
    await m.succeed("dd if=/dev/zero of=/dev/vda bs=4k count=1 seek=100 conv=fsync 2>/dev/null");

    // Only writes: reads still work.
    const w = await f.failingDisk(0, { reads: false });
    expect(
        await m.succeed("echo 3 > /proc/sys/vm/drop_caches; dd if=/dev/vda bs=512 count=1 2>/dev/null | head -c 4"),
    ).toBe("GOOD");
    await m.fail("dd if=/dev/zero of=/dev/vda bs=4k count=1 seek=100 conv=fsync 2>/dev/null");
    await w.undo();
}, 300_000);

test("full disk: the next write pauses the VM (io-error, nospace); undo continues it and the write lands", async () => {
    const f = faultsOn(outs);
    await setGuestClock(m);
    const fault = await f.fullDisk(0);
    expect(fault.description).toMatch(
        /^full disk under virtio\d .*: the next write gets ENOSPC and QEMU pauses the VM$/,
    );
    await expect(f.failingDisk(0)).rejects.toThrow(/already has a failing-disk or full-disk fault/);
    // Until something writes, the guest runs on and reads work.
    expect(await status(outs)).toBe("running");
    await m.succeed("echo 3 > /proc/sys/vm/drop_caches; dd if=/dev/vda of=/dev/null bs=4k count=8 2>/dev/null");
    const write = m.execute("printf FULLDISK | dd of=/dev/vda bs=512 seek=3000 conv=sync,fsync 2>&1", {
        timeoutSeconds: 180,
    });
    const until = Date.now() + 60_000;
    while ((await status(outs)) !== "io-error") {
        if (Date.now() > until) throw new Error("the VM did not pause on the full disk within 60 s");
        await sleep(200);
    }
    const block = (await qmpOnce(outs.qmpSocket, "query-block")) as { "io-status"?: string }[];
    expect(block[0]["io-status"]).toBe("nospace");
    // It stays paused: nothing gives the space back but undo.
    await sleep(3000);
    expect(await status(outs)).toBe("io-error");
    await fault.undo();
    expect(await status(outs)).toBe("running");
    const done = await write;
    expect(done.exitCode).toBe(0);
    expect(
        await m.succeed(
            "echo 3 > /proc/sys/vm/drop_caches; dd if=/dev/vda bs=512 skip=3000 count=1 2>/dev/null | head -c 8",
        ),
    ).toBe("FULLDISK");
    expect(((await qmpOnce(outs.qmpSocket, "query-block")) as { "io-status"?: string }[])[0]["io-status"]).toBe("ok");
    expect(f.active()).toEqual([]);
    // Its clock stood still while paused.
    await setGuestClock(m);
}, 300_000);

test("fill a file system: writes get ENOSPC, root's reserve included, df says full; undo frees it", async () => {
    const f = faultsOn(outs);
    // An 8 MiB ext2 file system (the first 8 MiB of the disk) with 5 % reserved for root (busybox mke2fs).
    await m.succeed(
        "mkdir -p /mnt/fill && mke2fs -q -F -m 5 /dev/vda 8192 >/dev/null && mount -t ext2 /dev/vda /mnt/fill && echo keep > /mnt/fill/keep",
        { timeoutSeconds: 120 },
    );
    try {
        const fault = await f.fillFileSystem("/mnt/fill");
        expect(fault.description).toMatch(/^file system of \/mnt\/fill filled/);
        const w = await m.fail("dd if=/dev/zero of=/mnt/fill/new bs=4k count=1 conv=fsync 2>&1");
        expect(w.stdout).toMatch(/No space left on device/);
        expect((await m.succeed("df -P -k /mnt/fill | awk 'NR==2 {print $4}'")).trim()).toBe("0");
        expect(await m.succeed("cat /mnt/fill/keep")).toBe("keep\n");
        await fault.undo();
        await m.succeed("dd if=/dev/zero of=/mnt/fill/new bs=4k count=64 conv=fsync 2>/dev/null && rm /mnt/fill/new");
        expect(await m.succeed("ls -A /mnt/fill")).not.toMatch(/pulumi-qemu-fill/);

        // Almost full: leaveBytes stay free (128 KiB fit), and not much more (256 KiB more do not).
        const almost = await f.fillFileSystem("/mnt/fill/", { leaveBytes: 256 * 1024 });
        await m.succeed("dd if=/dev/zero of=/mnt/fill/a bs=64k count=2 conv=fsync 2>/dev/null");
        await m.fail("dd if=/dev/zero of=/mnt/fill/b bs=64k count=4 conv=fsync 2>/dev/null");
        await almost.undo();
    } finally {
        await m.succeed("umount /mnt/fill");
    }
    // The shell agent works in /tmp: filling that file system would leave it unable to take the undo.
    await expect(f.fillFileSystem("/tmp")).rejects.toThrow(
        /on the file system that holds \/tmp, where the shell agent works/,
    );
    await expect(f.fillFileSystem("relative")).rejects.toThrow(/guestPath must be an absolute path/);
    await expect(f.fillFileSystem("/mnt", { leaveBytes: -1 })).rejects.toThrow(/leaveBytes must be a whole number/);
}, 300_000);

test("the shell agent answers exit 125 when its work directory's file system is full, and serves again after", async () => {
    // A 64 KiB tmpfs over the agent's work directory, filled: the next request cannot be written
    // there. The command that fills it also frees it a few seconds later (no command could).
    const work = (await m.succeed("ls -d /tmp/pq-shell.*")).trim();
    await m.succeed(
        `mount -t tmpfs -o size=64k tmpfs ${work} && (dd if=/dev/zero of=${work}/fill bs=4k 2>/dev/null; true) && (sleep 6; rm -f ${work}/fill) >/dev/null 2>&1 &`,
    );
    await sleep(500);
    const r = await m.execute("echo should-not-run", { timeoutSeconds: 30 });
    expect(r.exitCode).toBe(125);
    expect(r.stdout).toBe("");
    expect(r.stderr).toMatch(
        /^pq-shell: the command could not be written to \/tmp\/pq-shell\.\S+: its file system is full or read-only\n$/,
    );
    await m.waitUntilSucceeds("true", { timeoutSeconds: 60 });
    await m.succeed(`umount -l ${work}`);
    expect(await m.succeed("echo back")).toBe("back\n");
}, 120_000);

test("clock skew: the guest's clock an hour ahead, then right again", async () => {
    const f = faultsOn(outs);
    const fault = await f.clockSkew(3600);
    expect(Math.abs((await guestSeconds(m)) - hostSeconds() - 3600)).toBeLessThan(3);
    await fault.undo();
    expect(Math.abs((await guestSeconds(m)) - hostSeconds())).toBeLessThan(3);
}, 120_000);

test("CPU starvation: guest work takes longer by the guest's own clock, which keeps the host's time", async () => {
    const f = faultsOn(outs);
    // Timed inside the guest (its uptime runs on while QEMU is stopped), so agent overhead stays out.
    const work = async () => {
        const [a, b] = (
            await m.succeed(
                "a=$(cut -d' ' -f1 /proc/uptime); i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; echo $a $(cut -d' ' -f1 /proc/uptime)",
                { timeoutSeconds: 300 },
            )
        )
            .trim()
            .split(" ")
            .map(Number);
        return (b - a) * 1000;
    };
    const normal = await work();
    const fault = await f.starveCpu({ share: 0.2, periodMs: 100 });
    expect(fault.description).toMatch(/^CPU starvation: 20% of every 100 ms/);
    // How much of the time QEMU is stopped, seen in /proc while the guest works.
    let stopped = 0;
    let samples = 0;
    const sampler = setInterval(() => {
        const stat = readFileSync(`/proc/${outs.pid}/stat`, "utf8");
        samples++;
        if (stat.slice(stat.lastIndexOf(")") + 2)[0] === "T") stopped++;
    }, 7);
    let starved: number;
    try {
        starved = await work();
    } finally {
        clearInterval(sampler);
    }
    await fault.undo();
    const after = await work();
    console.log(
        `busy loop by the guest's clock: ${normal} ms, starved to 20%: ${starved} ms (QEMU stopped ${Math.round((100 * stopped) / samples)}% of the time), after undo: ${after} ms`,
    );
    expect(stopped / samples).toBeGreaterThan(0.5);
    // 1/share would be 5×; a loaded host's scheduler favours a process just continued, so less is seen.
    expect(starved).toBeGreaterThan(normal);
    expect(readFileSync(`/proc/${outs.pid}/stat`, "utf8").split(") ")[1][0]).not.toBe("T");
    expect(Math.abs((await guestSeconds(m)) - hostSeconds())).toBeLessThan(3);
}, 300_000);

test("power cut and power on: what was only in memory is gone, the guest boots again in the same QEMU", async () => {
    const f = faultsOn(outs);
    await m.succeed("echo in-memory > /tmp/volatile");
    const fault = await f.powerCut();
    // A reset while stopped leaves QEMU in "prelaunch", as if it had been started with -S.
    expect(["paused", "prelaunch"]).toContain(await status(outs));
    await fault.undo();
    await m.waitUntilSucceeds("test ! -e /tmp/volatile && test -e /tmp", { timeoutSeconds: 240 });
    const uptime = Number((await m.succeed("cut -d. -f1 /proc/uptime")).trim());
    expect(uptime).toBeLessThan(240);
    // The same QEMU process: the resource's outputs still describe it.
    expect(isRunning(outs.pid)).toBe(true);
    const r = await vmResource.read("", outs);
    expect((r.props as VirtualMachineOutputs).pid).toBe(outs.pid);
    // The VM's own reboot action is back: onReboot "restart" (the default) resets in place, the
    // guest comes up again in the same QEMU rather than QEMU exiting.
    await m.succeed("echo before-reboot > /tmp/volatile2");
    await m.execute("(sleep 1; reboot -f) >/dev/null 2>&1 &");
    m.close();
    // Gone with the guest's memory only if it rebooted; QEMU exiting instead would fail the wait.
    await m.waitUntilSucceeds("test ! -e /tmp/volatile2", { timeoutSeconds: 240 });
    expect(isRunning(outs.pid)).toBe(true);
    expect(Number((await m.succeed("cut -d. -f1 /proc/uptime")).trim())).toBeLessThan(60);
}, 400_000);

test("a VM deleted while frozen and with a slow disk: the delete works and nothing is left", async () => {
    const o = await boot("doomed");
    const f = faults(o);
    await f.slowDisk(0, { bytesPerSecond: 4096 });
    await f.freeze();
    const t0 = Date.now();
    await vmResource.remove("", o);
    created.splice(created.indexOf(o), 1);
    console.log(`delete of a frozen VM: ${Date.now() - t0} ms`);
    expect(isRunning(o.pid)).toBe(false);
    expect(existsSync(o.vmDir)).toBe(false);
}, 400_000);
