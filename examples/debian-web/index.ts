import * as pulumi from "@pulumi/pulumi";
import * as qemu from "pulumi-qemu";

/**
 * Debian 12 web servers configured only by cloud-init. The root filesystem comes from
 * `sudo node bin/scripts/build-debian-image.js --rootfs DIR` (mmdebstrap); the stack turns it
 * into a bootable ext4 image (owners, setuid bits and device nodes kept), gives each VM a
 * copy-on-write overlay of it and a seed, and boots it with Debian's own kernel.
 * Alternatively set baseImage + baseInputHash to an image the script built and cached.
 */
const config = new pulumi.Config();
const kernel = config.require("kernel");
const initrd = config.require("initrd");
const count = config.getNumber("count") ?? 2;
const firstPort = config.getNumber("firstPort") ?? 18200;
const sshPublicKey = config.get("sshPublicKey");
const accel = (config.get("accel") ?? "auto") as "auto" | "kvm" | "tcg";

const rootfsDir = config.get("rootfsDir");
const base = rootfsDir
    ? new qemu.DiskImage("debian-base", {
          source: { kind: "directory", path: rootfsDir, size: "2G", label: "debian-root", owners: "preserve" },
      })
    : undefined;
const basePath = base ? base.path : pulumi.output(config.require("baseImage"));
const baseInputHash = base ? base.inputHash : pulumi.output(config.require("baseInputHash"));

export const sites: Record<string, string> = {};
export const ssh: Record<string, string> = {};
export const status: Record<string, pulumi.Output<string>> = {};

for (let i = 0; i < count; i++) {
    const name = `debian-web-${i + 1}`;
    const httpPort = firstPort + 2 * i;
    const sshPort = firstPort + 2 * i + 1;
    const disk = new qemu.DiskImage(`${name}-disk`, {
        source: { kind: "overlay", backing: basePath, backingFormat: "raw", backingInputHash: baseInputHash },
    });
    // Everything the VM is told lives here; change it and the seed's inputHash changes, which replaces the VM.
    const seed = new qemu.DiskImage(`${name}-seed`, {
        source: {
            kind: "cloudInit",
            metaData: { "local-hostname": name },
            userData: {
                hostname: name,
                users: [
                    {
                        name: "web",
                        shell: "/bin/bash",
                        ...(sshPublicKey ? { ssh_authorized_keys: [sshPublicKey] } : {}),
                    },
                ],
                write_files: [
                    {
                        path: "/srv/www/index.html",
                        content: `<h1>${name}</h1>\n<p>Debian 12, configured by cloud-init from a pulumi-qemu seed.</p>\n`,
                    },
                ],
                runcmd: [["busybox", "httpd", "-p", "80", "-h", "/srv/www"]],
            },
        },
    });
    const vm = new qemu.VirtualMachine(name, {
        vm: {
            name,
            accel,
            memoryMiB: 768,
            kernel,
            initrd,
            kernelArguments: ["root=/dev/vda", "rw", "console=ttyS0"],
            disks: [
                { path: disk.path, format: "qcow2", inputHash: disk.inputHash },
                { path: seed.path, format: "raw", readOnly: true, inputHash: seed.inputHash },
            ],
            portForwards: [
                { host: httpPort, guest: 80 },
                { host: sshPort, guest: 22 },
            ],
        },
        // Ready once cloud-init's last stage has run (the web server is started by then) and sshd answers.
        ready: { serialPattern: "/Cloud-init v\\. \\S+ finished at/", tcpPort: sshPort, timeoutSeconds: 900 },
    });
    sites[name] = `http://127.0.0.1:${httpPort}/`;
    ssh[name] = `ssh -p ${sshPort} web@127.0.0.1`;
    status[name] = vm.status;
}
