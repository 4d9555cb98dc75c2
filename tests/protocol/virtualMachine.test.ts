import { existsSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import { openDriver, type Driver, type PluginKind } from "../engine/driver";
import type { Props } from "../engine/wire";
import { ensureTestGuest, guestKernelArguments, READY_MARKER } from "../guest/testGuest";
import { freePort, httpGet } from "../support/net";
import { isRunning } from "../support/process";

/**
 * VirtualMachine's lifecycle over gRPC through both plugins: a real guest under TCG boots from
 * Create, a no-op diff, an in-place update of `ready`, a replacing diff, refresh after QEMU is
 * killed with SIGKILL, and delete.
 */

const DIFF_NONE = 1;
const DIFF_SOME = 2;

interface VmOuts {
    pid: number;
    qmpSocket: string;
    serialLog: string;
    launcherPath: string;
    argvHash: string;
    status: string;
    accel: string;
    startedAt: string;
    vmDir: string;
}

describe.each<PluginKind>(["dynamic", "qemu"])("VirtualMachine through the %s plugin", (kind) => {
    let driver: Driver;
    let dir: string;
    let guest: { kernel: string; initrd: string };
    const started: number[] = [];

    beforeAll(async () => {
        guest = await ensureTestGuest();
        // Short: the QMP socket path must fit in 107 bytes.
        dir = await mkdtemp(path.join(os.tmpdir(), `pq-pvm-${kind[0]}-`));
        driver = await openDriver(kind);
    }, 300_000);

    afterAll(async () => {
        await driver?.close();
        for (const pid of started) if (isRunning(pid)) process.kill(pid, "SIGKILL");
        if (dir) await rm(dir, { recursive: true, force: true });
    });

    test("boot, no-op diff, update of ready, replacing diff, read after kill -9 is gone, delete", async () => {
        const name = `proto-${kind}`;
        const port = await freePort();
        const inputs = (memoryMiB: number, timeoutSeconds: number) => ({
            stateDir: path.join(dir, "s"),
            vm: {
                name,
                accel: "tcg",
                memoryMiB,
                kernel: guest.kernel,
                initrd: guest.initrd,
                kernelArguments: guestKernelArguments({ name }),
                portForwards: [{ host: port, guest: 80 }],
            },
            ready: { serialPattern: READY_MARKER, tcpPort: port, timeoutSeconds },
        });
        const urn = driver.urn("VirtualMachine", name);
        const checked = await driver.plugin.check(urn, {}, driver.news("VirtualMachine", inputs(256, 180)));
        expect(checked.failures).toEqual([]);
        const t0 = Date.now();
        const made = await driver.plugin.create(urn, checked.inputs);
        const outs = made.properties as unknown as VmOuts;
        started.push(outs.pid);
        console.log(`${kind} plugin: VirtualMachine create to ready ${((Date.now() - t0) / 1000).toFixed(1)} s`);
        expect(outs).toMatchObject({ status: "running", accel: "tcg" });
        expect(isRunning(outs.pid)).toBe(true);
        for (const f of [outs.qmpSocket, outs.serialLog, outs.launcherPath]) expect(existsSync(f)).toBe(true);
        expect((await httpGet(`http://127.0.0.1:${port}/`)).body).toContain(`pulumi-qemu test guest ${name}`);

        const same = await driver.plugin.check(urn, checked.inputs, driver.news("VirtualMachine", inputs(256, 180)));
        expect(await driver.plugin.diff(made.id, urn, made.properties, same.inputs, checked.inputs)).toEqual({
            changes: DIFF_NONE,
            replaces: [],
            deleteBeforeReplace: false,
        });

        const patient = await driver.plugin.check(urn, checked.inputs, driver.news("VirtualMachine", inputs(256, 240)));
        const readyDiff = await driver.plugin.diff(made.id, urn, made.properties, patient.inputs, checked.inputs);
        expect(readyDiff).toEqual({ changes: DIFF_SOME, replaces: [], deleteBeforeReplace: false });
        const updated = await driver.plugin.update(made.id, urn, made.properties, patient.inputs, checked.inputs);
        expect(updated.properties).toMatchObject({ pid: outs.pid, ready: { timeoutSeconds: 240 }, status: "running" });

        // More memory is another QEMU: a replacement, the old one stopped first since both want the port.
        const bigger = await driver.plugin.check(urn, patient.inputs, driver.news("VirtualMachine", inputs(384, 240)));
        const memDiff = await driver.plugin.diff(made.id, urn, updated.properties, bigger.inputs, patient.inputs);
        expect(memDiff).toEqual({ changes: DIFF_SOME, replaces: ["vm"], deleteBeforeReplace: true });

        const live = await driver.plugin.read(made.id, urn, updated.properties, patient.inputs);
        expect(live.id).toBe(made.id);
        expect(live.properties).toMatchObject({ status: "running", pid: outs.pid });

        process.kill(outs.pid, "SIGKILL");
        const until = Date.now() + 10_000;
        while (isRunning(outs.pid) && Date.now() < until) await new Promise((r) => setTimeout(r, 100));
        const gone = await driver.plugin.read(made.id, urn, updated.properties, patient.inputs);
        expect(gone.id).toBe("");

        await driver.plugin.delete(made.id, urn, updated.properties as Props, patient.inputs);
        expect(existsSync(outs.vmDir)).toBe(false);
        expect(driver.engine.errors()).toEqual([]);
    }, 400_000);
});
