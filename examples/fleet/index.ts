import * as path from "node:path";
import * as pulumi from "@pulumi/pulumi";
import * as qemu from "pulumi-qemu";

// The guest: a kernel and initrd to boot directly (set with `pulumi config set`).
const config = new pulumi.Config();
const kernel = config.require("kernel");
const initrd = config.require("initrd");
// Kernel arguments for every VM; "{name}" becomes the VM's name.
const kernelArguments = config.getObject<string[]>("kernelArguments") ?? [];
// A host folder every VM sees read-only over 9p (its mount tag follows Guix's rule).
const sharedDir = path.resolve(config.require("sharedDir"));
const firstPort = config.getNumber("firstPort") ?? 18080;
const count = config.getNumber("count") ?? 3;
const readyPattern = config.get("readyPattern");
const accel = (config.get("accel") ?? "auto") as "auto" | "kvm" | "tcg";

// One base image built from a folder; never written, since every VM boots an overlay on it.
const base = new qemu.DiskImage("base", {
    source: { kind: "directory", path: config.get("baseDir") ?? sharedDir, size: "64M", label: "base" },
});

export const vms: Record<string, pulumi.Output<string>> = {};
export const addresses: Record<string, string> = {};

for (let i = 0; i < count; i++) {
    const name = `web-${i + 1}`;
    const port = firstPort + i;
    // An overlay per VM: rebuilding the base changes its inputHash, which replaces the overlay.
    const disk = new qemu.DiskImage(`${name}-disk`, {
        source: { kind: "overlay", backing: base.path, backingFormat: "raw", backingInputHash: base.inputHash },
    });
    const vm = new qemu.VirtualMachine(name, {
        vm: {
            name,
            accel,
            memoryMiB: 256,
            kernel,
            initrd,
            kernelArguments: kernelArguments.map((a) => a.replace(/\{name\}/g, name)),
            disks: [{ path: disk.path, format: "qcow2", inputHash: disk.inputHash }],
            shares: [{ source: sharedDir, readOnly: true }],
            portForwards: [{ host: port, guest: 80 }],
        },
        ready: { tcpPort: port, ...(readyPattern ? { serialPattern: readyPattern } : {}), timeoutSeconds: 180 },
    });
    vms[name] = vm.status;
    addresses[name] = `http://127.0.0.1:${port}/`;
}

export const sharedMountTag = qemu.mountTag(sharedDir);
