import execa from "execa";
import { randomBytes } from "node:crypto";
import { copyFile, mkdir, readdir, readFile, rename, rm, stat, writeFile } from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import { hashValue } from "../../provider/core/hash";
import { createDiskImage } from "../../provider/resources/diskImage";

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

export function debianCacheRoot(env: NodeJS.ProcessEnv = process.env): string {
    if (env.PQ_DEBIAN_CACHE) return path.resolve(env.PQ_DEBIAN_CACHE);
    const base = env.XDG_CACHE_HOME ? path.resolve(env.XDG_CACHE_HOME) : path.join(os.homedir(), ".cache");
    return path.join(base, "pulumi-qemu-tests");
}

export interface DebianOptions {
    cacheRoot?: string;
    /** Progress lines; default: stderr with the elapsed time. */
    log?: (line: string) => void;
}

let memo: Promise<DebianGuest> | undefined;

/** Builds the Debian guest on first use on this machine (a few minutes), else returns the cached one. */
export function ensureDebianGuest(opts: DebianOptions = {}): Promise<DebianGuest> {
    if (opts.cacheRoot || opts.log) return buildOrReuse(opts);
    memo ??= buildOrReuse(opts).catch((err) => {
        memo = undefined;
        throw err;
    });
    return memo;
}

interface Done {
    inputHash: string;
    buildSeconds: number;
    release: string;
}

