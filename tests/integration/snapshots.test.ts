import execa from "execa";
import { existsSync, statSync } from "node:fs";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import { withQmp } from "../../provider/host/qemu/qmp";
import * as diskImage from "../../provider/resources/diskImage";
import * as vmResource from "../../provider/resources/virtualMachine";
import type { VirtualMachineOutputs } from "../../provider/resources/virtualMachine";
import { attach, type Machine } from "../../sdk/testing";
import { ensureTestGuest, guestKernelArguments } from "../guest/testGuest";
import { httpGet } from "../support/net";
import { processesMentioning } from "../support/process";

/**
 * Snapshots of a running busybox guest through the test API: memory, a process, the disk and
 * the network come back as they were; ten restores in a row; damage is refused; a VM with a 9p
 * share is refused with nothing written; the snapshots go with their VM.
 */

let dir: string;
let guest: { kernel: string; initrd: string };
const created: VirtualMachineOutputs[] = [];

beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), "pq-snap-"));
    guest = await ensureTestGuest();
}, 180_000);

afterAll(async () => {
    for (const o of created) await vmResource.remove("", o).catch(() => undefined);
    expect(processesMentioning(dir)).toEqual([]);
    await rm(dir, { recursive: true, force: true });
}, 120_000);

async function bootWithDisk(
    name: string,
    extra: Record<string, unknown> = {},
): Promise<{ outs: VirtualMachineOutputs; disk: string }> {
    const stateDir = path.join(dir, `state-${name}`);
    const img = await diskImage.createDiskImage({
        stateDir,
        path: path.join(dir, `${name}.qcow2`),
        source: { kind: "blank", size: "64M", format: "qcow2" },
    });
    const inputs = {
        vm: {
            name,
            accel: "tcg",
            agent: "shell",
            kernel: guest.kernel,
            initrd: guest.initrd,
            kernelArguments: guestKernelArguments({ name }),
            disks: [{ path: img.path, format: "qcow2", inputHash: img.inputHash }],
            portForwards: [{ guest: 80 }],
            ...extra,
        },
        ready: { agent: true as const, guestPort: 80, timeoutSeconds: 150 },
        stateDir,
    };
    const outs = (await vmResource.create(inputs)).outs as VirtualMachineOutputs;
    created.push(outs);
    return { outs, disk: img.path };
}

async function qcow2Tags(file: string): Promise<string[]> {
    const { stdout } = await execa("qemu-img", ["snapshot", "-U", "-l", file]);
    return stdout
        .split("\n")
        .slice(2)
        .map((l) => l.trim().split(/\s+/)[1])
        .filter(Boolean);
}

/** The disk's first bytes as the disk holds them, not as the guest's page cache remembers them. */
async function diskMarker(m: Machine): Promise<string> {
    return m.succeed("sync; echo 3 > /proc/sys/vm/drop_caches; dd if=/dev/vda bs=512 count=1 2>/dev/null | head -c 6");
}

