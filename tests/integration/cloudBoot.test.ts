import execa from "execa";
import { mkdtemp, readFile, rm, stat } from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import * as image from "../../provider/resources/diskImage";
import type { DiskImageOutputs } from "../../provider/resources/diskImage";
import * as vmResource from "../../provider/resources/virtualMachine";
import type { VirtualMachineOutputs } from "../../provider/resources/virtualMachine";
import { QgaChannel } from "../../provider/host/guest/qgaChannel";
import { USER_NIC_MAC } from "../../provider/core/qemuArgv";
import { cloudVm, ensureCloudGuest, type CloudGuest } from "../guest/cloudGuest";

/**
 * The cloud-like image (tests/guest/cloudGuest.ts) booted as a user boots a downloaded cloud
 * image: no `kernel`, a qcow2 overlay on the image as the first disk, a NoCloud seed after it,
 * the firmware finding GRUB on the disk — SeaBIOS through the BIOS boot partition, OVMF
 * through \EFI\BOOT\BOOTX64.EFI. The BIOS guest reboots itself once during its first boot
 * (cloud-init's power_state): readiness spans the reboot, and afterwards the VM is the same VM
 * (pid, process identity, refresh says running, no diff). The two VMs boot at once to share
 * the wait; each is a full Debian boot under TCG (minutes on this shared machine).
 */

let work: string;
let guest: CloudGuest;
const images: DiskImageOutputs[] = [];
const vms: VirtualMachineOutputs[] = [];

interface Booted {
    inputs: vmResource.VirtualMachineInputs;
    outs: VirtualMachineOutputs;
    id: string;
}
let bios: PromiseSettledResult<Booted>;
let uefi: PromiseSettledResult<Booted>;

/** One line per boot, appended by cloud-init's bootcmd (which runs on every boot). */
const BOOTS = "/var/lib/pq-boots";

async function boot(
    name: string,
    stateDir: string,
    extraVm: Record<string, unknown>,
    userData: Record<string, unknown>,
    ready: Record<string, unknown>,
): Promise<Booted> {
    const overlay = await image.createDiskImage({
        stateDir,
        source: { kind: "overlay", backing: guest.image, backingFormat: "qcow2", backingInputHash: guest.inputHash },
    });
    images.push(overlay);
    const seed = await image.createDiskImage({
        stateDir,
        source: { kind: "cloudInit", userData, metaData: { "local-hostname": name } },
    });
    images.push(seed);
    const inputs: vmResource.VirtualMachineInputs = {
        stateDir,
        vm: cloudVm(name, overlay, seed, { agent: "qga", ...extraVm }),
        ready: { timeoutSeconds: 1200, ...ready },
    };
    const made = await vmResource.create(inputs);
    const outs = made.outs as VirtualMachineOutputs;
    vms.push(outs);
    return { inputs, outs, id: made.id as string };
}

async function guestRun(outs: VirtualMachineOutputs, command: string): Promise<string> {
    const channel = new QgaChannel(outs.agentSocket!);
    try {
        const r = await channel.execute(command, { timeoutSeconds: 60 });
        if (r.exitCode !== 0) throw new Error(`${command} exited ${r.exitCode}: ${r.stderr.toString("utf8")}`);
        return r.stdout.toString("utf8");
    } finally {
        channel.close();
    }
}

beforeAll(async () => {
    work = await mkdtemp(path.join(os.tmpdir(), "pq-cloud-"));
    const t0 = Date.now();
    guest = await ensureCloudGuest();
    process.stderr.write(
        `cloud-like image: ${guest.image} (${guest.buildSeconds ? `built in ${guest.buildSeconds} s` : `cached, ${((Date.now() - t0) / 1000).toFixed(1)} s`})\n`,
    );
    const stateDir = path.join(work, "state");
    const bootcmd = [`echo boot >> ${BOOTS}`];
    [bios, uefi] = await Promise.allSettled([
        boot(
            "cloud-bios",
            stateDir,
            {},
            // Reboots once, at the end of the first boot, as cloud-init setups that install a kernel do.
            {
                bootcmd,
                power_state: {
                    mode: "reboot",
                    delay: "now",
                    message: "pq: rebooting once",
                    condition: `test "$(wc -l < ${BOOTS})" -lt 2`,
                },
            },
            {
                agent: true,
                command: `test "$(wc -l < ${BOOTS})" -ge 2 && test -e /var/lib/cloud/instance/boot-finished`,
            },
        ),
        boot(
            "cloud-uefi",
            stateDir,
            { firmware: "uefi" },
            { bootcmd },
            { agent: true, command: "test -e /var/lib/cloud/instance/boot-finished" },
        ),
    ]);
}, 40 * 60_000);

