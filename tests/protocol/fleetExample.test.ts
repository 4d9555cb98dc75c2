import { existsSync, readdirSync, readFileSync } from "node:fs";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import { assertBuilt } from "../engine/driver";
import { destroy, loadState, preview, refresh, up, type ProjectOptions, type RunSummary } from "../engine/miniEngine";
import { consecutiveFreePorts } from "../engine/ports";
import { fleetProject } from "../engine/program";
import { isSecret } from "../engine/wire";
import { ensureTestGuest, guestKernelArguments, READY_MARKER } from "../guest/testGuest";
import { httpGetWhenUp } from "../support/net";
import { isRunning } from "../support/process";
import { mountTag } from "../../provider/core/mountTag";

/**
 * examples/fleet as a user runs it, through the mini engine and the dynamic-provider plugin:
 * a preview of a new stack (every overlay's backing unknown), up, a no-op up, a preview of a
 * rebuilt base, refresh after a VM is killed and the up that restarts it, and destroy.
 */

const COUNT = 2;
/** The private network and the client VM that checks the web VMs over it. */
const EXTRA = 2;
let work: string;
let opts: ProjectOptions;
let stateDir: string;

beforeAll(async () => {
    assertBuilt();
    const guest = await ensureTestGuest();
    work = await mkdtemp(path.join(os.tmpdir(), "pq-fleet-t-"));
    const fleet = await fleetProject(work, "test");
    stateDir = fleet.stateDir;
    const shared = fleet.shared;
    opts = {
        ...fleet.opts,
        config: {
            kernel: guest.kernel,
            initrd: guest.initrd,
            kernelArguments: guestKernelArguments({
                name: "{name}",
                mounts: [{ tag: mountTag(shared), at: "/mnt/shared", readOnly: true }],
            }),
            sharedDir: shared,
            firstPort: await consecutiveFreePorts(COUNT),
            count: COUNT,
            readyPattern: READY_MARKER,
            accel: "tcg",
        },
    };
}, 180_000);

afterAll(async () => {
    // Whatever a failed test left running goes with the stack.
    if (opts && existsSync(opts.statePath))
        await destroy(opts).catch((err) => console.error(`cleanup destroy: ${err.message}`));
    if (work) await rm(work, { recursive: true, force: true });
}, 120_000);

function changes(s: RunSummary): number {
    return s.counts.create + s.counts.update + s.counts.replace + s.counts.delete;
}

function noErrors(s: RunSummary): void {
    expect(s.logs.filter((l) => l.severity === "error")).toEqual([]);
}

async function vmPids(): Promise<Record<string, number>> {
    const state = await loadState(opts.statePath);
    const vms = state.resources.filter((r) => r.type === "pulumi-nodejs:dynamic/qemu:VirtualMachine");
    return Object.fromEntries(vms.map((r) => [r.urn.split("::").pop()!, Number(r.outputs.pid)]));
}

async function expectAnswers(outputs: Record<string, unknown>): Promise<void> {
    const addresses = outputs.addresses as Record<string, string>;
    expect(Object.keys(addresses).sort()).toEqual(["web-1", "web-2"]);
    for (const [name, url] of Object.entries(addresses)) {
        expect((await httpGetWhenUp(url, 20_000)).body).toContain(`pulumi-qemu test guest ${name}`);
    }
}

test("a preview of the new stack plans every create and touches nothing", async () => {
    const s = await preview(opts);
    expect(s.counts).toEqual({ create: 1 + 2 * COUNT + EXTRA, update: 0, replace: 0, delete: 0, same: 0 });
    noErrors(s);
    expect(existsSync(stateDir)).toBe(false);
    expect(existsSync(opts.statePath)).toBe(false);
});

test("up starts every VM on its port; a second up changes nothing", async () => {
    const first = await up(opts);
    console.log(`fleet of ${COUNT}: up ${first.seconds.toFixed(1)} s`);
    expect(first.counts.create).toBe(1 + 2 * COUNT + EXTRA);
    noErrors(first);
    await expectAnswers(first.outputs);
    expect(first.outputs.vms).toEqual({ "web-1": "running", "web-2": "running" });
    expect(isSecret(first.outputs.sharedMountTag)).toBe(false);
    // The client fetched each web VM's page over the private network, by its address there.
    const hosts = String(first.outputs.hosts);
    const checks = readFileSync(String(first.outputs.clientSerialLog), "utf8")
        .split("\n")
        .filter((l) => l.includes("pq-check:"))
        .map((l) => l.trim());
    console.log(`private network ${String(first.outputs.lanSubnet)}:\n${hosts}${checks.join("\n")}`);
    for (const name of ["web-1", "web-2"]) {
        const ip = new RegExp(`^(\\S+) ${name}$`, "m").exec(hosts)![1];
        expect(ip.startsWith(String(first.outputs.lanSubnet).split(".").slice(0, 3).join(".") + ".")).toBe(true);
        expect(checks).toContain(`pq-check: ${ip} ok: pulumi-qemu test guest ${name}`);
    }
    expect(checks).toContain("pq-check: done, 2 ok, 0 failed");

    const again = await up(opts);
    console.log(`fleet of ${COUNT}: no-op up ${again.seconds.toFixed(1)} s`);
    expect(changes(again)).toBe(0);
    expect(again.counts.same).toBe(1 + 2 * COUNT + EXTRA);
    noErrors(again);
}, 300_000);

