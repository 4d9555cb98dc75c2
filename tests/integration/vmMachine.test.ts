import { mkdtemp, readFile, rm } from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import execa from "execa";
import { buildQemuArgv } from "../../provider/core/qemuArgv";
import { parseVmSpec } from "../../provider/core/vmSpec";
import { readCmdline, readPidfile } from "../../provider/host/qemu/qemuProcess";
import { qmpOnce } from "../../provider/host/qemu/qmp";
import * as vmResource from "../../provider/resources/virtualMachine";
import type { VirtualMachineOutputs } from "../../provider/resources/virtualMachine";
import { ensureTestGuest, guestKernelArguments, READY_MARKER } from "../guest/testGuest";
import { freePort } from "../support/net";

/**
 * vm.machine on real QEMU: the test guest boots on q35 (and says so: its DMI names the Q35
 * chipset) with its NIC serving through a forward; microvm's command line — which needs KVM to
 * boot a guest, so it cannot boot here under TCG — is accepted by QEMU with every device on the
 * PCIe bus it asks for.
 */

let dir: string;
let guest: { kernel: string; initrd: string };
const created: VirtualMachineOutputs[] = [];

beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), "pq-machine-"));
    guest = await ensureTestGuest();
}, 180_000);

afterAll(async () => {
    for (const outs of created) await vmResource.remove("", outs).catch(() => undefined);
    await rm(dir, { recursive: true, force: true });
}, 120_000);

test("the test guest boots on q35: DMI names the chipset, and its NIC answers through a forward", async () => {
    const inputs = {
        vm: {
            name: "q35",
            machine: "q35",
            accel: "tcg",
            kernel: guest.kernel,
            initrd: guest.initrd,
            kernelArguments: guestKernelArguments({ name: "q35" }),
            portForwards: [{ guest: 80 }],
        },
        ready: { serialPattern: READY_MARKER, tcpPort: 80, timeoutSeconds: 180 },
        stateDir: path.join(dir, "q35"),
    };
    expect((await vmResource.check({}, inputs)).failures ?? []).toEqual([]);
    const { outs } = await vmResource.create(inputs);
    created.push(outs);
    console.log(`q35 guest ready in ${outs.readySeconds.toFixed(2)} s`);
    // The running QEMU's own command line, as /proc shows it.
    expect((await readCmdline(outs.pid))?.join(" ")).toContain("-machine q35");
    expect(await readFile(outs.serialLog, "utf8")).toMatch(/DMI: QEMU Standard PC \(Q35 \+ ICH9, 2009\)/);
    await vmResource.remove("", outs);
}, 300_000);

test("QEMU takes microvm's command line: disk, share, NICs, RNG and agent port all on its PCIe bus", async () => {
    const run = path.join(dir, "microvm");
    await execa("mkdir", ["-m", "700", run]);
    await execa("qemu-img", ["create", "-f", "qcow2", path.join(run, "disk.qcow2"), "64M"]);
    const spec = parseVmSpec({
        machine: "microvm",
        accel: "kvm",
        kernel: guest.kernel,
        initrd: guest.initrd,
        disks: [{ path: path.join(run, "disk.qcow2"), format: "qcow2" }],
        shares: [{ source: run, mountTag: "pqshare" }],
        portForwards: [{ host: await freePort(), guest: 80 }],
        agent: "shell",
    });
    const daemon = {
        pidfile: path.join(run, "qemu.pid"),
        qmpSocket: path.join(run, "qmp.sock"),
        serialLog: path.join(run, "serial.log"),
        agentSocket: path.join(run, "agent.sock"),
    };
    // This host has no KVM: the same argv under TCG, held before the guest's first instruction (-S).
    const argv = buildQemuArgv(spec, { accel: "tcg" }, daemon);
    await execa(argv[0], [...argv.slice(1), "-S"], { timeout: 30_000 });
    const pid = await readPidfile(daemon.pidfile);
    try {
        const qtree = String(
            await qmpOnce(daemon.qmpSocket, "human-monitor-command", { "command-line": "info qtree" }, 10_000),
        );
        const onPcie = qtree.slice(qtree.indexOf("dev: gpex-pcihost"));
        for (const device of [
            "virtio-blk-pci",
            "virtio-9p-pci",
            "virtio-net-pci",
            "virtio-rng-pci",
            "virtio-serial-pci",
        ])
            expect(onPcie).toContain(`dev: ${device}`);
        await qmpOnce(daemon.qmpSocket, "quit", undefined, 10_000).catch(() => undefined);
    } finally {
        if (pid) {
            try {
                process.kill(pid, "SIGKILL");
            } catch {
                // already gone after quit
            }
        }
    }
}, 120_000);