test("snapshot, change everything, restore: memory, a process, the disk, the clock and the network are as they were — ten times over", async () => {
    const { outs, disk } = await bootWithDisk("snap");
    const m = attach(outs);
    try {
        await m.succeed("echo first > /tmp/marker-a");
        await m.succeed("printf DISK-A | dd of=/dev/vda bs=512 count=1 conv=sync 2>/dev/null; sync");
        const pid = (
            await m.succeed("setsid sh -c 'while true; do sleep 1; done' </dev/null >/dev/null 2>&1 & echo $!")
        ).trim();
        expect(pid).toMatch(/^\d+$/);

        const t0 = Date.now();
        const info = await m.snapshot("clean");
        console.log(`snapshot took ${Date.now() - t0} ms, vmstate ${info.vmStateBytes} bytes`);
        expect(info.name).toBe("clean");
        expect(info.vmStateBytes).toBeGreaterThan(1024 * 1024);
        expect((await m.snapshots()).map((s) => [s.name, s.damaged])).toEqual([["clean", undefined]]);
        expect(await qcow2Tags(disk)).toEqual(["pq-snap-clean"]);
        // Owner-only, like everything in the state directory.
        expect(statSync(path.join(outs.vmDir, "snapshots")).mode & 0o777).toBe(0o700);
        expect(statSync(path.join(outs.vmDir, "snapshots", "clean.json")).mode & 0o777).toBe(0o600);
        // Taking the same name again is refused rather than silently replacing it.
        await expect(m.snapshot("clean")).rejects.toThrow(
            /snapshot clean already exists; deleteSnapshot\("clean"\) first/,
        );

        const url = `http://127.0.0.1:${outs.ports!["80"]}/`;
        for (let round = 1; round <= 10; round++) {
            await m.succeed("echo second > /tmp/marker-b");
            await m.succeed("printf DISK-B | dd of=/dev/vda bs=512 count=1 conv=sync 2>/dev/null; sync");
            await m.succeed(`kill ${pid}`);
            expect(await diskMarker(m)).toBe("DISK-B");

            const r0 = Date.now();
            await m.restore("clean");
            const restoreMs = Date.now() - r0;

            expect(await m.succeed("cat /tmp/marker-a")).toBe("first\n");
            await m.fail("test -e /tmp/marker-b");
            expect(await diskMarker(m)).toBe("DISK-A");
            await m.succeed(`kill -0 ${pid}`);
            // The clock was set to the host's and runs on.
            const guestNow = Number((await m.succeed("date -u +%s")).trim());
            expect(Math.abs(guestNow - Date.now() / 1000)).toBeLessThan(5);
            await m.succeed("a=$(date +%s); sleep 2; b=$(date +%s); [ $b -gt $a ]");
            // The forwarded port answers HTTP from the restored httpd.
            const page = await httpGet(url, 10_000);
            expect(page.status).toBe(200);
            expect(page.body).toContain("pulumi-qemu test guest snap");
            console.log(`restore ${round}: ${restoreMs} ms`);
        }

        await m.deleteSnapshot("clean");
        expect(await m.snapshots()).toEqual([]);
        expect(await qcow2Tags(disk)).toEqual([]);
        await expect(m.restore("clean")).rejects.toThrow(/there is no snapshot clean/);
    } finally {
        m.close();
    }
}, 600_000);

test("a damaged snapshot is refused: a tampered record, a qcow2 snapshot gone behind its back; deleting it still works; snapshots go with their VM", async () => {
    const { outs, disk } = await bootWithDisk("damage");
    const m = attach(outs);
    try {
        await m.succeed("echo kept > /tmp/marker");
        await m.snapshot("a");
        await m.snapshot("b");
        expect((await m.snapshots()).map((s) => s.name).sort()).toEqual(["a", "b"]);

        const recordA = path.join(outs.vmDir, "snapshots", "a.json");
        const text = await readFile(recordA, "utf8");
        await writeFile(recordA, text.replace(/"saveMs": \d+/, '"saveMs": 1'), { mode: 0o600 });
        await m.succeed("echo changed > /tmp/marker");
        await expect(m.restore("a")).rejects.toThrow(
            /snapshot a is damaged and was not restored: its record's checksum does not match/,
        );
        expect((await m.snapshots()).find((s) => s.name === "a")?.damaged).toMatch(/checksum/);

        // Someone deletes the qcow2 snapshot under the record.
        await withQmp(outs.qmpSocket, 60_000, async (qmp) => {
            const [node] = (
                (await qmp.execute("query-block")) as Array<{ inserted?: { "node-name": string; ro: boolean } }>
            )
                .filter((d) => d.inserted && !d.inserted.ro)
                .map((d) => d.inserted!["node-name"]);
            await qmp.execute("snapshot-delete", { "job-id": "t", tag: "pq-snap-b", devices: [node] });
            for (let i = 0; i < 200; i++) {
                const jobs = (await qmp.execute("query-jobs")) as Array<{ id: string; status: string }>;
                if (jobs.find((j) => j.id === "t")?.status === "concluded") break;
                await new Promise((r) => setTimeout(r, 50));
            }
            await qmp.execute("job-dismiss", { id: "t" });
        });
        await expect(m.restore("b")).rejects.toThrow(
            /snapshot b is damaged and was not restored: disk .* has no snapshot pq-snap-b any more/,
        );
        // Nothing was restored by either refusal.
        expect(await m.succeed("cat /tmp/marker")).toBe("changed\n");

        await m.deleteSnapshot("b");
        expect((await m.snapshots()).map((s) => s.name)).toEqual(["a"]);
        expect(await qcow2Tags(disk)).toEqual(["pq-snap-a"]);

        // A tag with no record, as an interrupted save would leave: refused by name, gone with the VM.
        await withQmp(outs.qmpSocket, 60_000, async (qmp) => {
            const [node] = (
                (await qmp.execute("query-block")) as Array<{ inserted?: { "node-name": string; ro: boolean } }>
            )
                .filter((d) => d.inserted && !d.inserted.ro)
                .map((d) => d.inserted!["node-name"]);
            await qmp.execute("snapshot-save", {
                "job-id": "o",
                tag: "pq-snap-orphan",
                vmstate: node,
                devices: [node],
            });
            for (let i = 0; i < 400; i++) {
                const jobs = (await qmp.execute("query-jobs")) as Array<{ id: string; status: string }>;
                if (jobs.find((j) => j.id === "o")?.status === "concluded") break;
                await new Promise((r) => setTimeout(r, 50));
            }
            await qmp.execute("job-dismiss", { id: "o" });
        });
        await expect(m.snapshot("orphan")).rejects.toThrow(
            /already holds a qcow2 snapshot pq-snap-orphan with no record of it/,
        );
        expect((await qcow2Tags(disk)).sort()).toEqual(["pq-snap-a", "pq-snap-orphan"]);
    } finally {
        m.close();
    }
    // Deleting the VM deletes its snapshots, in the qcow2 file (even the damaged one's) and in its directory.
    await vmResource.remove("", outs);
    created.splice(created.indexOf(outs), 1);
    expect(await qcow2Tags(disk)).toEqual([]);
    expect(existsSync(outs.vmDir)).toBe(false);
}, 600_000);

