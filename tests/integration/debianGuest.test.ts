import execa from "execa";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import { parseDiskImageSpec } from "../../provider/resources/diskImage/spec";
import * as image from "../../provider/resources/diskImage";
import type { DiskImageOutputs } from "../../provider/resources/diskImage";
import * as vmResource from "../../provider/resources/virtualMachine";
import type { VirtualMachineOutputs } from "../../provider/resources/virtualMachine";
import { debianVm, ensureDebianGuest, guestSshArgs, type DebianGuest } from "../guest/debianGuest";
import { freePort, httpGetWhenUp } from "../support/net";
import { isRunning } from "../support/process";

/**
 * The real Debian 12 guest (tests/guest/debianGuest.ts), configured only by a cloud-init seed
 * DiskImage: systemd reaches multi-user.target from an image our directory source made, the
 * seed sets the hostname, makes a user with our SSH key, writes a page and starts a web server,
 * and the host checks all of it through forwarded ports with Debian's ssh client. Changing the
 * user data replaces the seed and, through disks[].inputHash, the VM — which applies the new
 * settings on the same persistent overlay, because the instance-id changed with them. The first
 * seed is an ISO, the second a FAT image: cloud-init reads both.
 *
 * Two Debian boots under TCG, about a minute and a half each here.
 */

const FINAL_STAGE = "/Cloud-init v\\. \\S+ finished at/";

let work: string;
let guest: DebianGuest;
let key: string;
let publicKey: string;
const vms: VirtualMachineOutputs[] = [];
const images: DiskImageOutputs[] = [];

beforeAll(async () => {
    work = await mkdtemp(path.join(os.tmpdir(), "pq-debian-"));
    guest = await ensureDebianGuest();
    key = path.join(work, "id_ed25519");
    await execa("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", "pq-test", "-f", key]);
    publicKey = (await readFile(`${key}.pub`, "utf8")).trim();
}, 20 * 60_000);

afterAll(async () => {
    for (const outs of vms) await vmResource.remove("", outs).catch(() => undefined);
    for (const outs of images) await image.removeImage(outs).catch(() => undefined);
    await rm(work, { recursive: true, force: true });
}, 120_000);

function userData(name: string) {
    return {
        hostname: name,
        users: [{ name: "tester", shell: "/bin/bash", ssh_authorized_keys: [publicKey] }],
        write_files: [
            { path: "/srv/www/index.html", content: `hello from ${name}\n` },
            { path: "/etc/pq-note", content: `written by the seed for ${name}\n`, permissions: "0644" },
        ],
        runcmd: [["busybox", "httpd", "-p", "8080", "-h", "/srv/www"]],
    };
}

async function ssh(port: number, command: string): Promise<string> {
    const args = guestSshArgs(key, port);
    const until = Date.now() + 90_000;
    for (;;) {
        const r = await execa("ssh", [...args, "tester@127.0.0.1", command], {
            reject: false,
            timeout: 60_000,
            stdin: "ignore",
        });
        if (r.exitCode === 0) return r.stdout.trim();
        // sshd can come up a moment after cloud-init reports its final stage, or refuse until the user exists.
        if (Date.now() > until) throw new Error(`ssh ${command} failed (exit ${r.exitCode}): ${r.stderr}`);
        await new Promise((res) => setTimeout(res, 2000));
    }
}

