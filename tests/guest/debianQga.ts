import execa from "execa";
import { readFile } from "node:fs/promises";
import * as path from "node:path";
import { createDiskImage, removeImage } from "../../provider/resources/diskImage";
import type { DiskImageOutputs } from "../../provider/resources/diskImage";
import * as vmResource from "../../provider/resources/virtualMachine";
import type { VirtualMachineOutputs } from "../../provider/resources/virtualMachine";
import { freePort } from "../support/net";
import { debianOverlay, debianVm, ensureDebianGuest, guestSshArgs } from "./debianGuest";

/**
 * One Debian 12 guest with `vm.agent: "qga"` (Debian's own qemu-guest-agent, started by udev
 * when the virtio port appears) and sshd reachable on a forwarded 127.0.0.1 port as user
 * `tester` with a key generated here: what the qga tests and the qga-vs-ssh benchmark share.
 * Ready when qemu-ga answers and cloud-init's final stage is done (the user and key exist).
 */

export interface DebianQgaVm {
    outs: VirtualMachineOutputs;
    /** The VirtualMachine's id (its directory's name). */
    id: string;
    sshPort: number;
    /** Private key for tester@127.0.0.1:sshPort. */
    key: string;
    /** ssh options reaching the guest (no host-key prompts), to put before the command. */
    sshArgs: string[];
    stop(): Promise<void>;
}

export async function bootDebianQga(work: string, name = "debian-qga"): Promise<DebianQgaVm> {
    const guest = await ensureDebianGuest();
    const stateDir = path.join(work, "state");
    const key = path.join(work, "id_ed25519");
    await execa("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", "pq-test", "-f", key]);
    const publicKey = (await readFile(`${key}.pub`, "utf8")).trim();
    const images: DiskImageOutputs[] = [];
    let outs: VirtualMachineOutputs | undefined;
    const stop = async () => {
        if (outs) await vmResource.remove("", outs).catch(() => undefined);
        for (const i of images) await removeImage(i).catch(() => undefined);
    };
    try {
        const overlay = await debianOverlay(guest, stateDir);
        images.push(overlay);
        const userData = {
            hostname: name,
            users: [{ name: "tester", shell: "/bin/bash", ssh_authorized_keys: [publicKey] }],
        };
        const seed = await createDiskImage({
            stateDir,
            source: { kind: "cloudInit", userData, metaData: { "local-hostname": name } },
        });
        images.push(seed);
        const sshPort = await freePort();
        const made = await vmResource.create({
            stateDir,
            vm: debianVm(guest, name, overlay, seed, { agent: "qga", portForwards: [{ host: sshPort, guest: 22 }] }),
            ready: {
                serialPattern: "/Cloud-init v\\. \\S+ finished at/",
                agent: true,
                tcpPort: sshPort,
                timeoutSeconds: 600,
            },
        });
        outs = made.outs as VirtualMachineOutputs;
        const sshArgs = guestSshArgs(key, sshPort);
        return { outs, id: made.id as string, sshPort, key, sshArgs, stop };
    } catch (err) {
        await stop();
        throw err;
    }
}
