import { mkdir, mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import * as vmResource from "../../provider/resources/virtualMachine";
import type { VirtualMachineOutputs } from "../../provider/resources/virtualMachine";
import { ensureTestGuest, guestKernelArguments, READY_MARKER, type TestGuest } from "../guest/testGuest";
import { isRunning } from "../support/process";

/**
 * A guest that reboots itself (`reboot -f`, from the test guest's pq-init.sh hook in a share;
 * a marker file in the share makes it happen once). With `vm.onReboot` "restart" (the default)
 * the machine resets inside the same QEMU: readiness waits across the reboot, and afterwards
 * refresh finds the same process running and diff sees no change. With "stop" the reboot ends
 * QEMU (`-no-reboot`), and refresh reports the VM gone.
 */

let work: string;
let guest: TestGuest;
const vms: VirtualMachineOutputs[] = [];

beforeAll(async () => {
    work = await mkdtemp(path.join(os.tmpdir(), "pq-reboot-"));
    guest = await ensureTestGuest();
}, 300_000);

afterAll(async () => {
    for (const outs of vms) await vmResource.remove("", outs).catch(() => undefined);
    await rm(work, { recursive: true, force: true });
}, 60_000);

/** A share whose pq-init.sh reboots the guest the first time it runs (`background`: a moment after boot). */
async function rebootingShare(name: string, background: boolean): Promise<string> {
    const share = path.join(work, name);
    await mkdir(share);
    const reboot = 'touch /pq/rebooted && sync && echo "pq: rebooting now" && reboot -f';
    // `a || ( … ) &` puts the whole list in the background; `a || { …; }` keeps the && chain under the test.
    await writeFile(
        path.join(share, "pq-init.sh"),
        background ? `[ -e /pq/rebooted ] || ( sleep 2; ${reboot} ) &\n` : `[ -e /pq/rebooted ] || { ${reboot}; }\n`,
    );
    return share;
}

function inputs(name: string, share: string, extra: Record<string, unknown> = {}): vmResource.VirtualMachineInputs {
    return {
        stateDir: path.join(work, "state"),
        vm: {
            name,
            accel: "tcg",
            network: "none",
            kernel: guest.kernel,
            initrd: guest.initrd,
            kernelArguments: guestKernelArguments({ name, mounts: [{ tag: "pqshare", at: "/pq" }] }),
            shares: [{ source: share, mountTag: "pqshare" }],
            ...extra,
        },
        ready: { serialPattern: READY_MARKER, timeoutSeconds: 300 },
    };
}

test('onReboot "restart" (default): a guest that reboots during boot is ready after it, in the same QEMU, and stays the same VM', async () => {
    const share = await rebootingShare("restart", false);
    const i = inputs("reboots", share);
    const made = await vmResource.create(i);
    const outs = made.outs as VirtualMachineOutputs;
    vms.push(outs);
    const log = await readFile(outs.serialLog, "utf8");
    // Two boots in one console log: the reboot, then the boot that became ready.
    expect(log.match(/pq: rebooting now/g)).toHaveLength(1);
    expect(log.match(/Linux version \d/g)).toHaveLength(2);
    expect(log.indexOf(READY_MARKER)).toBeGreaterThan(log.indexOf("pq: rebooting now"));
    await stat(path.join(share, "rebooted"));
    const read = await vmResource.read(made.id as string, outs);
    expect(read.id).toBe(made.id);
    expect(read.props).toMatchObject({
        pid: outs.pid,
        processStartTime: outs.processStartTime,
        bootId: outs.bootId,
        status: "running",
    });
    expect(await vmResource.diff(made.id as string, outs, i)).toMatchObject({ changes: false });
    expect(isRunning(outs.pid)).toBe(true);
}, 400_000);

test('onReboot "stop": the guest\'s reboot ends QEMU and refresh reports the VM gone', async () => {
    const share = await rebootingShare("stop", true);
    const made = await vmResource.create(inputs("stops", share, { onReboot: "stop" }));
    const outs = made.outs as VirtualMachineOutputs;
    vms.push(outs);
    const deadline = Date.now() + 120_000;
    while (isRunning(outs.pid) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 250));
    expect(isRunning(outs.pid)).toBe(false);
    expect(await readFile(outs.serialLog, "utf8")).toContain("pq: rebooting now");
    expect(await vmResource.read(made.id as string, outs)).toEqual({ id: "", props: {} });
}, 400_000);
