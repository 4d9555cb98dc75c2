import { constants } from "node:fs";
import {
    access,
    chmod,
    copyFile,
    mkdir,
    mkdtemp,
    readdir,
    readFile,
    rename,
    rm,
    stat,
    writeFile,
} from "node:fs/promises";
import * as path from "node:path";
import execa from "execa";
import { hashValue, sha256Hex } from "../../provider/core/hash";
import { MAIN_ROOT } from "../engine/paths";

/**
 * The guest the integration tests boot: Debian's own generic kernel and a small initramfs of
 * busybox-static, the virtio/9p/ext4/ACPI modules, and an /init that mounts shares, runs a
 * script from them, serves HTTP and obeys the ACPI power button. Built once and cached under
 * .cache/test-guest/<key>, where the key changes whenever any input does.
 */

export const READY_MARKER = "PQ-GUEST-READY";

export interface TestGuest {
    kernel: string;
    initrd: string;
    kernelVersion: string;
}

export interface GuestOptions {
    name?: string;
    mounts?: { tag: string; at: string; readOnly?: boolean }[];
    /** false: /init does not start the shell agent (a guest whose agent never answers). */
    shellAgent?: boolean;
}

const APT_HINT = "sudo apt-get install --no-install-recommends linux-image-amd64 busybox-static cpio xz-utils gzip";

/** Modules the guest needs; their dependencies are added from modules.dep. */
export const WANTED_MODULES = [
    "virtio_pci",
    "9pnet_virtio",
    "9p",
    "virtio_net",
    "virtio_blk",
    // ext4 asks the crypto API for "crc32c" at mount time, which modules.dep cannot show.
    "crc32c_generic",
    "ext4",
    "virtio_rng",
    "button",
    "evdev",
    // The virtio-serial port the "shell" agent serves on.
    "virtio_console",
];

const BUSYBOX = "/bin/busybox";
const INIT_SCRIPT = path.join(__dirname, "init.sh");
/** The guest side of `agent: "shell"`, installed as /bin/pq-shell-agent and started by /init. */
const SHELL_AGENT = path.join(__dirname, "..", "..", "provider", "guest", "shell-agent.sh");
// PQ_TEST_GUEST_CACHE moves the cache, e.g. to exercise a cold build without disturbing the shared one.
export const CACHE_ROOT = process.env.PQ_TEST_GUEST_CACHE
    ? path.resolve(process.env.PQ_TEST_GUEST_CACHE)
    : path.join(MAIN_ROOT, ".cache", "test-guest"); // the checkout's root, also when run compiled from bin/ (never bin/.cache)
// Bumped when the layout of the built guest changes in a way the other inputs do not show.
const FORMAT = 1;

const memo = new Map<string, Promise<TestGuest>>();

export interface TestGuestVariant {
    /** Also carry Debian's qemu-ga (with the shared libraries it needs), started by /init on its port. */
    qemuGa?: boolean;
}

/** Builds the guest on first use (or when an input changed) and returns the cached files. */
export function ensureTestGuest(variant: TestGuestVariant = {}): Promise<TestGuest> {
    const key = variant.qemuGa ? "qga" : "base";
    let p = memo.get(key);
    if (!p) {
        p = buildOrReuse(variant).catch((err) => {
            memo.delete(key);
            throw err;
        });
        memo.set(key, p);
    }
    return p;
}

const QEMU_GA = "/usr/sbin/qemu-ga";