test(
    "Debian boots from our directory image, is configured by the seed, and a changed seed replaces the VM and applies",
    async () => {
        const stateDir = path.join(work, "state");
        const overlayInputs = {
            stateDir,
            source: { kind: "overlay", backing: guest.image, backingFormat: "raw", backingInputHash: guest.inputHash },
        };
        const overlay = await image.createDiskImage(overlayInputs);
        images.push(overlay);
        const seedInputs = (name: string, format = "iso") => ({
            stateDir,
            source: { kind: "cloudInit", userData: userData(name), metaData: { "local-hostname": name }, format },
        });
        const seedA = await image.createDiskImage(seedInputs("deb-a"));
        images.push(seedA);

        const sshPort = await freePort();
        const httpPort = await freePort();
        const vmInputs = (seed: DiskImageOutputs) => ({
            stateDir,
            vm: debianVm(guest, "debian", overlay, seed, {
                portForwards: [
                    { host: sshPort, guest: 22 },
                    { host: httpPort, guest: 8080 },
                ],
            }),
            // sshd's banner answers on the port; the console says when cloud-init's last stage is done.
            ready: { serialPattern: FINAL_STAGE, tcpPort: sshPort, timeoutSeconds: 600 },
        });

        const t0 = Date.now();
        const a = (await vmResource.create(vmInputs(seedA))).outs as VirtualMachineOutputs;
        vms.push(a);
        console.log(
            `Debian boot to cloud-init final stage under ${a.accel}: ${((Date.now() - t0) / 1000).toFixed(1)} s`,
        );

        const consoleA = vmResource.cleanConsole(await readFile(a.serialLog, "utf8"));
        expect(consoleA).toMatch(/DataSourceNoCloud \[seed=\/dev\/vdb\]/);
        expect(await ssh(sshPort, "hostname")).toBe("deb-a");
        // systemd finished booting with no failed unit (the list after "running" is empty), multi-user.target reached.
        expect(
            await ssh(
                sshPort,
                "systemctl is-system-running --wait; systemctl --failed --no-legend --plain; systemctl is-active multi-user.target",
            ),
        ).toBe("running\nactive");
        expect(await ssh(sshPort, "id -un; cat /etc/pq-note")).toBe("tester\nwritten by the seed for deb-a");
        // Owners, setuid bits and modes survived the directory image: sudo-less su is setuid root, shadow is not world-readable.
        expect(await ssh(sshPort, "stat -c '%U:%G %a' /usr/bin/su /etc/shadow /home/tester")).toBe(
            "root:root 4755\nroot:shadow 640\ntester:tester 755",
        );
        const seedSpecA = parseDiskImageSpec(seedInputs("deb-a")).source;
        expect(await ssh(sshPort, "cat /var/lib/cloud/data/instance-id")).toBe(
            seedSpecA.kind === "cloudInit" ? seedSpecA.instanceId : "?",
        );
        expect(await httpGetWhenUp(`http://127.0.0.1:${httpPort}/index.html`, 60_000)).toMatchObject({
            status: 200,
            body: "hello from deb-a\n",
        });

        // A no-op: nothing to change for the images or the VM.
        expect(await image.diffImage(seedA.path, seedA, seedInputs("deb-a"))).toEqual({ changes: false });
        expect(await image.diffImage(overlay.path, overlay, overlayInputs)).toEqual({ changes: false });
        expect(await vmResource.diff("", a, vmInputs(seedA))).toEqual({ changes: false });

        // New user data: a new seed, and the VM that boots it is replaced (stopped first: it holds ports and a writable disk).
        expect(await image.diffImage(seedA.path, seedA, seedInputs("deb-b"))).toMatchObject({
            changes: true,
            replaces: ["source"],
        });
        // This one as a FAT image, the other format cloud-init's NoCloud reads.
        const seedB = await image.createDiskImage(seedInputs("deb-b", "vfat"));
        images.push(seedB);
        expect(seedB.inputHash).not.toBe(seedA.inputHash);
        expect(await vmResource.diff("", a, vmInputs(seedB))).toEqual({
            changes: true,
            replaces: ["vm"],
            deleteBeforeReplace: true,
        });
        await vmResource.remove("", a);
        expect(isRunning(a.pid)).toBe(false);

        const t1 = Date.now();
        const b = (await vmResource.create(vmInputs(seedB))).outs as VirtualMachineOutputs;
        vms.push(b);
        console.log(
            `Debian second boot (same overlay, new seed) to cloud-init final stage: ${((Date.now() - t1) / 1000).toFixed(1)} s`,
        );
        // The same overlay (cloud-init's state from the first boot is on it): the new instance-id made it apply the new seed.
        expect(vmResource.cleanConsole(await readFile(b.serialLog, "utf8"))).toMatch(
            /DataSourceNoCloud \[seed=\/dev\/vdb\]/,
        );
        expect(await ssh(sshPort, "hostname")).toBe("deb-b");
        expect(await ssh(sshPort, "cat /etc/pq-note")).toBe("written by the seed for deb-b");
        const seedSpecB = parseDiskImageSpec(seedInputs("deb-b", "vfat")).source;
        expect(await ssh(sshPort, "cat /var/lib/cloud/data/instance-id")).toBe(
            seedSpecB.kind === "cloudInit" ? seedSpecB.instanceId : "?",
        );
        expect(await httpGetWhenUp(`http://127.0.0.1:${httpPort}/index.html`, 60_000)).toMatchObject({
            status: 200,
            body: "hello from deb-b\n",
        });
        await vmResource.remove("", b);
        expect(isRunning(b.pid)).toBe(false);
    },
    30 * 60_000,
);
