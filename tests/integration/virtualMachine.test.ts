import { existsSync, readdirSync } from "node:fs";
import { mkdir, mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import { buildQemuArgv } from "../../provider/core/qemuArgv";
import { parseVmSpec } from "../../provider/core/vmSpec";
import { checkOurDaemon, startDaemonized, stopQemu } from "../../provider/host/qemu/qemuProcess";
import { QmpClient, queryStatus } from "../../provider/host/qemu/qmp";
import * as vmResource from "../../provider/resources/virtualMachine";
import type { VirtualMachineOutputs } from "../../provider/resources/virtualMachine";
import { ensureTestGuest, guestKernelArguments, READY_MARKER } from "../guest/testGuest";
import { freePort, httpGet, tcpListenAddresses } from "../support/net";
import { processesMentioning } from "../support/process";

/**
 * VirtualMachine with the real test guest under TCG: readiness on the console and on a
 * forwarded port, QMP, refresh after the process dies, clean failure, and delete leaving
 * nothing behind.
 */

let dir: string;
let guest: { kernel: string; initrd: string };
const created: VirtualMachineOutputs[] = [];

beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), "pq-vm-"));
    guest = await ensureTestGuest();
}, 180_000);

afterAll(async () => {
    for (const outs of created) await vmResource.remove("", outs).catch(() => undefined);
    await rm(dir, { recursive: true, force: true });
}, 120_000);

function guestVm(name: string, extra: Record<string, unknown> = {}, mounts: { tag: string; at: string }[] = []) {
    return {
        name,
        accel: "tcg",
        kernel: guest.kernel,
        initrd: guest.initrd,
        kernelArguments: guestKernelArguments({ name, mounts }),
        ...extra,
    };
}

async function create(inputs: vmResource.VirtualMachineInputs): Promise<{ id: string; outs: VirtualMachineOutputs }> {
    const check = await vmResource.check({}, inputs);
    expect(check.failures ?? []).toEqual([]);
    const r = await vmResource.create(inputs);
    created.push(r.outs);
    return { id: r.id, outs: r.outs };
}

