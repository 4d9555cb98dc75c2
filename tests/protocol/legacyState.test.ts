import { execFileSync } from "node:child_process";
import { copyFile, cp, lstat, mkdir, readdir, readFile, rm, writeFile } from "node:fs/promises";
import * as path from "node:path";
import { assertBuilt } from "../engine/driver";
import { startEngineServer, type EngineServer } from "../engine/engineServer";
import { preview, type StackState } from "../engine/miniEngine";
import { startDynamicPlugin, type PluginClient } from "../engine/plugin";
import { linkPackages } from "../engine/program";
import { stampOf, type FileStamp } from "../../provider/host/files/fileHash";
import { LEGACY_BASE } from "../fixtures/state-0.2.0/base";
import { ensureTestGuest } from "../guest/testGuest";

/**
 * Stacks made by pulumi-qemu 0.2.0 keep working. A dynamic resource's state stores its serialized
 * shim, which `require`s "pulumi-qemu/bin/provider/resources/<name>.js" and ".../plugin/engineLog.js"
 * from the installed package: those paths are frozen. tests/fixtures/state-0.2.0 holds what 0.2.0
 * (main at 20ed9dd) left for program/ — one of each resource: the state it wrote and the files it
 * made (world.tar.gz), by make.sh. Here they are put back where they were and the current package
 * is asked about them: the same program previews as no change, and each stored shim, loaded as
 * the dynamic-provider plugin loads it, still checks and diffs to no change. (The VM and the switch
 * are not running: a diff compares what was asked for, it does not look at processes.)
 *
 * One thing is rebound: an image's identity is its device, inode and birth time on the host that
 * made it, which no unpacked copy can have; the stamps of the files put back replace the recorded
 * ones (in the state and the images' own records), and nothing else is touched.
 */

const FIXTURE = path.join(__dirname, "..", "fixtures", "state-0.2.0");
const DIFF_NONE = 1;

const base = LEGACY_BASE;
const env = { PQ_BASE: base };
let state: StackState;

beforeAll(async () => {
    assertBuilt();
    const guest = await ensureTestGuest();
    await rm(base, { recursive: true, force: true });
    await mkdir(base, { recursive: true, mode: 0o700 });
    execFileSync("tar", ["-xzf", path.join(FIXTURE, "world.tar.gz"), "-C", base]);
    await copyFile(guest.kernel, path.join(base, "vmlinuz"));
    await copyFile(guest.initrd, path.join(base, "initrd.img"));
    state = await rebindStamps(JSON.parse(await readFile(path.join(FIXTURE, "state.json"), "utf8")));
    await writeFile(path.join(base, "state.json"), JSON.stringify(state, null, 2));
    await cp(path.join(FIXTURE, "program"), path.join(base, "program"), { recursive: true });
    await linkPackages(path.join(base, "program"));
}, 300_000);

afterAll(async () => {
    await rm(base, { recursive: true, force: true });
});

test("the fixture is what 0.2.0's shims store: every resource kind, each naming its frozen module path", () => {
    const custom = state.resources.filter((r) => r.custom);
    expect(custom.map((r) => r.type.replace("pulumi-nodejs:dynamic/qemu:", "")).sort()).toEqual([
        "DiskImage",
        "DiskImage",
        "GuestCommand",
        "Network",
        "RunScript",
        "VirtualMachine",
    ]);
    for (const r of custom) {
        const name = r.type.replace("pulumi-nodejs:dynamic/qemu:", "");
        const shim = r.inputs.__provider as string;
        expect(shim).toContain(`pulumi-qemu/bin/provider/resources/${name[0].toLowerCase()}${name.slice(1)}.js`);
        expect(shim).toContain('"plugin/engineLog.js"');
    }
});

test("the same program over 0.2.0's state previews as no change", async () => {
    const run = await preview({
        dir: path.join(base, "program"),
        project: "legacy-state",
        stack: "dev",
        statePath: path.join(base, "state.json"),
        env,
        programTimeoutMs: 300_000,
    });
    const custom = state.resources.filter((r) => r.custom).length;
    expect(run.steps.filter((s) => s.op !== "same")).toEqual([]);
    expect(run.counts.same).toBeGreaterThanOrEqual(custom);
});

describe("each stored 0.2.0 shim, loaded by the dynamic-provider plugin", () => {
    let engine: EngineServer;
    let plugin: PluginClient;

    beforeAll(async () => {
        engine = await startEngineServer();
        // The plugin resolves the shims' requires from the program's directory, as in a user's stack.
        plugin = await startDynamicPlugin(engine.address, {
            cwd: path.join(base, "program"),
            env,
            project: "legacy-state",
        });
    });

    afterAll(async () => {
        await plugin?.close();
        await engine?.close();
    });

    test("checks its own inputs without failures and diffs them as no change", async () => {
        for (const r of state.resources.filter((r) => r.custom)) {
            const checked = await plugin.check(r.urn, r.inputs, r.inputs);
            expect({ urn: r.urn, failures: checked.failures }).toEqual({ urn: r.urn, failures: [] });
            const diff = await plugin.diff(r.id, r.urn, r.outputs, checked.inputs, r.inputs);
            expect({ urn: r.urn, changes: diff.changes, replaces: diff.replaces }).toEqual({
                urn: r.urn,
                changes: DIFF_NONE,
                replaces: [],
            });
        }
        expect(engine.errors()).toEqual([]);
    });
});

/** Each image's recorded stamp (its sidecar record's) replaced by the unpacked file's, wherever it appears. */
async function rebindStamps(legacy: StackState): Promise<StackState> {
    const rebound = new Map<string, FileStamp>();
    const sidecars = (await readdir(base, { recursive: true })).filter((f) => f.endsWith(".pulumi-qemu.json"));
    for (const rel of sidecars) {
        const record = JSON.parse(await readFile(path.join(base, rel), "utf8"));
        const now = stampOf(await lstat(path.join(base, rel.slice(0, -".pulumi-qemu.json".length)), { bigint: true }));
        rebound.set(`${record.stamp.dev}:${record.stamp.ino}`, now);
        await writeFile(path.join(base, rel), JSON.stringify({ ...record, stamp: now }, null, 2), { mode: 0o600 });
    }
    expect(rebound.size).toBe(2);
    const walk = (value: unknown): unknown => {
        if (Array.isArray(value)) return value.map(walk);
        if (value === null || typeof value !== "object") return value;
        const o = value as Record<string, unknown>;
        const now = typeof o.ino === "string" ? rebound.get(`${o.dev}:${o.ino}`) : undefined;
        return now ?? Object.fromEntries(Object.entries(o).map(([k, v]) => [k, walk(v)]));
    };
    return walk(legacy) as StackState;
}
