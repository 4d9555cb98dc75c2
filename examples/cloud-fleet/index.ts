import * as pulumi from "@pulumi/pulumi";
import * as qemu from "pulumi-qemu";

// Debian's cloud image, checked against the SHA512SUMS published beside it. To use a mirror:
// `pulumi config set imageUrl …` and `pulumi config set checksumUrl …`.
const config = new pulumi.Config();
const debianCloud = "https://cloud.debian.org/images/cloud/bookworm/latest";
const image = new qemu.DiskImage("debian", {
    source: {
        kind: "url",
        url: config.get("imageUrl") ?? `${debianCloud}/debian-12-genericcloud-amd64.qcow2`,
        checksumUrl: config.get("checksumUrl") ?? `${debianCloud}/SHA512SUMS`,
    },
});

// A private network with DHCP and DNS: each VM gets an address by DHCP and its name resolves
// as NAME.fleet for the others. Nothing is pinned.
const lan = new qemu.Network("lan", { name: "fleet" });

const names = ["node-1", "node-2", "node-3"];
const vms = names.map((name) => {
    // Each VM writes to its own overlay; the downloaded image is never written to.
    const disk = new qemu.DiskImage(`${name}-disk`, {
        source: { kind: "overlay", backing: image.path, backingInputHash: image.inputHash, size: "4G" },
    });
    // Debian's cloud images have no qemu-guest-agent: install it when it is missing, and start it.
    const seed = new qemu.DiskImage(`${name}-seed`, {
        source: {
            kind: "cloudInit",
            metaData: { "local-hostname": name },
            userData: {
                runcmd: [
                    ["sh", "-c", "command -v qemu-ga || { apt-get update && apt-get install -y qemu-guest-agent; }"],
                    ["systemctl", "start", "qemu-guest-agent"],
                ],
            },
        },
    });
    return new qemu.VirtualMachine(name, {
        vm: {
            name,
            memoryMiB: 512,
            // No kernel: the firmware boots the disk, as with any cloud image.
            disks: [
                { path: disk.path, format: "qcow2", inputHash: disk.inputHash },
                { path: seed.path, format: "raw", readOnly: true, inputHash: seed.inputHash },
            ],
            networks: [{ network: lan.id }],
            agent: "qga",
        },
        // Ready once cloud-init has finished (the agent is running by then). Under TCG, minutes.
        ready: { agent: true, command: "test -e /var/lib/cloud/instance/boot-finished", timeoutSeconds: 1800 },
    });
});

// In each VM, once all three are up: its DHCP address, then the other two by name.
const checks = names.map((name) => {
    const peers = names.filter((peer) => peer !== name).map((peer) => `${peer}.fleet`);
    return new qemu.GuestCommand(
        `${name}-check`,
        {
            vm: vms[names.indexOf(name)],
            create: `set -e; ip -4 -o addr show scope global; for p in ${peers.join(" ")}; do getent hosts $p; ping -c 1 -W 5 $p; done`,
        },
        { dependsOn: vms },
    );
});

/** Each VM's address on the network: known at preview, and what DHCP hands it. */
export const addresses = Object.fromEntries(names.map((name) => [name, lan.addressOf(name).ipv4]));
/** What each VM saw: its addresses, its peers' names resolved, and a ping of each. */
export const reports = Object.fromEntries(names.map((name, i) => [name, checks[i].stdout]));
