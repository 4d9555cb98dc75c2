import { mkdtemp, rm } from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import { qmpOnce } from "../../provider/host/qemu/qmp";
import * as diskImage from "../../provider/resources/diskImage";
import * as network from "../../provider/resources/network";
import type { NetworkOutputs } from "../../provider/resources/network";
import * as vmResource from "../../provider/resources/virtualMachine";
import type { VirtualMachineOutputs } from "../../provider/resources/virtualMachine";
import { fleet, type Fleet } from "../../sdk/fleet";
import { ensureTestGuest, guestKernelArguments } from "../guest/testGuest";
import { processesMentioning } from "../support/process";

/**
 * A fleet of four busybox VMs on one private Network, each with a qcow2 disk: snapshotted
 * together, changed (memory, disk, a process), restored in one call, and checked ten times in
 * a row — every VM's markers and disk as they were, every VM reaching its neighbour over the
 * Network (MAC and address kept), every clock set to the host's. A fleet snapshot is all or
 * nothing, and a restore that cannot be done on every member is done on none.
 */

const NAMES = ["f1", "f2", "f3", "f4"];
let dir: string;
let net: NetworkOutputs | undefined;
const outs: Record<string, VirtualMachineOutputs> = {};
let f: Fleet | undefined;

beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), "pq-fleet-"));
    const guest = await ensureTestGuest();
    const stateDir = path.join(dir, "state");
    const created = await network.create({ name: "fleetnet", stateDir });
    net = created.outs as NetworkOutputs;
    const netId = created.id;
    const t0 = Date.now();
    await Promise.all(
        NAMES.map(async (name) => {
            const img = await diskImage.createDiskImage({
                stateDir,
                path: path.join(dir, `${name}.qcow2`),
                source: { kind: "blank", size: "64M", format: "qcow2" },
            });
            const r = await vmResource.create({
                vm: {
                    name,
                    accel: "tcg",
                    agent: "shell",
                    // The test guest's /init gives the first NIC (eth0) the user-mode address, so the user network stays first.
                    kernel: guest.kernel,
                    initrd: guest.initrd,
                    kernelArguments: guestKernelArguments({ name }),
                    disks: [{ path: img.path, format: "qcow2", inputHash: img.inputHash }],
                    networks: [{ network: netId }],
                },
                ready: { agent: true, timeoutSeconds: 300 },
                stateDir,
            });
            outs[name] = r.outs as VirtualMachineOutputs;
        }),
    );
    console.log(`four VMs cold-booted to ready in ${Date.now() - t0} ms`);
}, 600_000);

afterAll(async () => {
    f?.close();
    await Promise.all(Object.values(outs).map((o) => vmResource.remove("", o).catch(() => undefined)));
    if (net) await network.remove("", net).catch(() => undefined);
    expect(processesMentioning(dir)).toEqual([]);
    await rm(dir, { recursive: true, force: true });
}, 180_000);

const ip = (name: string) => outs[name].nics![0].ipv4;
const neighbour = (name: string) => NAMES[(NAMES.indexOf(name) + 1) % NAMES.length];

/** The disk's first bytes as the disk holds them, not as the guest's page cache remembers them. */
const diskMarker = (name: string) =>
    f!
        .machine(name)
        .succeed("sync; echo 3 > /proc/sys/vm/drop_caches; dd if=/dev/vda bs=512 count=1 2>/dev/null | head -c 12");

