import execa from "execa";
import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { cp, mkdir, open, readFile, rm, writeFile } from "node:fs/promises";
import * as path from "node:path";
import { createDiskImage, removeImage } from "../../provider/resources/diskImage";
import { cachedBuild, oncePerProcess, progressLog, type GuestOptions, type BuildRecord } from "./imageCache";
import { mmdebstrap, packageList, requireRootForBuild } from "./mmdebstrap";

/**
 * A cloud-like Debian 12 disk image, built here from Debian's packages because the tests
 * cannot reach cloud.debian.org: the shape of Debian's `genericcloud` image. One qcow2 file
 * holding a GPT disk — partition 14 a BIOS boot partition with GRUB's core image, partition 15
 * an EFI system partition with GRUB as \EFI\BOOT\BOOTX64.EFI, partition 1 the ext4 root
 * (label `cloud-root`) with systemd, cloud-init (NoCloud only), qemu-guest-agent,
 * openssh-server and systemd-networkd doing DHCP on every NIC. It boots without `kernel`,
 * under SeaBIOS (`vm.firmware: "bios"`) and OVMF (`"uefi"`) alike, exactly as a downloaded
 * cloud image does.
 *
 * Built as root (mmdebstrap's root mode; CI runs as root) once per machine, cached like the
 * direct-boot Debian guest (imageCache.ts): keyed by this recipe, the mirror's Release date and
 * the host's GRUB version, built under a partial name and renamed into place when done.
 * GRUB is the host's (grub-pc-bin, grub-efi-amd64-bin): its images are made with grub-mkimage
 * and placed by hand, so no loop device or bootloader installer touching host disks is needed.
 * The guest has no GRUB package, so a kernel upgrade inside it would not update grub.cfg: a
 * test image, not a distribution.
 */

export interface CloudGuest {
    /** The disk (qcow2). Read-only: boot an overlay on it. */
    image: string;
    format: "qcow2";
    /** An identity for the image (sha256 of its bytes): wire it as an overlay's backingInputHash. */
    inputHash: string;
    /** sha512 of the qcow2 file, hex: what a SHA512SUMS line for it holds. */
    sha512: string;
    /** `dpkg-query -W` of the image: package and version, one a line. */
    packages: string;
    cacheDir: string;
    /** Seconds the build took (0 when it came from the cache). */
    buildSeconds: number;
}

export const CLOUD_PACKAGES = [
    "systemd",
    "systemd-sysv",
    "udev",
    "dbus",
    "cloud-init",
    "qemu-guest-agent",
    "openssh-server",
    "sudo",
    "iproute2",
    // Names from the network's DNS (DHCP's DNS server reaches resolv.conf through resolved), and
    // ping: both in Debian's genericcloud image, which the fleet example relies on.
    "systemd-resolved",
    "iputils-ping",
    "e2fsprogs",
    // The kernel Debian's cloud images run: virtio and the common clouds' drivers, nothing for bare metal.
    "linux-image-cloud-amd64",
    "initramfs-tools",
];

export const CLOUD_ROOT_LABEL = "cloud-root";
const KERNEL_ARGUMENTS = `root=LABEL=${CLOUD_ROOT_LABEL} ro console=tty0 console=ttyS0,115200`;

/** What the initramfs needs to mount a virtio root by label (MODULES=list keeps it small). */
const INITRAMFS_MODULES = ["virtio_pci", "virtio_blk", "virtio_scsi", "sd_mod", "crc32c_generic", "ext4"];

/**
 * Only NoCloud is looked for (no minutes of probing metadata servers), nothing needs the locales
 * package, and cloud-init writes its network config for systemd-networkd.
 */
const CLOUD_CFG = [
    "datasource_list: [ NoCloud, None ]",
    "locale: C.UTF-8",
    "system_info:",
    "  network:",
    "    renderers: [ networkd ]",
    "",
].join("\n");

/**
 * DHCP on every NIC, as genericcloud does. cloud-init's own files (10-cloud-init-*.network) sort
 * first, so a seed's network-config still wins for the NICs it names.
 */
const DHCP_ALL = ["[Match]", "Name=en* eth*", "", "[Network]", "DHCP=ipv4", ""].join("\n");

/** A NIC that never gets an address (a private network without DHCP) must not hold the boot for two minutes. */
const WAIT_ONLINE_ANY = [
    "[Service]",
    "ExecStart=",
    "ExecStart=/lib/systemd/systemd-networkd-wait-online --any --timeout=30",
    "",
].join("\n");

