import { copyFile, rm, writeFile } from "node:fs/promises";
import * as path from "node:path";
import { createDiskImage } from "../../provider/resources/diskImage";
import {
    cachedBuild,
    oncePerProcess,
    progressLog,
    type GuestOptions,
    guestCacheRoot,
    type BuildRecord,
} from "./imageCache";
import { mmdebstrap, packageList, requireRootForBuild } from "./mmdebstrap";

/**
 * A real Debian 12 guest: a root filesystem made by mmdebstrap from Debian's packages
 * (systemd, cloud-init, qemu-guest-agent, openssh-server, …) and turned into a bootable ext4
 * image by our own DiskImage `directory` source with `owners: "preserve"` — Guix's
 * system-image idea. It boots with its own kernel and initrd (`root=/dev/vda`) and is
 * configured at first boot by a cloud-init seed.
 *
 * Built once per machine and cached outside the repository, under
 * `${PQ_DEBIAN_CACHE:-${XDG_CACHE_HOME:-~/.cache}/pulumi-qemu-tests}/debian-<recipe>-<release>`:
 * `<recipe>` hashes everything below, `<release>` the mirror's Release file for the suite, which
 * changes exactly when its package versions do (a point release). The image is never booted
 * directly: boot an overlay on it (DiskImage `overlay` with `backingInputHash`).
 */

export interface DebianGuest {
    /** The ext4 root filesystem (raw). Read-only: put an overlay on it. */
    image: string;
    /** The image's DiskImage inputHash: wire it as an overlay's backingInputHash. */
    inputHash: string;
    kernel: string;
    initrd: string;
    /** `root=/dev/vda rw console=ttyS0`: the root disk must be the first virtio disk. */
    kernelArguments: string[];
    /** `dpkg-query -W` of the image: package and version, one a line. */
    packages: string;
    cacheDir: string;
    /** Seconds the build took (0 when it came from the cache). */
    buildSeconds: number;
}

export const DEBIAN_PACKAGES = [
    "systemd",
    "systemd-sysv",
    "udev",
    "dbus",
    "cloud-init",
    "qemu-guest-agent",
    "openssh-server",
    "iproute2",
    "ifupdown",
    "isc-dhcp-client",
    "busybox",
    "curl",
    "e2fsprogs",
    "linux-image-amd64",
    "initramfs-tools",
];

/** Modules the initramfs needs to mount a virtio root (MODULES=list keeps it ~7 MB instead of ~30). */
const INITRAMFS_MODULES = ["virtio_pci", "virtio_blk", "crc32c_generic", "ext4"];

/** Written into /etc/cloud/cloud.cfg.d: only NoCloud is looked for, and nothing needs the locales package. */
const CLOUD_CFG = "datasource_list: [ NoCloud, None ]\nlocale: C.UTF-8\n";

export const DEBIAN_RECIPE = {
    format: 1,
    suite: "bookworm",
    mirror: process.env.PQ_DEBIAN_MIRROR ?? "http://deb.debian.org/debian",
    variant: "apt",
    packages: DEBIAN_PACKAGES,
    initramfsModules: INITRAMFS_MODULES,
    cloudCfg: CLOUD_CFG,
    // Documentation, manual pages and translations are left out (a third of the tree).
    pathExcludes: ["/usr/share/man/*", "/usr/share/doc/*", "/usr/share/locale/*", "/usr/share/info/*"],
    imageSize: "2G",
    label: "debian-root",
};

export const DEBIAN_KERNEL_ARGUMENTS = ["root=/dev/vda", "rw", "console=ttyS0"];

/**
 * A VM spec booting the Debian guest directly: its overlay as the first virtio disk (the root,
 * `root=/dev/vda`) and a cloud-init seed read-only after it, with 768 MiB. `extra` adds fields
 * (agent, portForwards).
 */
export function debianVm(
    guest: Pick<DebianGuest, "kernel" | "initrd" | "kernelArguments">,
    name: string,
    overlay: { path: string; inputHash: string },
    seed: { path: string; inputHash: string },
    extra: Record<string, unknown> = {},
) {
    return {
        name,
        accel: "tcg",
        memoryMiB: 768,
        kernel: guest.kernel,
        initrd: guest.initrd,
        kernelArguments: guest.kernelArguments,
        disks: [
            { path: overlay.path, format: "qcow2", inputHash: overlay.inputHash },
            { path: seed.path, format: "raw", readOnly: true, inputHash: seed.inputHash },
        ],
        ...extra,
    };
}

/** A qcow2 overlay on the Debian image, made by DiskImage in `stateDir`: the root disk of one VM (debianVm's `overlay`). */
export function debianOverlay(guest: Pick<DebianGuest, "image" | "inputHash">, stateDir: string) {
    return createDiskImage({
        stateDir,
        source: { kind: "overlay", backing: guest.image, backingFormat: "raw", backingInputHash: guest.inputHash },
    });
}