afterAll(async () => {
    for (const outs of vms) await vmResource.remove("", outs).catch(() => undefined);
    for (const outs of images) await image.removeImage(outs).catch(() => undefined);
    await rm(work, { recursive: true, force: true });
}, 180_000);

function value(r: PromiseSettledResult<Booted>): Booted {
    if (r.status === "rejected") throw r.reason;
    return r.value;
}

test("BIOS: GRUB from the disk boots the image, the guest reboots itself once, and it is still the same VM", async () => {
    const { inputs, outs, id } = value(bios);
    process.stderr.write(`BIOS boot with one reboot, to ready: ${outs.readySeconds.toFixed(1)} s\n`);
    // Two boots in one console log, one QEMU process.
    const log = await readFile(outs.serialLog, "utf8");
    expect(log.match(/Linux version \d/g)?.length).toBe(2);
    // systemd's last word before the reset (cloud-init's power_state message goes to its log, not the console).
    expect(log.match(/reboot: Restarting system/g)).toHaveLength(1);
    expect((await guestRun(outs, `cat ${BOOTS}`)).trim().split("\n")).toHaveLength(2);
    expect(await guestRun(outs, "test -d /sys/firmware/efi && echo uefi || echo bios")).toBe("bios\n");
    // Refresh finds the same process, running; diff sees nothing to do.
    const read = await vmResource.read(id, outs);
    expect(read.id).toBe(id);
    expect(read.props).toMatchObject({ pid: outs.pid, processStartTime: outs.processStartTime, status: "running" });
    expect(await vmResource.diff(id, outs, inputs)).toMatchObject({ changes: false });
    // The uplink: the fixed MAC, configured by DHCP (systemd-networkd's match-all config).
    expect(outs.userNicMac).toBe(USER_NIC_MAC);
    const links = await guestRun(outs, "ip -o link; ip -o -4 addr");
    expect(links).toContain(`link/ether ${USER_NIC_MAC}`);
    expect(links).toMatch(/inet 10\.0\.2\.15\/24 .*dynamic/);
}, 120_000);

test("UEFI: OVMF boots the same image from its EFI system partition, with the VM's own variable store", async () => {
    const { inputs, outs, id } = value(uefi);
    process.stderr.write(`UEFI boot to ready: ${outs.readySeconds.toFixed(1)} s\n`);
    expect(await guestRun(outs, "test -d /sys/firmware/efi && echo uefi || echo bios")).toBe("uefi\n");
    const vars = path.join(outs.vmDir, "uefi-vars.fd");
    const st = await stat(vars);
    expect(st.mode & 0o777).toBe(0o600);
    expect(st.size).toBe((await stat("/usr/share/OVMF/OVMF_VARS_4M.fd")).size);
    expect((await vmResource.read(id, outs)).props).toMatchObject({ pid: outs.pid, status: "running" });
    expect(await vmResource.diff(id, outs, inputs)).toMatchObject({ changes: false });
    // The variable store goes with its VM.
    await vmResource.remove(id, outs);
    vms.splice(vms.indexOf(outs), 1);
    await expect(stat(vars)).rejects.toMatchObject({ code: "ENOENT" });
    await expect(stat(outs.vmDir)).rejects.toMatchObject({ code: "ENOENT" });
}, 180_000);

test("the image's own packages: cloud-init, qemu-guest-agent, sshd, no GRUB package (GRUB is placed by the builder)", async () => {
    const packages = await readFile(guest.packages, "utf8");
    for (const p of ["cloud-init", "qemu-guest-agent", "openssh-server", "linux-image-cloud-amd64", "systemd"])
        expect(packages).toMatch(new RegExp(`^${p} `, "m"));
    const info = JSON.parse((await execa("qemu-img", ["info", "--output=json", guest.image])).stdout);
    expect(info.format).toBe("qcow2");
});