const GRUB_CFG = [
    "set timeout=0",
    "serial --unit=0 --speed=115200",
    "terminal_input serial console",
    "terminal_output serial console",
    'menuentry "Debian GNU/Linux 12 (pulumi-qemu cloud-like test image)" {',
    `    search --no-floppy --label ${CLOUD_ROOT_LABEL} --set=root`,
    `    linux @KERNEL@ ${KERNEL_ARGUMENTS}`,
    "    initrd @INITRD@",
    "}",
    "",
].join("\n");

/** Embedded in both GRUB images: find the root by label and read /boot/grub from it. */
const GRUB_EARLY_CFG = `search --no-floppy --label ${CLOUD_ROOT_LABEL} --set=root\nset prefix=($root)/boot/grub\n`;
const GRUB_MODULES = [
    "part_gpt",
    "ext2",
    "search",
    "search_label",
    "normal",
    "configfile",
    "linux",
    "echo",
    "serial",
    "terminal",
    "gzio",
];

/** The disk layout in 512-byte sectors: Debian genericcloud's partition numbers. */
const LAYOUT = { biosStart: 2048, biosSectors: 6144, espStart: 8192, espSectors: 131072, rootStart: 139264 };
const DISK_GUID = "5CE8A2B1-6E42-4B44-9A51-3C1D0A0B0C01";

export const CLOUD_RECIPE = {
    format: 1,
    suite: "bookworm",
    mirror: process.env.PQ_DEBIAN_MIRROR ?? "http://deb.debian.org/debian",
    variant: "apt",
    packages: CLOUD_PACKAGES,
    initramfsModules: INITRAMFS_MODULES,
    cloudCfg: CLOUD_CFG,
    dhcpAll: DHCP_ALL,
    waitOnline: WAIT_ONLINE_ANY,
    grubCfg: GRUB_CFG,
    grubEarlyCfg: GRUB_EARLY_CFG,
    grubModules: GRUB_MODULES,
    layout: LAYOUT,
    // Documentation, manual pages and translations are left out (a third of the tree).
    pathExcludes: ["/usr/share/man/*", "/usr/share/doc/*", "/usr/share/locale/*", "/usr/share/info/*"],
    rootSize: "2G",
};

/**
 * A VM spec booting the cloud-like image from its disk (no `kernel`): the overlay first (the
 * disk the firmware boots), the cloud-init seed read-only after it, 768 MiB, TCG.
 * `extra` adds or overrides fields (firmware, agent, portForwards, networks, onReboot).
 */
export function cloudVm(
    name: string,
    overlay: { path: string; inputHash: string },
    seed: { path: string; inputHash: string },
    extra: Record<string, unknown> = {},
) {
    return {
        name,
        accel: "tcg",
        memoryMiB: 768,
        disks: [
            { path: overlay.path, format: "qcow2", inputHash: overlay.inputHash },
            { path: seed.path, format: "raw", readOnly: true, inputHash: seed.inputHash },
        ],
        ...extra,
    };
}

export type CloudOptions = GuestOptions;

interface CloudDone extends BuildRecord {
    inputHash: string;
    sha512: string;
}

/** The cloud-like image: built on first use on this machine (a few minutes, as root), else the cached one. */
export const ensureCloudGuest: (opts?: CloudOptions) => Promise<CloudGuest> = oncePerProcess(buildOrReuse);

async function buildOrReuse(opts: CloudOptions): Promise<CloudGuest> {
    const log = progressLog("cloud-guest", opts.log);
    const grub = await execa("grub-mkimage", ["--version"]).then(
        (r) => r.stdout.trim(),
        () => {
            throw new Error(
                "grub-mkimage is missing: apt-get install --no-install-recommends grub-common grub-pc-bin grub-efi-amd64-bin (scripts/setup.sh installs them)",
            );
        },
    );
    const { dir, done, built } = await cachedBuild<CloudDone>({
        root: opts.cacheRoot,
        prefix: "debian-cloud",
        recipe: { ...CLOUD_RECIPE, grub },
        mirror: CLOUD_RECIPE.mirror,
        suite: CLOUD_RECIPE.suite,
        log,
        build: (d, release) => build(d, release, log),
    });
    if (built) log(`cloud-like image ready in ${done.buildSeconds} s: ${path.join(dir, "disk.qcow2")}`);
    return {
        image: path.join(dir, "disk.qcow2"),
        format: "qcow2",
        inputHash: done.inputHash,
        sha512: done.sha512,
        packages: path.join(dir, "packages.txt"),
        cacheDir: dir,
        buildSeconds: built ? done.buildSeconds : 0,
    };
}

