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
// A private network the web VMs share with a client VM that checks them over it; no root
// needed, and no other local user can join it. `privateNetwork: false` keeps the VMs isolated.
const privateNetwork = config.getBoolean("privateNetwork") ?? true;
const lan = privateNetwork ? new qemu.Network("lan", { name: "fleet" }) : undefined;

// One base image built from a folder; never written, since every VM boots an overlay on it.
const base = new qemu.DiskImage("base", {
    source: { kind: "directory", path: config.get("baseDir") ?? sharedDir, size: "64M", label: "base" },
});

export const vms: Record<string, pulumi.Output<string>> = {};
export const addresses: Record<string, string> = {};
const webVms: qemu.VirtualMachine[] = [];

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
            // One more NIC on the private network; its address derives from the VM's name.
            ...(lan ? { networks: [{ network: lan.id }] } : {}),
        },
        ready: { tcpPort: port, ...(readyPattern ? { serialPattern: readyPattern } : {}), timeoutSeconds: 180 },
    });
    vms[name] = vm.status;
    addresses[name] = `http://127.0.0.1:${port}/`;
    webVms.push(vm);
}

// The client fetches every web VM's page over the private network at boot (the test guest's
// pq_check=ADDR), and is ready once all answered.
const webAddresses = lan
    ? pulumi.all(webVms.map((vm) => vm.nics)).apply((all) => all.map((nics) => nics![0].ipv4))
    : undefined;
const client = lan
    ? new qemu.VirtualMachine("client", {
          vm: {
              name: "client",
              accel,
              memoryMiB: 256,
              kernel,
              initrd,
              kernelArguments: webAddresses!.apply((ips) => [
                  ...kernelArguments.map((a) => a.replace(/\{name\}/g, "client")),
                  ...ips.map((ip) => `pq_check=${ip}`),
              ]),
              shares: [{ source: sharedDir, readOnly: true }],
              networks: [{ network: lan.id }],
          },
          ready: { serialPattern: `/pq-check: done, ${count} ok, 0 failed/`, timeoutSeconds: 240 },
      })
    : undefined;

// One more web VM on another machine, reached over SSH: `pulumi config set --path remoteHost.url
// ssh://lab@lab-2:22` (with remoteHost.identityFile / remoteHost.knownHosts if ssh needs them).
// Its kernel and initrd are paths on that machine (remoteKernel/remoteInitrd, default the same
// paths; remoteKernelArguments, default kernelArguments); its port is forwarded on that machine's loopback. It shares no folder and joins no
// network: 9p and the private network are this machine's.
const remoteHost = config.getObject<qemu.HostArgs>("remoteHost");
const remote = remoteHost
    ? new qemu.VirtualMachine("far-1", {
          host: remoteHost,
          vm: {
              name: "far-1",
              accel,
              memoryMiB: 256,
              kernel: config.get("remoteKernel") ?? kernel,
              initrd: config.get("remoteInitrd") ?? initrd,
              kernelArguments: (config.getObject<string[]>("remoteKernelArguments") ?? kernelArguments).map((a) =>
                  a.replace(/\{name\}/g, "far-1"),
              ),
              portForwards: [{ guest: 80 }],
          },
          ready: { ...(readyPattern ? { serialPattern: readyPattern } : {}), timeoutSeconds: 180 },
      })
    : undefined;
/** Where the far VM runs and its status there. */
export const far = remote ? { host: remote.host, status: remote.status, endpoints: remote.endpoints } : undefined;

export const lanSubnet = lan?.subnet;
/** Every VM's /etc/hosts lines on the network, joined: what a seed or share would hand to guests. */
export const hosts = lan
    ? pulumi.all([...webVms, client!].map((vm) => vm.hosts)).apply((hs) => qemu.mergeHosts(hs.map((h) => h!)).text)
    : undefined;
/** The client's console, where it reports each page it fetched over the network. */
export const clientSerialLog = client?.serialLog;

export const sharedMountTag = qemu.mountTag(sharedDir);