/** ssh options that reach a test guest's sshd on a forwarded 127.0.0.1 port with `key`: no host-key prompts, no password, a connect deadline. */
export function guestSshArgs(key: string, port: number): string[] {
    return [
        "-i",
        key,
        "-p",
        String(port),
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "BatchMode=yes",
        "-o",
        "ConnectTimeout=15",
        "-o",
        "LogLevel=ERROR",
    ];
}

/** Where the test guests are cached (imageCache.ts): `${PQ_DEBIAN_CACHE:-${XDG_CACHE_HOME:-~/.cache}/pulumi-qemu-tests}`. */
export const debianCacheRoot = guestCacheRoot;

export type DebianOptions = GuestOptions;

/** Builds the Debian guest on first use on this machine (a few minutes), else returns the cached one. */
export const ensureDebianGuest: (opts?: DebianOptions) => Promise<DebianGuest> = oncePerProcess(buildOrReuse);

interface Done extends BuildRecord {
    inputHash: string;
}

async function buildOrReuse(opts: DebianOptions): Promise<DebianGuest> {
    const log = progressLog("debian-guest", opts.log);
    const { dir, done, built } = await cachedBuild<Done>({
        root: opts.cacheRoot,
        prefix: "debian",
        recipe: DEBIAN_RECIPE,
        mirror: DEBIAN_RECIPE.mirror,
        suite: DEBIAN_RECIPE.suite,
        log,
        build: (d, release) => build(d, release, log),
    });
    if (built) log(`Debian guest ready in ${done.buildSeconds} s: ${path.join(dir, "root.raw")}`);
    return describe(dir, done, built ? done.buildSeconds : 0);
}

function describe(dir: string, done: Done, buildSeconds: number): DebianGuest {
    return {
        image: path.join(dir, "root.raw"),
        inputHash: done.inputHash,
        kernel: path.join(dir, "vmlinuz"),
        initrd: path.join(dir, "initrd.img"),
        kernelArguments: [...DEBIAN_KERNEL_ARGUMENTS],
        packages: path.join(dir, "packages.txt"),
        cacheDir: dir,
        buildSeconds,
    };
}

async function build(dir: string, release: string, log: (line: string) => void): Promise<Done> {
    const t0 = Date.now();
    const rootfs = path.join(dir, "rootfs");
    const r = DEBIAN_RECIPE;
    log(`building Debian ${r.suite} (${release}) into ${dir}: mmdebstrap ${r.packages.length} packages`);
    const boot = await mmdebstrapRootfs(rootfs, log);
    await copyFile(boot.kernel, path.join(dir, "vmlinuz"));
    await copyFile(boot.initrd, path.join(dir, "initrd.img"));
    await writeFile(path.join(dir, "packages.txt"), await packageList(rootfs));
    log(`mmdebstrap done; making the ext4 image with DiskImage (directory source, owners: "preserve")`);
    const image = await createDiskImage({
        path: path.join(dir, "root.raw"),
        stateDir: path.join(dir, "state"),
        source: { kind: "directory", path: rootfs, size: r.imageSize, label: r.label, owners: "preserve" },
    });
    await rm(rootfs, { recursive: true, force: true });
    return { inputHash: image.inputHash, buildSeconds: Math.round((Date.now() - t0) / 100) / 10, release };
}

/**
 * The recipe's root filesystem, made by mmdebstrap (as root: owners and device nodes are real)
 * into `rootfs`, which must not exist or be empty. Returns its kernel and initrd.
 */
export async function mmdebstrapRootfs(
    rootfs: string,
    log: (line: string) => void,
): Promise<{ kernel: string; initrd: string }> {
    requireRootForBuild("the Debian guest");
    const r = DEBIAN_RECIPE;
    const moduleLines = r.initramfsModules.join("\\n");
    const essential = [
        'mkdir -p "$1/etc/initramfs-tools/conf.d"',
        'echo MODULES=list > "$1/etc/initramfs-tools/conf.d/pulumi-qemu.conf"',
        `printf '${moduleLines}\\n' >> "$1/etc/initramfs-tools/modules"`,
    ].join(" && ");
    const customize = [
        'mkdir -p "$1/etc/cloud/cloud.cfg.d"',
        `printf '%s' '${r.cloudCfg}' > "$1/etc/cloud/cloud.cfg.d/90-pulumi-qemu.cfg"`,
        `printf '/dev/vda / ext4 rw,errors=remount-ro 0 1\\n' > "$1/etc/fstab"`,
        'echo debian > "$1/etc/hostname"',
        // Host keys made during the build would be shared by every VM: cloud-init makes them per instance.
        'rm -f "$1"/etc/ssh/ssh_host_*',
        ': > "$1/etc/machine-id"',
    ].join(" && ");
    return mmdebstrap(r, { essential, customize }, rootfs, log);
}