test("four VMs snapshotted together, changed, restored in one call and checked — ten times in a row", async () => {
    f = fleet(Object.fromEntries(NAMES.map((n) => [n, outs[n]])));
    const pids: Record<string, string> = {};
    for (const name of NAMES) {
        const m = f.machine(name);
        await m.succeed(`echo clean-${name} > /tmp/marker`);
        await m.succeed(`printf DISK-A-${name} | dd of=/dev/vda bs=512 count=1 conv=sync 2>/dev/null; sync`);
        pids[name] = (
            await m.succeed("setsid sh -c 'while true; do sleep 1; done' </dev/null >/dev/null 2>&1 & echo $!")
        ).trim();
        // Reachable before the snapshot, so each guest's ARP cache is filled in the snapshot too.
        await m.waitUntilSucceeds(`ping -c 1 -W 3 ${ip(neighbour(name))} >/dev/null`, { timeoutSeconds: 120 });
    }

    const snap = await f.snapshot("clean");
    console.log(
        `fleet snapshot: paused ${snap.pausedMs} ms, vmstate ${Object.values(snap.vms)
            .map((v) => (v.vmStateBytes / 2 ** 20).toFixed(1))
            .join(", ")} MiB`,
    );
    expect(Object.keys(snap.vms)).toEqual(NAMES);
    expect(await f.snapshots()).toEqual(["clean"]);
    // Each VM runs again after the snapshot.
    for (const name of NAMES) expect(((await qmpStatus(outs[name])) as { status: string }).status).toBe("running");

    const times: number[] = [];
    for (let round = 1; round <= 10; round++) {
        await Promise.all(
            NAMES.map(async (name) => {
                const m = f!.machine(name);
                await m.succeed(`echo dirty > /tmp/marker; echo round${round} > /tmp/changed; kill ${pids[name]}`);
                await m.succeed(`printf DISK-B-${name} | dd of=/dev/vda bs=512 count=1 conv=sync 2>/dev/null; sync`);
                // A changed network state too: the neighbour's ARP entry dropped.
                await m.succeed(`ip neigh flush dev pqnet0 || true`);
            }),
        );
        expect(await diskMarker("f1")).toBe("DISK-B-f1\0\0\0");

        const report = await f.restore("clean");
        times.push(report.ms);
        expect(report.clocks).toEqual(Object.fromEntries(NAMES.map((n) => [n, "set"])));

        await Promise.all(
            NAMES.map(async (name) => {
                const m = f!.machine(name);
                expect(await m.succeed("cat /tmp/marker")).toBe(`clean-${name}\n`);
                await m.fail("test -e /tmp/changed");
                await m.succeed(`kill -0 ${pids[name]}`);
                expect((await diskMarker(name)).replace(/\0+$/, "")).toBe(`DISK-A-${name}`);
                // The NIC as the Network gave it: same MAC, same address; the neighbour answers over the switch.
                const link = await m.succeed("ip -o link show pqnet0; ip -o -4 addr show pqnet0");
                expect(link).toContain(outs[name].nics![0].mac);
                expect(link).toContain(`${ip(name)}/`);
                // At least one of three echoes answered (busybox ping exits 0 then): TCG guests on a loaded host are slow, not lossy.
                await m.succeed(`ping -c 3 -w 15 ${ip(neighbour(name))} >/dev/null`);
                // The clock is the host's (whole seconds), and runs.
                const guestNow = Number((await m.succeed("date -u +%s")).trim());
                expect(Math.abs(guestNow - Date.now() / 1000)).toBeLessThan(5);
            }),
        );
        console.log(`round ${round}: fleet restore ${report.ms} ms`);
    }
    console.log(`fleet restores (ms): ${times.join(", ")}`);

    await f.deleteSnapshot("clean");
    expect(await f.snapshots()).toEqual([]);
}, 1_200_000);

test("a restore that cannot be done on every member is done on none; a snapshot is all or nothing", async () => {
    f ??= fleet(Object.fromEntries(NAMES.map((n) => [n, outs[n]])));
    await f.machine("f1").succeed("echo before > /tmp/m2");
    await f.snapshot("partial");
    // One member loses its snapshot behind the fleet's back.
    await f.machine("f3").deleteSnapshot("partial");
    await Promise.all(NAMES.map((n) => f!.machine(n).succeed("echo after > /tmp/m2")));
    await expect(f.restore("partial")).rejects.toThrow(
        /fleet restore partial: nothing was restored: f3 has no snapshot partial/,
    );
    expect(await f.machine("f1").succeed("cat /tmp/m2")).toBe("after\n");
    for (const name of NAMES) expect(((await qmpStatus(outs[name])) as { status: string }).status).toBe("running");

    // A name that one member already has makes the fleet snapshot fail there, and it is taken back on the others.
    await expect(f.snapshot("partial")).rejects.toThrow(
        /fleet snapshot partial failed on 3 of 4 VMs, and was taken back on the others/,
    );
    expect((await f.machine("f3").snapshots()).map((s) => s.name)).not.toContain("partial");
    expect((await f.machine("f1").snapshots()).map((s) => s.name)).toContain("partial");
    for (const name of NAMES) expect(((await qmpStatus(outs[name])) as { status: string }).status).toBe("running");
    await f.deleteSnapshot("partial");
}, 600_000);

function qmpStatus(o: VirtualMachineOutputs): Promise<unknown> {
    return qmpOnce(o.qmpSocket, "query-status");
}
