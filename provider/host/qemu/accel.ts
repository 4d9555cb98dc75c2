import { constants } from "node:fs";
import { access, mkdtemp, open, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import execa from "execa";
import { diesWithUs } from "../process/toolRun";
import {
    AccelVerdict,
    applyRequest,
    cpuVirtualizationFlag,
    decideAutoAccel,
    KvmFacts,
    RequestedAccel,
    ResolvedAccel,
} from "../../core/accelChoice";
import { writeFileAtomic } from "../files/atomicFile";
import { ensureStateDir, isOwnFileSync, resolveStateDir } from "../files/stateDir";

export type { AccelVerdict, ResolvedAccel } from "../../core/accelChoice";

/**
 * Finds out whether KVM really works here, at most once per boot: the verdict is kept in memory
 * and in accel.json, keyed by the boot id and the QEMU binary, since neither the kernel's KVM
 * nor QEMU change without one of those changing.
 */

const DEFAULT_QEMU = "qemu-system-x86_64";

/**
 * Working KVM runs SeaBIOS and the probe sector in well under half a second, TCG in about 0.1 s.
 * kvm_pvm (nested, no hardware support) takes 3.5 s for the same, and real guests then stall,
 * so a probe slower than this is a KVM not worth using.
 */
const PROBE_TIMEOUT_MS = 2000;

/** isa-debug-exit turns the byte written to its port into exit status (v << 1) | 1. */
const PROBE_EXIT_CODE = (0x31 << 1) | 1;

/**
 * A boot sector that does what a 64-bit kernel does first — protected mode, identity-mapped
 * paging, long mode — and then writes 0x31 to port 0xf4. Assembled (GNU as, ld -Ttext=0x7c00
 * --oformat binary) from:
 *   cli; xor ax,ax; mov ds,ax; mov ss,ax; lgdt gdtr; cr0 |= PE; ljmp 0x08:pm32
 *   pm32: segments = 0x10; zero 0x1000..0x4000; PML4[0]=0x2003; PDPT[0]=0x3003; PD[0]=0x83 (2 MiB)
 *         cr4 |= PAE; cr3 = 0x1000; EFER |= LME; cr0 |= PG; ljmp 0x18:lm64
 *   lm64: mov al,0x31; out 0xf4,al; 1: hlt; jmp 1b
 *   gdt: null, code32 0x00cf9a000000ffff, data 0x00cf92000000ffff, code64 0x00af9a000000ffff
 */
const PROBE_CODE_HEX =
    "fa31c08ed88ed00f0116b07c0f20c06683c8010f22c0ea1b7c080066b810008ed88ec08ed0bf0010000031c0b9000c0000" +
    "f3abc7050010000003200000c7050020000003300000c70500300000830000000f20e083c8200f22e0b8001000000f22d8" +
    "b9800000c00f320d000100000f300f20c00d000000800f22c0ea827c00001800b031e6f4f4ebfd0f1f8000000000000000" +
    "0000000000ffff0000009acf00ffff00000092cf00ffff0000009aaf001f00907c0000";

function probeSector(): Buffer {
    const code = Buffer.from(PROBE_CODE_HEX, "hex");
    const sector = Buffer.alloc(512);
    code.copy(sector);
    sector[510] = 0x55;
    sector[511] = 0xaa;
    return sector;
}

/**
 * Boots the probe sector under `accel` and says whether it reached long mode and reported back
 * within `timeoutMs`. The QEMU process is killed and the sector removed whatever happens.
 */
export async function probeBoot(qemu: string, accel: ResolvedAccel, timeoutMs: number): Promise<boolean> {
    const dir = await mkdtemp(path.join(os.tmpdir(), "pq-accel-probe-"));
    let child: execa.ExecaChildProcess | undefined;
    let timer: NodeJS.Timeout | undefined;
    try {
        const sector = path.join(dir, "sector.img");
        await writeFile(sector, probeSector());
        // Under setpriv --pdeathsig: a provider killed mid-probe leaves no probe QEMU behind.
        child = execa(
            ...diesWithUs(qemu, [
                "-accel",
                accel,
                "-nodefaults",
                "-display",
                "none",
                "-m",
                "16",
                "-no-reboot",
                "-device",
                "isa-debug-exit,iobase=0xf4,iosize=0x04",
                "-drive",
                `file=${sector},format=raw,if=floppy`,
            ]),
            { reject: false, stdin: "ignore", stdout: "ignore", stderr: "pipe" },
        );
        const finished = child.then((r) => r);
        const timedOut = new Promise<"timeout">((resolve) => (timer = setTimeout(() => resolve("timeout"), timeoutMs)));
        const outcome = await Promise.race([finished, timedOut]);
        if (outcome === "timeout") return false;
        // With reject: false a failed spawn resolves to the spawn error itself.
        if ((outcome as unknown as NodeJS.ErrnoException).code === "ENOENT") {
            throw new Error(
                `${qemu} was not found; install it: sudo apt-get install --no-install-recommends qemu-system-x86`,
            );
        }
        return outcome.exitCode === PROBE_EXIT_CODE;
    } finally {
        clearTimeout(timer);
        if (child && child.exitCode === null && child.signalCode === null) {
            child.kill("SIGKILL");
            await child.catch(() => undefined);
        }
        await rm(dir, { recursive: true, force: true });
    }
}

interface CacheKey {
    bootId: string;
    qemu: string;
    qemuMtimeMs: number;
}

const memory = new Map<string, AccelVerdict>();

/**
 * The accelerator to run guests with. "tcg" is taken as asked; "auto" picks KVM only where it
 * is proven to work; "kvm" is refused, quickly and with the reason, where it does not.
 */
export async function resolveAccel(
    requested: RequestedAccel,
    opts: { qemu?: string; cacheDir?: string } = {},
): Promise<AccelVerdict> {
    if (requested === "tcg") return { accel: "tcg", reason: "accel tcg was requested" };
    const kvm = await kvmVerdict(opts.qemu ?? DEFAULT_QEMU, opts.cacheDir ?? resolveStateDir());
    const decision = applyRequest(requested, kvm);
    if (decision.kind === "refuse") throw new Error(decision.message);
    if (decision.kind === "probe") throw new Error("internal: applyRequest asked for a probe");
    return decision.verdict;
}

async function kvmVerdict(qemu: string, cacheDir: string): Promise<AccelVerdict> {
    const qemuPath = await findExecutable(qemu);
    const key: CacheKey = { bootId: await readBootId(), qemu: qemuPath, qemuMtimeMs: (await stat(qemuPath)).mtimeMs };
    const cacheFile = path.join(cacheDir, "accel.json");
    const memoKey = JSON.stringify([cacheFile, key]);
    const known = memory.get(memoKey) ?? (await readCachedVerdict(cacheFile, key));
    if (known) {
        memory.set(memoKey, known);
        return known;
    }
    const verdict = await decideKvm(qemuPath);
    memory.set(memoKey, verdict);
    await writeCachedVerdict(cacheDir, cacheFile, key, verdict);
    return verdict;
}

async function decideKvm(qemuPath: string): Promise<AccelVerdict> {
    const facts: KvmFacts = {
        deviceProblem: await kvmDeviceProblem(),
        cpuFlag: cpuVirtualizationFlag(await readFile("/proc/cpuinfo", "utf8")),
        kvmModules: await loadedKvmModules(),
    };
    let decision = decideAutoAccel(facts);
    if (decision.kind === "probe") {
        facts.probe = { booted: await probeBoot(qemuPath, "kvm", PROBE_TIMEOUT_MS), timeoutMs: PROBE_TIMEOUT_MS };
        decision = decideAutoAccel(facts);
    }
    if (decision.kind !== "use") throw new Error("internal: decideAutoAccel still wants a probe after one ran");
    return decision.verdict;
}

async function kvmDeviceProblem(): Promise<string | undefined> {
    try {
        const fh = await open("/dev/kvm", "r+");
        await fh.close();
        return undefined;
    } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code === "ENOENT") return "/dev/kvm does not exist (no KVM module loaded, or no virtualization support)";
        if (code === "EACCES" || code === "EPERM")
            return "this user cannot open /dev/kvm read-write (add the user to the kvm group and log in again)";
        return `/dev/kvm cannot be opened read-write: ${(err as Error).message}`;
    }
}