async function buildOrReuse(opts: DebianOptions): Promise<DebianGuest> {
    const root = opts.cacheRoot ?? debianCacheRoot();
    const started = Date.now();
    const log = opts.log ?? ((line: string) => process.stderr.write(`[debian-guest ${((Date.now() - started) / 1000).toFixed(1)}s] ${line}\n`));
    const recipeKey = hashValue(DEBIAN_RECIPE).slice(0, 12);
    const release = await releaseStamp(DEBIAN_RECIPE.mirror, DEBIAN_RECIPE.suite).catch((err: Error) => {
        log(`cannot read the mirror's Release file (${err.message}); using the newest cached build of this recipe if there is one`);
        return undefined;
    });
    const dir = release
        ? path.join(root, `debian-${recipeKey}-${hashValue(release).slice(0, 12)}`)
        : await newestBuild(root, recipeKey);
    if (dir) {
        const cached = await readDone(dir);
        if (cached) return describe(dir, cached, 0);
    }
    if (!release) throw new Error(`no Debian guest is cached under ${root} and the mirror ${DEBIAN_RECIPE.mirror} cannot be reached to build one`);
    await mkdir(root, { recursive: true, mode: 0o700 });
    const partial = `${dir!}.partial-${randomBytes(4).toString("hex")}`;
    try {
        const done = await build(partial, release, log);
        await rename(partial, dir!).catch(async (err: NodeJS.ErrnoException) => {
            // Another process finished the same build first: theirs is as good as ours.
            if (err.code !== "ENOTEMPTY" && err.code !== "EEXIST") throw err;
        });
        const kept = (await readDone(dir!)) ?? done;
        log(`Debian guest ready in ${done.buildSeconds} s: ${path.join(dir!, "root.raw")}`);
        return describe(dir!, kept, done.buildSeconds);
    } finally {
        await rm(partial, { recursive: true, force: true });
    }
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

async function readDone(dir: string): Promise<Done | undefined> {
    try {
        return JSON.parse(await readFile(path.join(dir, "done.json"), "utf8")) as Done;
    } catch {
        return undefined;
    }
}

async function newestBuild(root: string, recipeKey: string): Promise<string | undefined> {
    const names = await readdir(root).catch(() => [] as string[]);
    const builds = names.filter((n) => n.startsWith(`debian-${recipeKey}-`) && !n.includes(".partial-"));
    let best: { dir: string; at: number } | undefined;
    for (const n of builds) {
        const t = await stat(path.join(root, n, "done.json")).then(
            (st) => st.mtimeMs,
            () => undefined,
        );
        if (t !== undefined && (!best || t > best.at)) best = { dir: path.join(root, n), at: t };
    }
    return best?.dir;
}

/** The suite's Release `Date:`: the archive writes a new Release, with a new date, whenever a package in it changes. */
async function releaseStamp(mirror: string, suite: string): Promise<string> {
    const url = `${mirror.replace(/\/$/, "")}/dists/${suite}/InRelease`;
    const res = await fetch(url, { signal: AbortSignal.timeout(20_000) });
    if (!res.ok) throw new Error(`${url}: HTTP ${res.status}`);
    const text = await res.text();
    const date = /^Date: (.+)$/m.exec(text)?.[1];
    if (!date) throw new Error(`${url} has no Date field`);
    // The Date line alone: the signature block changes when the archive is re-signed, the contents do not.
    return `${suite} ${date}`;
}

async function build(dir: string, release: string, log: (line: string) => void): Promise<Done> {
    const t0 = Date.now();
    await mkdir(dir, { recursive: true, mode: 0o700 });
    const rootfs = path.join(dir, "rootfs");
    const r = DEBIAN_RECIPE;
    log(`building Debian ${r.suite} (${release}) into ${dir}: mmdebstrap ${r.packages.length} packages`);
    const boot = await mmdebstrapRootfs(rootfs, log);
    await copyFile(boot.kernel, path.join(dir, "vmlinuz"));
    await copyFile(boot.initrd, path.join(dir, "initrd.img"));
    const packages = await execa("dpkg-query", [`--admindir=${path.join(rootfs, "var/lib/dpkg")}`, "-W", "-f", "${Package} ${Version}\\n"]);
    await writeFile(path.join(dir, "packages.txt"), packages.stdout + "\n");
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
export async function mmdebstrapRootfs(rootfs: string, log: (line: string) => void): Promise<{ kernel: string; initrd: string }> {
    if (process.getuid?.() !== 0) {
        throw new Error("building the Debian guest needs root (mmdebstrap's root mode keeps the owners and device nodes a system needs); run as root or point PQ_DEBIAN_CACHE at a cache built by root");
    }
    const r = DEBIAN_RECIPE;
    const moduleLines = r.initramfsModules.join("\\n");
    const essentialHook = [
        'mkdir -p "$1/etc/initramfs-tools/conf.d"',
        'echo MODULES=list > "$1/etc/initramfs-tools/conf.d/pulumi-qemu.conf"',
        `printf '${moduleLines}\\n' >> "$1/etc/initramfs-tools/modules"`,
    ].join(" && ");
    const customizeHook = [
        'mkdir -p "$1/etc/cloud/cloud.cfg.d"',
        `printf '%s' '${r.cloudCfg}' > "$1/etc/cloud/cloud.cfg.d/90-pulumi-qemu.cfg"`,
        `printf '/dev/vda / ext4 rw,errors=remount-ro 0 1\\n' > "$1/etc/fstab"`,
        'echo debian > "$1/etc/hostname"',
        // Host keys made during the build would be shared by every VM: cloud-init makes them per instance.
        'rm -f "$1"/etc/ssh/ssh_host_*',
        ': > "$1/etc/machine-id"',
    ].join(" && ");
    const args = [
        `--variant=${r.variant}`,
        "--mode=root",
        `--include=${r.packages.join(",")}`,
        ...r.pathExcludes.map((p) => `--dpkgopt=path-exclude=${p}`),
        "--dpkgopt=path-include=/usr/share/doc/*/copyright",
        `--essential-hook=${essentialHook}`,
        `--customize-hook=${customizeHook}`,
        r.suite,
        rootfs,
        r.mirror,
    ];
    const child = execa("mmdebstrap", args, { stdin: "ignore", all: true, timeout: 20 * 60_000, reject: false });
    let tail: string[] = [];
    child.all!.on("data", (chunk: Buffer) => {
        for (const line of chunk.toString().split("\n").filter((l) => l.trim())) {
            tail = [...tail.slice(-30), line];
            if (/^(I|E|W): /.test(line)) log(`mmdebstrap ${line}`);
        }
    });
    const res = await child;
    if (res.exitCode !== 0) throw new Error(`mmdebstrap failed (exit ${res.exitCode}${res.timedOut ? ", timed out" : ""}):\n${tail.join("\n")}`);
    const boot = await readdir(path.join(rootfs, "boot"));
    const vmlinuz = boot.find((n) => n.startsWith("vmlinuz-"));
    const initrd = boot.find((n) => n.startsWith("initrd.img-"));
    if (!vmlinuz || !initrd) throw new Error(`the Debian tree has no kernel or initrd in /boot (found ${boot.join(", ")})`);
    return { kernel: path.join(rootfs, "boot", vmlinuz), initrd: path.join(rootfs, "boot", initrd) };
}
