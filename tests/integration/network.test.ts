import { spawn } from "node:child_process";
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { mkdir, mkdtemp, rm, utimes } from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import execa from "execa";
import * as network from "../../provider/resources/network";
import type { NetworkOutputs } from "../../provider/resources/network";
import { startSwitch } from "../../provider/host/net/vdeSwitch";
import { isRunning } from "../support/process";

/**
 * The Network resource against a real vde_switch: owner-only files, another user refused,
 * overlaps refused, a killed switch seen by read, delete that stops only our own process.
 */

let dir: string;
const made: NetworkOutputs[] = [];

beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), "pq-net-"));
});

afterAll(async () => {
    await Promise.all(made.map((outs) => network.remove("", outs).catch(() => undefined)));
    await rm(dir, { recursive: true, force: true });
});

async function createNet(inputs: network.NetworkInputs): Promise<{ id: string; outs: NetworkOutputs }> {
    const r = await network.create(inputs);
    const outs = r.outs as NetworkOutputs;
    made.push(outs);
    return { id: r.id, outs };
}

function mode(p: string): number {
    return statSync(p).mode & 0o777;
}

test("a network is a running switch in owner-only directories, with a default /24 from its id", async () => {
    const stateDir = path.join(dir, "basic");
    const t0 = Date.now();
    const { id, outs } = await createNet({ name: "lan", stateDir });
    console.log(`network create took ${Date.now() - t0} ms`);
    expect(id).toMatch(/^lan-[A-Za-z0-9]{6}$/);
    expect(outs.networkDir).toBe(path.join(stateDir, "networks", id));
    expect(outs.subnet).toMatch(/^10\.(6[4-9]|[7-9]\d|1[01]\d|12[0-7])\.\d{1,3}\.0\/24$/);
    expect(outs.netmask).toBe("255.255.255.0");
    expect(outs.switchIdentity).toBe(`${outs.bootId}/${outs.pid}/${outs.processStartTime}`);
    expect(isRunning(outs.pid)).toBe(true);
    expect(readFileSync(`/proc/${outs.pid}/cmdline`, "utf8").split("\0")).toEqual(
        expect.arrayContaining(["vde_switch", outs.pidfile]),
    );
    for (const d of [stateDir, path.join(stateDir, "networks"), outs.networkDir, outs.switchDir])
        expect(mode(d)).toBe(0o700);
    expect(mode(path.join(outs.switchDir, "ctl"))).toBe(0o600);
    expect(mode(path.join(outs.networkDir, "network.json"))).toBe(0o600);
    expect(await network.read(id, outs)).toEqual({ id, props: outs });
    // No input changed: no diff.
    expect(await network.diff(id, outs, { name: "lan", stateDir })).toEqual({ changes: false });
    expect(await network.diff(id, outs, { name: "lan", stateDir, subnet: "10.9.9.0/24" })).toMatchObject({
        changes: true,
        replaces: ["subnet"],
        deleteBeforeReplace: true,
    });

    await network.remove(id, outs);
    expect(isRunning(outs.pid)).toBe(false);
    expect(existsSync(outs.networkDir)).toBe(false);
});

test("only the owner can attach: a process running as nobody is refused, the owner is not", async () => {
    const { outs } = await createNet({ stateDir: path.join(dir, "private") });
    const asNobody = await execa(
        "setpriv",
        ["--reuid", "nobody", "--regid", "nogroup", "--clear-groups", "vde_plug", outs.switchDir],
        {
            reject: false,
            timeout: 10000,
            stdin: "ignore",
        },
    );
    expect(asNobody.exitCode).not.toBe(0);
    expect(asNobody.stderr).toMatch(/Permission denied/);
    // Nor can a QEMU of theirs plug a NIC into it.
    const qemuAsNobody = await execa(
        "setpriv",
        [
            "--reuid",
            "nobody",
            "--regid",
            "nogroup",
            "--clear-groups",
            "qemu-system-x86_64",
            "-accel",
            "tcg",
            "-display",
            "none",
            "-nodefaults",
            "-S",
            "-netdev",
            `vde,id=n0,sock=${outs.switchDir}`,
        ],
        // Were it let in, this paused QEMU would run until the timeout kills it.
        { reject: false, timeout: 20000, killSignal: "SIGKILL", stdin: "ignore" },
    );
    expect(qemuAsNobody.exitCode).not.toBe(0);
    expect(qemuAsNobody.stderr).toMatch(/Could not open vde: Permission denied/);
    // The same command as the owner connects (and ends when its stdin does).
    const asOwner = await execa("vde_plug", [outs.switchDir], { reject: false, timeout: 10000, stdin: "ignore" });
    expect(asOwner.stderr).toBe("");
    expect(asOwner.exitCode).toBe(0);
}, 30_000);