test("a preview of a rebuilt base replaces the chain and touches nothing", async () => {
    const otherBase = path.join(work, "other-base");
    await mkdir(otherBase);
    await writeFile(path.join(otherBase, "different.txt"), "another base\n");
    const before = JSON.stringify(readdirSync(stateDir, { recursive: true }).sort());
    const stateBefore = readFileSync(opts.statePath, "utf8");
    const s = await preview({ ...opts, config: { ...opts.config, baseDir: otherBase } });
    noErrors(s);
    // base, then each overlay (its backing unknown until the base exists) and each VM on it.
    // The client too: its kernel arguments name the web VMs' addresses, unknown until they exist.
    expect(s.counts).toMatchObject({ replace: 1 + 2 * COUNT + 1, create: 0, delete: 0 });
    expect(JSON.stringify(readdirSync(stateDir, { recursive: true }).sort())).toBe(before);
    expect(readFileSync(opts.statePath, "utf8")).toBe(stateBefore);
});

let killedVmDir = "";

test("refresh drops a VM killed behind the engine's back; the next up starts it again", async () => {
    const pids = await vmPids();
    killedVmDir = String(
        (await loadState(opts.statePath)).resources.find((r) => r.urn.endsWith("::web-2"))!.outputs.vmDir,
    );
    process.kill(pids["web-2"], "SIGKILL");
    const until = Date.now() + 10_000;
    while (Date.now() < until && isRunning(pids["web-2"])) await new Promise((r) => setTimeout(r, 100));

    const r = await refresh(opts);
    expect(r.steps.filter((st) => st.op === "delete").map((st) => st.urn.split("::").pop())).toEqual(["web-2"]);
    const s = await up(opts);
    expect(s.counts).toMatchObject({ create: 1, update: 0, replace: 0, delete: 0 });
    noErrors(s);
    await expectAnswers(s.outputs);
    const after = await vmPids();
    expect(after["web-1"]).toBe(pids["web-1"]);
    expect(after["web-2"]).not.toBe(pids["web-2"]);
}, 300_000);

test("a network switch killed behind the engine's back: refresh sees the network gone and its VMs drifted; up moves them to a new one", async () => {
    const before = await loadState(opts.statePath);
    const lan = before.resources.find((r) => r.type === "pulumi-nodejs:dynamic/qemu:Network")!;
    const switchPid = Number(lan.outputs.pid);
    process.kill(switchPid, "SIGKILL");
    const until = Date.now() + 10_000;
    while (Date.now() < until && isRunning(switchPid)) await new Promise((r) => setTimeout(r, 100));

    const r = await refresh(opts);
    expect(r.steps.filter((st) => st.op === "delete").map((st) => st.urn.split("::").pop())).toEqual(["lan"]);
    const drifted = (await loadState(opts.statePath)).resources
        .filter((res) => res.outputs.networkDrift !== undefined)
        .map((res) => res.urn.split("::").pop())
        .sort();
    expect(drifted).toEqual(["client", "web-1", "web-2"]);

    const s = await up(opts);
    noErrors(s);
    // A new network, and every VM that was on the old one replaced onto it.
    expect(s.counts).toMatchObject({ create: 1, replace: COUNT + 1, delete: 0 });
    await expectAnswers(s.outputs);
    const checks = readFileSync(String(s.outputs.clientSerialLog), "utf8")
        .split("\n")
        .filter((l) => l.includes("pq-check:"))
        .map((l) => l.trim());
    expect(checks).toContain(`pq-check: done, ${COUNT} ok, 0 failed`);
    const newLan = (await loadState(opts.statePath)).resources.find(
        (res) => res.type === "pulumi-nodejs:dynamic/qemu:Network",
    )!;
    expect(newLan.id).not.toBe(lan.id);
    expect(isRunning(Number(newLan.outputs.pid))).toBe(true);
}, 300_000);

test("destroy stops every VM and removes every image and VM directory", async () => {
    const pids = Object.values(await vmPids());
    const s = await destroy(opts);
    expect(s.counts.delete).toBe(2 + 2 * COUNT + EXTRA);
    expect(pids.filter(isRunning)).toEqual([]);
    expect((await loadState(opts.statePath)).resources).toEqual([]);
    // Only the killed VM's directory stays, as the provider keeps it for a post-mortem once refresh forgot it.
    expect(readdirSync(path.join(stateDir, "vms"))).toEqual([path.basename(killedVmDir)]);
    const left = readdirSync(stateDir, { recursive: true, withFileTypes: true })
        .filter((e) => e.isFile())
        .map((e) => path.relative(stateDir, path.join(e.parentPath, e.name)));
    console.log(`left in the state directory after destroy: ${JSON.stringify(left)}`);
    expect(
        left.filter((f) => !f.startsWith(path.join("vms", path.basename(killedVmDir))) && !f.endsWith(".json")),
    ).toEqual([]);
}, 120_000);