test("a guest with a 9p share and a forwarded port: ready on both, QMP answers, delete leaves nothing", async () => {
    const stateDir = path.join(dir, "one");
    const share = path.join(dir, "share-one");
    await mkdir(share);
    await writeFile(
        path.join(share, "pq-init.sh"),
        "echo hello-from-share > /mnt/share/from-guest.txt\nsync\necho share-script-ran\n",
    );
    const port = await freePort();
    const inputs = {
        vm: guestVm(
            "one",
            { shares: [{ source: share, mountTag: "pqshare" }], portForwards: [{ host: port, guest: 80 }] },
            [{ tag: "pqshare", at: "/mnt/share" }],
        ),
        ready: { serialPattern: "share-script-ran", tcpPort: port, timeoutSeconds: 120 },
        stateDir,
    };
    const t0 = Date.now();
    const { id, outs } = await create(inputs);
    console.log(
        `one VM: create-to-ready ${((Date.now() - t0) / 1000).toFixed(2)} s (readySeconds ${outs.readySeconds.toFixed(2)})`,
    );

    expect(JSON.stringify(outs)).not.toContain("undefined");
    expect(outs).toMatchObject({ status: "running", accel: "tcg", vm: inputs.vm, ready: inputs.ready, stateDir });
    expect(id).toBe(path.basename(outs.vmDir));
    expect(path.dirname(outs.vmDir)).toBe(path.join(stateDir, "vms"));
    for (const d of [stateDir, path.join(stateDir, "vms"), outs.vmDir])
        expect((await stat(d)).mode & 0o777).toBe(0o700);
    expect((await stat(outs.qmpSocket)).isSocket()).toBe(true);
    for (const f of [outs.qmpSocket, outs.serialLog]) expect((await stat(f)).mode & 0o077).toBe(0);
    expect(Date.parse(outs.startedAt)).toBeGreaterThan(t0 - 1000);

    // Both readiness kinds were real: the share's script ran and wrote to the host, the port serves HTTP.
    expect(await readFile(path.join(share, "from-guest.txt"), "utf8")).toBe("hello-from-share\n");
    expect(await httpGet(`http://127.0.0.1:${port}/`)).toMatchObject({
        status: 200,
        body: "pulumi-qemu test guest one\n",
    });
    // Forwarded on loopback only, as no hostAddress was given.
    expect(tcpListenAddresses(port)).toEqual(["127.0.0.1"]);

    // QEMU serves one QMP client at a time, so each exchange closes before read opens its own.
    const qmpDo = async (command: string) => {
        const qmp = await QmpClient.connect(outs.qmpSocket);
        try {
            if (command !== "query-status") await qmp.execute(command);
            return await queryStatus(qmp);
        } finally {
            qmp.close();
        }
    };
    expect(await qmpDo("query-status")).toEqual({ running: true, status: "running" });
    expect(await qmpDo("stop")).toEqual({ running: false, status: "paused" });
    expect(await vmResource.read(id, outs)).toEqual({ id, props: { ...outs, status: "paused" } });
    expect(await qmpDo("cont")).toEqual({ running: true, status: "running" });
    expect(await vmResource.read(id, outs)).toEqual({ id, props: { ...outs, status: "running" } });

    const t1 = Date.now();
    await vmResource.remove(id, outs);
    console.log(`one VM: delete took ${((Date.now() - t1) / 1000).toFixed(2)} s`);
    expect(
        (await checkOurDaemon({ pid: outs.pid, startTime: outs.processStartTime, bootId: outs.bootId }, outs.pidfile))
            .alive,
    ).toBe(false);
    expect(processesMentioning(outs.vmDir)).toEqual([]);
    expect(existsSync(outs.vmDir)).toBe(false);
    expect(readdirSync(path.join(stateDir, "vms"))).toEqual([]);
    // The share is the user's: it stays.
    expect(existsSync(path.join(share, "pq-init.sh"))).toBe(true);
}, 240_000);

test("a QEMU killed with SIGKILL is reported gone by read; delete still cleans up", async () => {
    const stateDir = path.join(dir, "killed");
    const { id, outs } = await create({
        vm: guestVm("killed", { network: "none" }),
        ready: { serialPattern: READY_MARKER },
        stateDir,
    });
    process.kill(outs.pid, "SIGKILL");
    const deadline = Date.now() + 5000;
    let r = await vmResource.read(id, outs);
    while (r.id && Date.now() < deadline) r = await vmResource.read(id, outs);
    expect(r).toEqual({ id: "", props: {} });
    await vmResource.remove(id, outs);
    expect(existsSync(outs.vmDir)).toBe(false);
}, 180_000);

test("a wrong kernel path fails with QEMU's message and leaves nothing", async () => {
    const stateDir = path.join(dir, "badkernel");
    const inputs = { vm: { ...guestVm("bad"), kernel: path.join(dir, "no-such-vmlinuz") }, stateDir };
    const err = (await vmResource.create(inputs).catch((e: unknown) => e)) as Error;
    expect(err).toBeInstanceOf(Error);
    expect(err.message).toMatch(/no-such-vmlinuz/);
    expect(readdirSync(path.join(stateDir, "vms"))).toEqual([]);
    expect(processesMentioning(stateDir)).toEqual([]);
});

test("a guest that never gets ready times out, stops, cleans up and shows the serial tail", async () => {
    const stateDir = path.join(dir, "never");
    const inputs = {
        vm: guestVm("never", { network: "none" }),
        ready: { serialPattern: "this text never appears", timeoutSeconds: 15 },
        stateDir,
    };
    const t0 = Date.now();
    const err = (await vmResource.create(inputs).catch((e: unknown) => e)) as Error;
    const took = (Date.now() - t0) / 1000;
    expect(err).toBeInstanceOf(Error);
    expect(err.message).toMatch(
        /not ready within 15 s \(waiting for serialPattern "this text never appears" on the console\)/,
    );
    // The tail is the guest's own console, cleaned of escape codes and CRs.
    expect(err.message).toContain(READY_MARKER);
    expect(err.message).not.toMatch(/\r|\x1b/);
    expect(took).toBeGreaterThanOrEqual(15);
    expect(took).toBeLessThan(30);
    expect(readdirSync(path.join(stateDir, "vms"))).toEqual([]);
    expect(processesMentioning(stateDir)).toEqual([]);
}, 60_000);