test("overlapping subnets in one state directory are refused naming subnet; nothing is left behind", async () => {
    const stateDir = path.join(dir, "overlap");
    const { id } = await createNet({ stateDir, subnet: "10.200.0.0/16" });
    const before = readdirSync(path.join(stateDir, "networks"));
    await expect(network.create({ stateDir, subnet: "10.200.7.0/24" })).rejects.toThrow(
        `subnet: subnet 10.200.7.0/24 overlaps 10.200.0.0/16 of network ${id} in the same state directory`,
    );
    expect(readdirSync(path.join(stateDir, "networks"))).toEqual(before);
    // A default subnet steers clear of live networks instead.
    const { outs } = await createNet({ stateDir });
    expect(outs.subnet.startsWith("10.200.")).toBe(false);
});

test("bad inputs fail check naming the field", async () => {
    // A dynamic resource's inputs also hold `__provider`, which is not the user's to judge.
    const r = await network.check({}, { subnet: "10.1.2.3/24", name: "a/b", __provider: "…" });
    expect(r.failures).toEqual(
        expect.arrayContaining([
            {
                property: "subnet",
                reason: expect.stringMatching(/host bits set; write its network address, 10\.1\.2\.0\/24/),
            },
            { property: "name", reason: expect.stringMatching(/letters, digits/) },
        ]),
    );
    expect(r.failures).toHaveLength(2);
});

test("a switch killed with SIGKILL is gone for read; delete then touches no other process", async () => {
    const { id, outs } = await createNet({ stateDir: path.join(dir, "killed") });
    process.kill(outs.pid, "SIGKILL");
    const until = Date.now() + 5000;
    while (isRunning(outs.pid) && Date.now() < until) await new Promise((r) => setTimeout(r, 50));
    expect(await network.read(id, outs)).toEqual({ id: "", props: {} });
    // Nothing would ever remove a forgotten network's files: read did.
    expect(existsSync(outs.networkDir)).toBe(false);
    await network.remove(id, outs);
});

test("delete never signals a process that merely holds the recorded pid", async () => {
    const { id, outs } = await createNet({ stateDir: path.join(dir, "reused") });
    const stranger = spawn("sleep", ["30"], { stdio: "ignore" });
    try {
        // The record now names another process (as after a reboot or pid reuse).
        const forged = { ...outs, pid: stranger.pid! };
        expect(await network.read(id, forged)).toEqual({ id: "", props: {} });
        await network.remove(id, forged);
        expect(isRunning(stranger.pid!)).toBe(true);
        // Our own switch was not stopped either (its identity was not in the record we passed),
        // nor were its sockets pulled from under it.
        expect(isRunning(outs.pid)).toBe(true);
        expect(existsSync(path.join(outs.switchDir, "ctl"))).toBe(true);
    } finally {
        stranger.kill("SIGKILL");
    }
});

test("a create that crashed before writing its record leaves a switch the next create stops and cleans", async () => {
    const stateDir = path.join(dir, "crashed");
    const networks = path.join(stateDir, "networks");
    const orphan = path.join(networks, "lan-Crash1");
    await mkdir(orphan, { recursive: true, mode: 0o700 });
    const identity = await startSwitch(orphan);
    try {
        // Fresh orphans may be a create still under way: left alone.
        const first = await createNet({ stateDir });
        expect(isRunning(identity.pid)).toBe(true);
        const old = new Date(Date.now() - 120_000);
        await utimes(orphan, old, old);
        await createNet({ stateDir });
        expect(isRunning(identity.pid)).toBe(false);
        expect(existsSync(orphan)).toBe(false);
        // Live networks with records are untouched.
        expect(isRunning(first.outs.pid)).toBe(true);
    } finally {
        if (isRunning(identity.pid)) process.kill(identity.pid, "SIGKILL");
    }
});
