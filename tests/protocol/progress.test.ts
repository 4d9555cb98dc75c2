import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import { openDriver, type Driver, type PluginKind } from "../engine/driver";
import { resolveAccel } from "../../provider/host/qemu/accel";
import { makeSecret } from "../engine/wire";

/**
 * Progress reaches the engine's Log service while a VM waits for readiness, through both
 * plugins: ours ties each message to the resource's URN (status lines, ephemeral); the dynamic
 * one cannot (its provider is not told the URN), so its messages name the resource instead.
 * The guest here never prints the pattern: the wait runs to its deadline, QEMU sits in the
 * firmware meanwhile, and nothing needs booting.
 */

const PATTERN = "pattern-this-guest-never-prints";

describe.each<PluginKind>(["qemu", "dynamic"])("progress through the %s plugin", (kind) => {
    let driver: Driver;
    let dir: string;

    beforeAll(async () => {
        dir = await mkdtemp(path.join(os.tmpdir(), `pq-prog-${kind[0]}-`));
        // One status line a second instead of every 5 s, so a 4 s wait shows several.
        driver = await openDriver(kind, { env: { PULUMI_QEMU_PROGRESS_SECONDS: "1" } });
    }, 60_000);

    afterAll(async () => {
        await driver?.close();
        if (dir) await rm(dir, { recursive: true, force: true });
    });

    test("a VM waiting for its serialPattern reports what it waits for and for how long, then fails at the deadline", async () => {
        const stateDir = path.join(dir, "s");
        const name = `prog-${kind}`;
        const urn = driver.urn("VirtualMachine", name);
        const inputs = {
            stateDir,
            vm: { name, accel: "auto", memoryMiB: 64 },
            ready: { serialPattern: PATTERN, timeoutSeconds: 4 },
        };
        const checked = await driver.plugin.check(urn, {}, driver.news("VirtualMachine", inputs));
        expect(checked.failures).toEqual([]);
        await expect(driver.plugin.create(urn, checked.inputs)).rejects.toThrow(/not ready within 4 s/);

        const waits = driver.engine.logs.filter((l) =>
            l.message.includes(`waiting for serialPattern "${PATTERN}" on the console`),
        );
        expect(waits.length).toBeGreaterThanOrEqual(2);
        for (const w of waits) {
            expect(w.severity).toBe("info");
            expect(w.message).toMatch(/\(\d+ s of 4\)$/);
        }
        // Time moves on from one line to the next.
        const seconds = waits.map((w) => Number(/\((\d+) s of 4\)/.exec(w.message)![1]));
        expect(seconds[seconds.length - 1]).toBeGreaterThan(seconds[0]);
        if (kind === "qemu") {
            expect(waits.every((w) => w.urn === urn && w.ephemeral)).toBe(true);
        } else {
            expect(
                waits.every(
                    (w) =>
                        w.urn === "" && !w.ephemeral && w.message.startsWith(`pulumi-qemu VirtualMachine "${name}": `),
                ),
            ).toBe(true);
        }

        // accel "auto" on a host without working KVM: a warning saying why, kept (not a status line).
        const verdict = await resolveAccel("auto", { cacheDir: stateDir });
        const kvmWarnings = driver.engine.logs.filter(
            (l) => l.severity === "warning" && l.message.includes("KVM is not usable"),
        );
        if (verdict.accel === "tcg") {
            expect(kvmWarnings).toHaveLength(1);
            expect(kvmWarnings[0].message).toContain(verdict.reason);
            expect(kvmWarnings[0].ephemeral).toBe(false);
            expect(kvmWarnings[0].urn).toBe(kind === "qemu" ? urn : "");
        } else {
            expect(kvmWarnings).toEqual([]);
        }
        expect(driver.engine.errors()).toEqual([]);
    }, 60_000);
});

describe("progress through our plugin hides secrets", () => {
    let driver: Driver;
    let dir: string;

    beforeAll(async () => {
        dir = await mkdtemp(path.join(os.tmpdir(), "pq-prog-s-"));
        driver = await openDriver("qemu", { env: { PULUMI_QEMU_PROGRESS_SECONDS: "1" } });
    }, 60_000);

    afterAll(async () => {
        await driver?.close();
        if (dir) await rm(dir, { recursive: true, force: true });
    });

    test("a secret serialPattern shows as [secret] in the status lines, as in the error", async () => {
        const secret = "hunter2-never-printed";
        const urn = driver.urn("VirtualMachine", "secretive");
        const inputs = {
            stateDir: path.join(dir, "s"),
            vm: { name: "secretive", accel: "tcg", memoryMiB: 64 },
            ready: { serialPattern: makeSecret(secret), timeoutSeconds: 3 },
        };
        const checked = await driver.plugin.check(urn, {}, driver.news("VirtualMachine", inputs));
        expect(checked.failures).toEqual([]);
        await expect(driver.plugin.create(urn, checked.inputs)).rejects.toThrow(/not ready within 3 s/);
        const waits = driver.engine.logs.filter(
            (l) => l.urn === urn && l.message.startsWith("waiting for serialPattern"),
        );
        expect(waits.length).toBeGreaterThanOrEqual(1);
        expect(waits.every((w) => w.message.includes('"[secret]"'))).toBe(true);
        expect(driver.engine.logs.some((l) => l.message.includes(secret))).toBe(false);
    }, 60_000);
});

describe("progress of a directory image through our plugin", () => {
    let driver: Driver;
    let dir: string;

    beforeAll(async () => {
        dir = await mkdtemp(path.join(os.tmpdir(), "pq-prog-d-"));
        // A status line every 10 ms: running mke2fs and debugfs alone takes longer.
        driver = await openDriver("qemu", { env: { PULUMI_QEMU_PROGRESS_SECONDS: "0.01" } });
    }, 60_000);

    afterAll(async () => {
        await driver?.close();
        if (dir) await rm(dir, { recursive: true, force: true });
    });

    test("building the ext4 image reports the directory, its entries and the time so far, tied to the resource", async () => {
        const tree = path.join(dir, "tree");
        await mkdir(tree);
        for (let i = 0; i < 64; i++) await writeFile(path.join(tree, `f${i}`), Buffer.alloc(128 * 1024, i));
        const urn = driver.urn("DiskImage", "rootfs");
        const checked = await driver.plugin.check(
            urn,
            {},
            driver.news("DiskImage", {
                stateDir: path.join(dir, "s"),
                source: { kind: "directory", path: tree, size: "64M" },
            }),
        );
        expect(checked.failures).toEqual([]);
        const made = await driver.plugin.create(urn, checked.inputs);
        const building = driver.engine.logs.filter((l) => l.message.startsWith(`building the ext4 image of ${tree} (`));
        expect(building.length).toBeGreaterThanOrEqual(1);
        expect(building[0].message).toMatch(/ entries into 64 MiB\): \d+ s$/);
        expect(building.every((l) => l.urn === urn && l.ephemeral && l.severity === "info")).toBe(true);
        await driver.plugin.delete(made.id, urn, made.properties, checked.inputs);
        expect(driver.engine.errors()).toEqual([]);
    }, 60_000);
});
