import { access, constants, mkdir, mkdtemp, open, readFile, rm, stat, writeFile } from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import { cpuVirtualizationFlag } from "../../provider/core/accelChoice";
import { probeBoot, resolveAccel } from "../../provider/host/qemu/accel";

/** The accelerator probe against the real QEMU and the real /dev/kvm of this host. */

const QEMU_PATH = "/usr/bin/qemu-system-x86_64";
let work: string;

async function kvmReallyOffered(): Promise<boolean> {
    const flag = cpuVirtualizationFlag(await readFile("/proc/cpuinfo", "utf8"));
    if (!flag) return false;
    try {
        await (await open("/dev/kvm", "r+")).close();
        return true;
    } catch {
        return false;
    }
}

beforeAll(async () => {
    try {
        await access(QEMU_PATH, constants.X_OK);
    } catch {
        throw new Error(
            `${QEMU_PATH} is missing; install it: sudo apt-get install --no-install-recommends qemu-system-x86`,
        );
    }
    work = await mkdtemp(path.join(os.tmpdir(), "pq-accel-"));
});

afterAll(async () => {
    if (work) await rm(work, { recursive: true, force: true });
});

test("the probe sector boots to long mode and exits under TCG", async () => {
    const started = Date.now();
    expect(await probeBoot(QEMU_PATH, "tcg", 15_000)).toBe(true);
    console.log(`TCG probe boot: ${Date.now() - started} ms`);
});

test("the KVM probe agrees with the CPU flags and the device access of this host", async () => {
    const started = Date.now();
    const booted = await probeBoot(QEMU_PATH, "kvm", 2000);
    console.log(`KVM probe boot: ${booted} after ${Date.now() - started} ms`);
    expect(booted).toBe(await kvmReallyOffered());
    expect(Date.now() - started).toBeLessThan(5000);
});

describe("on a host without hardware virtualization", () => {
    beforeAll(async () => {
        if (await kvmReallyOffered()) {
            throw new Error(
                "this host offers vmx/svm and an openable /dev/kvm; these tests describe a host without them",
            );
        }
    });

    test("auto resolves to tcg, blaming the missing CPU flags, quickly", async () => {
        const started = Date.now();
        const v = await resolveAccel("auto", { qemu: QEMU_PATH, cacheDir: path.join(work, "auto") });
        expect(v.accel).toBe("tcg");
        const deviceOpens = await open("/dev/kvm", "r+").then(
            (fh) => fh.close().then(() => true),
            () => false,
        );
        expect(v.reason).toMatch(deviceOpens ? /neither vmx nor svm/ : /\/dev\/kvm/);
        expect(Date.now() - started).toBeLessThan(5000);
    });

    test("kvm is refused within a few seconds, saying why and what to use instead", async () => {
        const started = Date.now();
        await expect(resolveAccel("kvm", { qemu: QEMU_PATH, cacheDir: path.join(work, "kvm") })).rejects.toThrow(
            /accel "kvm" was requested but KVM unusable: .*use accel "tcg"/,
        );
        expect(Date.now() - started).toBeLessThan(5000);
    });
});

test("tcg is granted without probing", async () => {
    expect(await resolveAccel("tcg", { cacheDir: path.join(work, "never-created") })).toEqual({
        accel: "tcg",
        reason: "accel tcg was requested",
    });
    await expect(stat(path.join(work, "never-created"))).rejects.toMatchObject({ code: "ENOENT" });
});

test("the verdict is cached per boot and QEMU binary, in a private file that later calls trust", async () => {
    const dir = path.join(work, "cache");
    const first = await resolveAccel("auto", { qemu: QEMU_PATH, cacheDir: dir });
    const file = path.join(dir, "accel.json");
    const saved = JSON.parse(await readFile(file, "utf8"));
    expect(saved.key).toEqual({
        bootId: (await readFile("/proc/sys/kernel/random/boot_id", "utf8")).trim(),
        qemu: QEMU_PATH,
        qemuMtimeMs: (await stat(QEMU_PATH)).mtimeMs,
    });
    expect(saved.verdict).toEqual(first);
    expect((await stat(dir)).mode & 0o777).toBe(0o700);

    // A fresh cache dir holding a planted verdict under the right key: if resolveAccel answers
    // with it, it read the file instead of deciding (and probing) again.
    const planted = path.join(work, "planted");
    await mkdir(planted, { mode: 0o700 });
    await writeFile(
        path.join(planted, "accel.json"),
        JSON.stringify({ key: saved.key, verdict: { accel: "tcg", reason: "planted verdict" } }),
    );
    const started = Date.now();
    expect(await resolveAccel("auto", { qemu: QEMU_PATH, cacheDir: planted })).toEqual({
        accel: "tcg",
        reason: "planted verdict",
    });
    expect(Date.now() - started).toBeLessThan(200);

    // A verdict from another boot is ignored and replaced.
    const stale = path.join(work, "stale");
    await mkdir(stale, { mode: 0o700 });
    await writeFile(
        path.join(stale, "accel.json"),
        JSON.stringify({ key: { ...saved.key, bootId: "another-boot" }, verdict: { accel: "kvm", reason: "stale" } }),
    );
    expect(await resolveAccel("auto", { qemu: QEMU_PATH, cacheDir: stale })).toEqual(first);
    expect(JSON.parse(await readFile(path.join(stale, "accel.json"), "utf8")).key.bootId).toBe(saved.key.bootId);
});