test("a VM with a mounted 9p share asked for a snapshot: a clear refusal naming vm.shares, and nothing written", async () => {
    const share = path.join(dir, "share");
    await mkdir(share, { recursive: true });
    await writeFile(path.join(share, "hello.txt"), "hi\n");
    const stateDir = path.join(dir, "state-shared");
    const img = await diskImage.createDiskImage({
        stateDir,
        path: path.join(dir, "shared.qcow2"),
        source: { kind: "blank", size: "64M", format: "qcow2" },
    });
    const outs = (
        await vmResource.create({
            vm: {
                name: "shared",
                accel: "tcg",
                agent: "shell",
                network: "none",
                kernel: guest.kernel,
                initrd: guest.initrd,
                kernelArguments: guestKernelArguments({ name: "shared", mounts: [{ tag: "data", at: "/mnt/data" }] }),
                disks: [{ path: img.path, format: "qcow2", inputHash: img.inputHash }],
                shares: [{ source: share, mountTag: "data" }],
            },
            ready: { agent: true, timeoutSeconds: 150 },
            stateDir,
        })
    ).outs as VirtualMachineOutputs;
    created.push(outs);
    const m = attach(outs);
    try {
        expect(await m.succeed("cat /mnt/data/hello.txt")).toBe("hi\n");
        const err = (await m.snapshot("s").catch((e) => e)) as Error;
        expect(err.message).toMatch(
            /^this VM cannot be snapshotted, nothing was written: vm\.shares: a virtio-9p share blocks QEMU from saving/,
        );
        expect(err.message).toMatch(/copyToGuest or a DiskImage instead/);
        // QEMU itself agrees: the mounted export blocks migration.
        const blocked = await withQmp(
            outs.qmpSocket,
            10_000,
            async (qmp) =>
                ((await qmp.execute("query-migrate")) as { "blocked-reasons"?: string[] })["blocked-reasons"],
        );
        expect(blocked?.join(" ")).toMatch(/9p|VirtFS/i);
        expect(existsSync(path.join(outs.vmDir, "snapshots"))).toBe(false);
        expect(await qcow2Tags(img.path)).toEqual([]);
        expect(await m.snapshots()).toEqual([]);
        // The guest runs on, untouched.
        await m.succeed("true");
    } finally {
        m.close();
    }
}, 300_000);