async function loadedKvmModules(): Promise<string[]> {
    try {
        return (await readdir("/sys/module")).filter((m) => /^kvm_/.test(m)).sort();
    } catch {
        return [];
    }
}

async function readBootId(): Promise<string> {
    return (await readFile("/proc/sys/kernel/random/boot_id", "utf8")).trim();
}

/** `name` as an absolute path: as given when it holds a slash, else the first match on $PATH. */
async function findExecutable(name: string): Promise<string> {
    const candidates = name.includes("/")
        ? [path.resolve(name)]
        : (process.env.PATH ?? "")
              .split(":")
              .filter(Boolean)
              .map((d) => path.join(d, name));
    for (const c of candidates) {
        try {
            await access(c, constants.X_OK);
            return c;
        } catch {
            // try the next directory
        }
    }
    throw new Error(
        `QEMU binary ${name} was not found${name.includes("/") ? "" : " on PATH"}; install it: sudo apt-get install --no-install-recommends qemu-system-x86`,
    );
}

async function readCachedVerdict(file: string, key: CacheKey): Promise<AccelVerdict | undefined> {
    let parsed: { key?: Partial<CacheKey>; verdict?: Partial<AccelVerdict> };
    // In a shared state directory another user could plant a verdict: only ours is believed.
    if (!isOwnFileSync(file)) return undefined;
    try {
        parsed = JSON.parse(await readFile(file, "utf8"));
    } catch {
        return undefined;
    }
    const k = parsed.key;
    const v = parsed.verdict;
    if (!k || k.bootId !== key.bootId || k.qemu !== key.qemu || k.qemuMtimeMs !== key.qemuMtimeMs) return undefined;
    if (!v || (v.accel !== "kvm" && v.accel !== "tcg") || typeof v.reason !== "string") return undefined;
    return { accel: v.accel, reason: v.reason };
}

/** Written to a temp file and renamed, so a concurrent reader sees the old verdict or the new one. */
async function writeCachedVerdict(dir: string, file: string, key: CacheKey, verdict: AccelVerdict): Promise<void> {
    await ensureStateDir(dir);
    await writeFileAtomic(file, JSON.stringify({ key, verdict }, null, 2) + "\n");
}