/** qemu-ga and every shared object it loads (ldd), each to be placed at the same path in the guest. */
async function qemuGaFiles(): Promise<string[]> {
    await mustRead(QEMU_GA, "qemu-guest-agent", "qemu-guest-agent");
    const { stdout } = await execa("ldd", [QEMU_GA]);
    const libs = [...stdout.matchAll(/(?:=>\s*)?(\/\S+)\s+\(0x/g)].map((m) => m[1]);
    return [QEMU_GA, ...new Set(libs)];
}

/** The kernel command line the guest's /init understands. */
export function guestKernelArguments(opts: GuestOptions = {}): string[] {
    const args = ["console=ttyS0", "panic=-1"];
    for (const m of opts.mounts ?? []) {
        for (const [field, value] of [
            ["tag", m.tag],
            ["at", m.at],
        ] as const) {
            if (!/^[^\s,"]+$/.test(value)) {
                throw new Error(
                    `guestKernelArguments: mount ${field} ${JSON.stringify(value)} must be non-empty without spaces, commas or quotes`,
                );
            }
        }
        if (!m.at.startsWith("/"))
            throw new Error(`guestKernelArguments: mount point ${JSON.stringify(m.at)} must be absolute`);
        args.push(`pq_mount=${m.tag},${m.at}${m.readOnly ? ",ro" : ""}`);
    }
    if (opts.shellAgent === false) args.push("pq_shell_agent=off");
    if (opts.name !== undefined) {
        if (!/^[^\s"]+$/.test(opts.name))
            throw new Error(
                `guestKernelArguments: name ${JSON.stringify(opts.name)} must be non-empty without spaces or quotes`,
            );
        args.push(`pq_name=${opts.name}`);
    }
    return args;
}

/**
 * A bare QEMU command line (no provider involved) that boots the test guest from `disk`, a qcow2
 * file, with `share` as the 9p mount tag "pqshare" at /pq (its pq-init.sh runs at boot), the
 * serial console in `log`, and no NIC: what the image tests use to see a guest read and write
 * an image the provider made.
 */
export function bareGuestArgv(
    guest: TestGuest,
    opts: { name: string; log: string; disk: string; share: string },
): string[] {
    return [
        "-accel",
        "tcg",
        "-m",
        "256",
        "-no-reboot",
        "-display",
        "none",
        "-serial",
        `file:${opts.log}`,
        "-kernel",
        guest.kernel,
        "-initrd",
        guest.initrd,
        "-append",
        guestKernelArguments({ name: opts.name, mounts: [{ tag: "pqshare", at: "/pq" }] }).join(" "),
        "-drive",
        `file=${opts.disk},format=qcow2,if=virtio`,
        "-virtfs",
        `local,path=${opts.share},security_model=none,mount_tag=pqshare`,
        "-nic",
        "none",
    ];
}

/** Waits until the serial log holds `marker`, and fails when `qemu` exits first or the deadline passes. */
export async function waitForSerial(
    log: string,
    marker: string,
    timeoutMs: number,
    qemu: { exitCode: number | null },
): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
        const text = await readFile(log, "latin1").catch(() => "");
        if (text.includes(marker)) return text;
        if (qemu.exitCode !== null)
            throw new Error(`QEMU exited (${qemu.exitCode}) before ${marker}\n${text.slice(-3000)}`);
        if (Date.now() > deadline)
            throw new Error(`no ${marker} on the serial console within ${timeoutMs} ms\n${text.slice(-3000)}`);
        await new Promise((r) => setTimeout(r, 200));
    }
}

/**
 * The modules to load, each after everything it depends on. `modulesDep` is the text of
 * modules.dep; names compare with "-" and "_" as equals, as the kernel does.
 */
export function moduleLoadOrder(modulesDep: string, wanted: readonly string[]): { name: string; file: string }[] {
    const byName = new Map<string, { file: string; deps: string[] }>();
    for (const line of modulesDep.split("\n")) {
        const colon = line.indexOf(":");
        if (colon < 0) continue;
        const file = line.slice(0, colon).trim();
        const deps = line
            .slice(colon + 1)
            .trim()
            .split(/\s+/)
            .filter(Boolean);
        byName.set(moduleName(file), { file, deps: deps.map(moduleName) });
    }
    const order: { name: string; file: string }[] = [];
    const done = new Set<string>();
    const visiting = new Set<string>();
    const visit = (name: string, wantedBy: string) => {
        if (done.has(name)) return;
        const entry = byName.get(name);
        if (!entry)
            throw new Error(
                `module ${name} (needed by ${wantedBy}) is not in modules.dep; is the kernel's module tree complete? ${APT_HINT}`,
            );
        if (visiting.has(name)) throw new Error(`modules.dep has a dependency cycle through ${name}`);
        visiting.add(name);
        for (const dep of entry.deps) visit(dep, name);
        visiting.delete(name);
        done.add(name);
        order.push({ name, file: entry.file });
    };
    for (const w of wanted) visit(normalize(w), "the test guest");
    return order;
}

function moduleName(file: string): string {
    return normalize(path.basename(file).replace(/\.ko(\.(xz|zst|gz))?$/, ""));
}

function normalize(name: string): string {
    return name.replace(/-/g, "_");
}

async function buildOrReuse(variant: TestGuestVariant): Promise<TestGuest> {
    const kernelVersion = await installedKernelVersion();
    const bzImage = `/boot/vmlinuz-${kernelVersion}`;
    const moduleDir = `/lib/modules/${kernelVersion}`;
    await mustRead(bzImage, "the generic kernel image", "linux-image-amd64");
    await mustRead(path.join(moduleDir, "modules.dep"), "the kernel's module list", "linux-image-amd64");
    const busybox = await readStaticBusybox();
    const initText = await readFile(INIT_SCRIPT, "utf8");
    const agentText = await readFile(SHELL_AGENT, "utf8");
    const modules = moduleLoadOrder(await readFile(path.join(moduleDir, "modules.dep"), "utf8"), WANTED_MODULES);
    const kst = await stat(bzImage);
    const extraFiles = variant.qemuGa ? await qemuGaFiles() : [];
    const extraDigests = await Promise.all(extraFiles.map(async (f) => [f, sha256Hex(await readFile(f))]));

    const key = hashValue({
        format: FORMAT,
        kernelVersion,
        kernelImage: { size: kst.size, mtimeMs: kst.mtimeMs },
        busybox: sha256Hex(busybox),
        init: initText,
        shellAgent: agentText,
        ...(extraFiles.length ? { extraFiles: extraDigests } : {}),
        modules: modules.map((m) => m.file),
    }).slice(0, 16);
    const dir = path.join(CACHE_ROOT, key);
    const guest = { kernel: path.join(dir, "vmlinux"), initrd: path.join(dir, "initrd.gz"), kernelVersion };
    if (await exists(dir)) return guest;

    await mkdir(CACHE_ROOT, { recursive: true });
    const tmp = await mkdtemp(path.join(CACHE_ROOT, `.build-${key}-`));
    try {
        await writeFile(path.join(tmp, "vmlinux"), await uncompressedKernel(await readFile(bzImage), bzImage));
        await buildInitramfs(tmp, busybox, initText, moduleDir, modules, agentText, extraFiles);
        try {
            await rename(tmp, dir);
        } catch (err) {
            // Another worker finished the same build first; its result is as good as ours.
            const code = (err as NodeJS.ErrnoException).code;
            if ((code !== "ENOTEMPTY" && code !== "EEXIST") || !(await exists(dir))) throw err;
        }
    } finally {
        await rm(tmp, { recursive: true, force: true });
    }
    return guest;
}

/** The ABI version linux-image-amd64 points at, e.g. "6.1.0-56-amd64". */
async function installedKernelVersion(): Promise<string> {
    let depends: string;
    try {
        depends = (await execa("dpkg-query", ["-W", "-f=${Depends}", "linux-image-amd64"])).stdout;
    } catch (err) {
        throw new Error(
            `the test guest needs Debian's generic kernel package, which dpkg-query cannot find (${(err as Error).message.split("\n")[0]}); install it: ${APT_HINT}`,
        );
    }
    const m = /linux-image-(\d[^\s,(]*-amd64)\b/.exec(depends);
    if (!m) throw new Error(`cannot find the kernel ABI in linux-image-amd64's Depends: ${JSON.stringify(depends)}`);
    return m[1];
}

async function mustRead(file: string, what: string, pkg: string): Promise<void> {
    try {
        await access(file, constants.R_OK);
    } catch {
        throw new Error(`${what} ${file} is missing or unreadable (package ${pkg}); install it: ${APT_HINT}`);
    }
}

/** Busybox from the plain busybox package is dynamically linked and would not run in the initramfs. */
async function readStaticBusybox(): Promise<Buffer> {
    await mustRead(BUSYBOX, "busybox", "busybox-static");
    const bin = await readFile(BUSYBOX);
    if (hasInterpreter(bin))
        throw new Error(`${BUSYBOX} is dynamically linked; the test guest needs busybox-static: ${APT_HINT}`);
    return bin;
}

/** Whether a 64-bit little-endian ELF has a PT_INTERP program header, i.e. is dynamically linked. */
function hasInterpreter(elf: Buffer): boolean {
    if (elf.readUInt32BE(0) !== 0x7f454c46 || elf[4] !== 2)
        throw new Error(`${BUSYBOX} is not a 64-bit ELF executable`);
    const phoff = Number(elf.readBigUInt64LE(0x20));
    const phentsize = elf.readUInt16LE(0x36);
    const phnum = elf.readUInt16LE(0x38);
    for (let i = 0; i < phnum; i++) {
        if (elf.readUInt32LE(phoff + i * phentsize) === 3) return true;
    }
    return false;
}

/**
 * The vmlinux ELF inside a bzImage. Under TCG the kernel's own xz decompression costs about
 * 4 s per boot, while the ELF boots directly through its PVH note. The setup header says where
 * the payload lies; its last 4 bytes are the uncompressed size the build appends, not xz data.
 */
async function uncompressedKernel(bz: Buffer, file: string): Promise<Buffer> {
    if (bz.readUInt32LE(0x202) !== 0x53726448) throw new Error(`${file} is not a bzImage (no HdrS header)`);
    const setupSects = bz[0x1f1] || 4;
    const start = (setupSects + 1) * 512 + bz.readUInt32LE(0x248);
    const length = bz.readUInt32LE(0x24c);
    const payload = bz.subarray(start, start + length - 4);
    if (payload.subarray(0, 6).toString("latin1") !== "\xfd7zXZ\x00") {
        throw new Error(
            `${file}: the kernel payload is not xz-compressed; this builder only knows Debian's xz kernels`,
        );
    }
    let out: Buffer;
    try {
        out = (await execa("xz", ["-dc"], { input: payload, encoding: null, maxBuffer: 512 * 1024 * 1024 })).stdout;
    } catch (err) {
        const e = err as NodeJS.ErrnoException & { stderr?: Buffer };
        if (e.code === "ENOENT") throw new Error(`xz is needed to unpack the kernel for the test guest: ${APT_HINT}`);
        throw new Error(`xz could not unpack ${file}: ${e.stderr?.toString() || e.message}`);
    }
    if (out.readUInt32BE(0) !== 0x7f454c46) throw new Error(`${file}: the unpacked kernel is not an ELF image`);
    return out;
}

async function buildInitramfs(
    outDir: string,
    busybox: Buffer,
    initText: string,
    moduleDir: string,
    modules: { name: string; file: string }[],
    agentText: string,
    extraFiles: string[] = [],
): Promise<void> {
    const root = path.join(outDir, "root");
    await mkdir(path.join(root, "bin"), { recursive: true });
    await mkdir(path.join(root, "etc"), { recursive: true });
    await mkdir(path.join(root, "lib", "modules"), { recursive: true });
    await writeFile(path.join(root, "bin", "busybox"), busybox, { mode: 0o755 });
    await writeFile(path.join(root, "init"), initText, { mode: 0o755 });
    await writeFile(path.join(root, "bin", "pq-shell-agent"), agentText, { mode: 0o755 });
    for (const f of extraFiles) {
        // Content, not symlinks: libfoo.so.1 becomes a file holding what it points to.
        await mkdir(path.join(root, path.dirname(f)), { recursive: true });
        await copyFile(f, path.join(root, f));
        await chmod(path.join(root, f), 0o755);
    }
    for (const m of modules)
        await copyFile(path.join(moduleDir, m.file), path.join(root, "lib", "modules", `${m.name}.ko`));
    await writeFile(path.join(root, "etc", "pq-modules"), modules.map((m) => m.name).join("\n") + "\n");

    const entries = await listTree(root);
    const initrd = path.join(outDir, "initrd.gz");
    try {
        await execa("sh", ["-c", 'cpio --quiet -o -H newc -R 0:0 | gzip -1 > "$1"', "sh", initrd], {
            cwd: root,
            input: entries.join("\n") + "\n",
        });
    } catch (err) {
        const e = err as Error & { stderr?: string };
        throw new Error(`packing the initramfs failed (needs cpio and gzip: ${APT_HINT}): ${e.stderr || e.message}`);
    }
    await rm(root, { recursive: true, force: true });
}

/** Paths relative to `root`, parents before children, as cpio wants them. */
async function listTree(root: string, rel = "."): Promise<string[]> {
    const out = [rel];
    for (const d of await readdir(path.join(root, rel), { withFileTypes: true })) {
        const child = path.join(rel, d.name);
        if (d.isDirectory()) out.push(...(await listTree(root, child)));
        else out.push(child);
    }
    return out;
}

async function exists(p: string): Promise<boolean> {
    try {
        await access(p);
        return true;
    } catch {
        return false;
    }
}