test("readiness on a port waits for an answer, not for an accepted connection", async () => {
    // The guest has no network card listening yet for several seconds, while QEMU's user
    // networking accepts the connection at once: a VM ready in under a second would be wrong.
    const stateDir = path.join(dir, "portonly");
    const port = await freePort();
    const { id, outs } = await create({
        vm: guestVm("portonly", { portForwards: [{ host: port, guest: 80 }] }),
        ready: { tcpPort: port, timeoutSeconds: 120 },
        stateDir,
    });
    // An accepted connection would have counted within a second, long before the guest ran its /init.
    expect(await readFile(outs.serialLog, "utf8")).toContain("Run /init as init process");
    expect(outs.readySeconds).toBeGreaterThan(1.5);
    expect(await httpGet(`http://127.0.0.1:${port}/`)).toMatchObject({ status: 200 });
    // The guest obeys the ACPI power button, so the gentlest stop is the one that ends it.
    const target = {
        identity: { pid: outs.pid, startTime: outs.processStartTime, bootId: outs.bootId },
        pidfile: outs.pidfile,
        qmpSocket: outs.qmpSocket,
    };
    expect(await stopQemu(target)).toBe("powerdown");
    await vmResource.remove(id, outs);
    expect(existsSync(outs.vmDir)).toBe(false);
}, 180_000);

test("the provider's overhead over the same argv run by hand, to the same console marker", async () => {
    const spec = parseVmSpec(guestVm("overhead", { network: "none" }));
    const byHand = async (): Promise<number> => {
        const sub = await mkdtemp(path.join(dir, "hand-"));
        const runtime = {
            pidfile: path.join(sub, "qemu.pid"),
            qmpSocket: path.join(sub, "qmp.sock"),
            serialLog: path.join(sub, "serial.log"),
        };
        const t0 = Date.now();
        const identity = await startDaemonized(buildQemuArgv(spec, { accel: "tcg" }, runtime), runtime.pidfile);
        try {
            while (!(await readFile(runtime.serialLog, "utf8").catch(() => "")).includes(READY_MARKER)) {
                if (Date.now() - t0 > 120_000) throw new Error("no marker by hand within 120 s");
                await new Promise((r) => setTimeout(r, 20));
            }
            return (Date.now() - t0) / 1000;
        } finally {
            await stopQemu({ identity, ...runtime }, { powerdownMs: 0 });
        }
    };
    const viaProvider = async (): Promise<number> => {
        const t0 = Date.now();
        const { id, outs } = await create({
            vm: guestVm("overhead", { network: "none" }),
            ready: { serialPattern: READY_MARKER },
            stateDir: path.join(dir, "overhead"),
        });
        const took = (Date.now() - t0) / 1000;
        await vmResource.remove(id, outs);
        return took;
    };
    const hand: number[] = [];
    const provider: number[] = [];
    for (let i = 0; i < 3; i++) {
        hand.push(await byHand());
        provider.push(await viaProvider());
    }
    const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[1];
    console.log(
        `to ${READY_MARKER}: by hand ${hand.map((x) => x.toFixed(2)).join(", ")} s; provider ${provider.map((x) => x.toFixed(2)).join(", ")} s; median overhead ${(median(provider) - median(hand)).toFixed(2)} s`,
    );
    // Generous: the machine is shared, but a provider adding seconds to every boot is a defect.
    expect(median(provider) - median(hand)).toBeLessThan(2);
}, 300_000);