async function build(dir: string, release: string, log: (line: string) => void): Promise<CloudDone> {
    requireRootForBuild("the cloud-like test image");
    const t0 = Date.now();
    const r = CLOUD_RECIPE;
    const rootfs = path.join(dir, "rootfs");
    log(
        `building the cloud-like Debian ${r.suite} image (${release}) into ${dir}: mmdebstrap ${r.packages.length} packages`,
    );
    const boot = await mmdebstrap(r, { essential: initramfsHook(), customize: customizeHook() }, rootfs, log);
    await writeFile(path.join(dir, "packages.txt"), await packageList(rootfs));
    await installGrubFiles(rootfs, boot, dir);
    log('mmdebstrap done; making the ext4 root with DiskImage (directory source, owners: "preserve")');
    const root = await createDiskImage({
        path: path.join(dir, "root.raw"),
        stateDir: path.join(dir, "state"),
        source: { kind: "directory", path: rootfs, size: r.rootSize, label: CLOUD_ROOT_LABEL, owners: "preserve" },
    });
    await rm(rootfs, { recursive: true, force: true });
    log("assembling the GPT disk (BIOS boot, EFI system and root partitions) and converting it to qcow2");
    const raw = path.join(dir, "disk.raw");
    await assembleDisk(raw, root.path, root.virtualSizeBytes, dir);
    await execa("qemu-img", ["convert", "-f", "raw", "-O", "qcow2", raw, path.join(dir, "disk.qcow2")]);
    await rm(raw, { force: true });
    await removeImage(root);
    await rm(path.join(dir, "state"), { recursive: true, force: true });
    await rm(path.join(dir, "grub"), { recursive: true, force: true });
    const digests = await fileDigests(path.join(dir, "disk.qcow2"));
    return {
        inputHash: digests.sha256,
        sha512: digests.sha512,
        buildSeconds: Math.round((Date.now() - t0) / 100) / 10,
        release,
    };
}

function initramfsHook(): string {
    return [
        'mkdir -p "$1/etc/initramfs-tools/conf.d"',
        'echo MODULES=list > "$1/etc/initramfs-tools/conf.d/pulumi-qemu.conf"',
        `printf '${INITRAMFS_MODULES.join("\\n")}\\n' >> "$1/etc/initramfs-tools/modules"`,
    ].join(" && ");
}

function customizeHook(): string {
    const file = (p: string, text: string) => `mkdir -p "$1${path.dirname(p)}" && printf '%s' '${text}' > "$1${p}"`;
    return [
        file("/etc/cloud/cloud.cfg.d/90-pulumi-qemu.cfg", CLOUD_CFG),
        file("/etc/systemd/network/90-dhcp-all.network", DHCP_ALL),
        file("/etc/systemd/system/systemd-networkd-wait-online.service.d/any.conf", WAIT_ONLINE_ANY),
        'chroot "$1" systemctl enable systemd-networkd.service systemd-resolved.service',
        // mmdebstrap copies the build host's resolv.conf in and leaves it: point it at resolved's stub.
        'ln -sf ../run/systemd/resolve/stub-resolv.conf "$1/etc/resolv.conf"',
        `printf 'LABEL=${CLOUD_ROOT_LABEL} / ext4 rw,discard,errors=remount-ro 0 1\\n' > "$1/etc/fstab"`,
        'echo debian > "$1/etc/hostname"',
        // Host keys made during the build would be shared by every VM: cloud-init makes them per instance.
        'rm -f "$1"/etc/ssh/ssh_host_*',
        ': > "$1/etc/machine-id"',
    ].join(" && ");
}

/** /boot/grub as grub-install would leave it: the config and the module directories GRUB loads from. */
async function installGrubFiles(rootfs: string, boot: { kernel: string; initrd: string }, dir: string): Promise<void> {
    const grubDir = path.join(rootfs, "boot", "grub");
    await mkdir(grubDir, { recursive: true });
    const inGuest = (p: string) => "/" + path.relative(rootfs, p);
    await writeFile(
        path.join(grubDir, "grub.cfg"),
        GRUB_CFG.replace("@KERNEL@", inGuest(boot.kernel)).replace("@INITRD@", inGuest(boot.initrd)),
    );
    for (const platform of ["i386-pc", "x86_64-efi"])
        await cp(path.join("/usr/lib/grub", platform), path.join(grubDir, platform), { recursive: true });
    // The two images GRUB starts from: core.img for the BIOS boot partition, BOOTX64.EFI for the ESP.
    const work = path.join(dir, "grub");
    await mkdir(work, { recursive: true });
    await writeFile(path.join(work, "early.cfg"), GRUB_EARLY_CFG);
    const mk = (format: string, out: string, extra: string[]) =>
        execa("grub-mkimage", [
            "-O",
            format,
            "-o",
            path.join(work, out),
            "-c",
            path.join(work, "early.cfg"),
            "-p",
            "/boot/grub",
            ...extra,
            ...GRUB_MODULES,
        ]);
    await mk("i386-pc", "core.img", ["biosdisk"]);
    await mk("x86_64-efi", "BOOTX64.EFI", []);
}

/**
 * The GPT disk, in Debian genericcloud's layout. GRUB is put in place as grub-bios-setup
 * would (its documented offsets in boot.S and diskboot.S): boot.img's code in the MBR pointing
 * at core.img's first sector in the BIOS boot partition, and core.img's block list pointing at
 * the rest of itself; the partition table sfdisk wrote stays.
 */
async function assembleDisk(raw: string, rootImage: string, rootBytes: number, dir: string): Promise<void> {
    const L = LAYOUT;
    const rootSectors = Math.ceil(rootBytes / 512);
    // The backup GPT takes the last 33 sectors; round the disk to whole MiB.
    const totalBytes = Math.ceil(((L.rootStart + rootSectors + 34) * 512) / 1048576) * 1048576;
    await execa("truncate", ["-s", String(totalBytes), raw]);
    const name = path.basename(raw);
    const table = [
        "label: gpt",
        "unit: sectors",
        `label-id: ${DISK_GUID}`,
        `${name}1 : start=${L.rootStart}, size=${rootSectors}, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name="${CLOUD_ROOT_LABEL}"`,
        `${name}14 : start=${L.biosStart}, size=${L.biosSectors}, type=21686148-6449-6E6F-744E-656564454649`,
        `${name}15 : start=${L.espStart}, size=${L.espSectors}, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B`,
        "",
    ].join("\n");
    await execa("sfdisk", ["--no-reread", "--no-tell-kernel", "--quiet", raw], {
        input: table,
        cwd: path.dirname(raw),
    });

    const work = path.join(dir, "grub");
    const esp = path.join(work, "esp.img");
    await execa("mkfs.vfat", ["-C", "-n", "UEFI", esp, String((L.espSectors * 512) / 1024)]);
    await execa("mmd", ["-i", esp, "::/EFI", "::/EFI/BOOT"]);
    await execa("mcopy", ["-i", esp, path.join(work, "BOOTX64.EFI"), "::/EFI/BOOT/BOOTX64.EFI"]);

    const core = await readFile(path.join(work, "core.img"));
    const coreSectors = Math.ceil(core.length / 512);
    if (coreSectors > L.biosSectors)
        throw new Error(`GRUB's core.img (${core.length} bytes) does not fit the BIOS boot partition`);
    // diskboot.img's block list (the last 12 bytes of core.img's first sector): the rest of core.img.
    const list = 512 - 12;
    core.writeBigUInt64LE(BigInt(L.biosStart + 1), list);
    core.writeUInt16LE(coreSectors - 1, list + 8);
    core.fill(0, list - 12, list); // the entry before it ends the list
    const mbr = Buffer.alloc(440);
    (await readFile("/usr/lib/grub/i386-pc/boot.img")).copy(mbr, 0, 0, 440);
    mbr.writeBigUInt64LE(BigInt(L.biosStart), 0x5c); // where core.img starts
    mbr[0x64] = 0xff; // boot from the drive the BIOS booted
    mbr.writeUInt16LE(0x9090, 0x66); // a hard disk: trust no buggy BIOS drive number (grub-bios-setup does the same)

    const fh = await open(raw, "r+");
    try {
        await fh.write(mbr, 0, mbr.length, 0);
        await fh.write(core, 0, core.length, L.biosStart * 512);
    } finally {
        await fh.close();
    }
    for (const [file, start] of [
        [esp, L.espStart],
        [rootImage, L.rootStart],
    ] as const) {
        await execa("dd", [
            `if=${file}`,
            `of=${raw}`,
            "bs=1M",
            `seek=${start * 512}`,
            "oflag=seek_bytes",
            "conv=notrunc,sparse",
            "status=none",
        ]);
    }
}

async function fileDigests(file: string): Promise<{ sha256: string; sha512: string }> {
    const a = createHash("sha256");
    const b = createHash("sha512");
    for await (const chunk of createReadStream(file, { highWaterMark: 4 * 1024 * 1024 })) {
        a.update(chunk as Buffer);
        b.update(chunk as Buffer);
    }
    return { sha256: a.digest("hex"), sha512: b.digest("hex") };
}
