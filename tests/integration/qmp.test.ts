import { spawn, type ChildProcess } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import {
    checkOurDaemon,
    identify,
    QemuStartError,
    readProcStat,
    startDaemonized,
    stopQemu,
    type ProcessIdentity,
} from "../../provider/host/qemu/qemuProcess";
import { QmpClient, queryStatus } from "../../provider/host/qemu/qmp";

/**
 * A real daemonized QEMU with no guest at all (SeaBIOS finds nothing to boot and idles): enough
 * for the control path — QMP, process identity and stopping — without waiting for a kernel.
 */

let dir: string;
const started: Array<{ identity: ProcessIdentity; pidfile: string; qmpSocket: string }> = [];
const children: ChildProcess[] = [];

beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), "pq-qmp-int-"));
});

afterAll(async () => {
    for (const t of started) await stopQemu(t, { powerdownMs: 0, quitMs: 2000 }).catch(() => undefined);
    for (const c of children) c.kill("SIGKILL");
    await rm(dir, { recursive: true, force: true });
});

let seq = 0;
async function bareQemu(): Promise<{
    identity: ProcessIdentity;
    pidfile: string;
    qmpSocket: string;
    serialLog: string;
}> {
    const sub = await mkdtemp(path.join(dir, `q${seq++}-`));
    const pidfile = path.join(sub, "qemu.pid");
    const qmpSocket = path.join(sub, "qmp.sock");
    const serialLog = path.join(sub, "serial.log");
    const identity = await startDaemonized(
        [
            "qemu-system-x86_64",
            "-accel",
            "tcg",
            "-m",
            "64",
            "-nic",
            "none",
            "-display",
            "none",
            "-serial",
            `file:${serialLog}`,
            "-daemonize",
            "-pidfile",
            pidfile,
            "-qmp",
            `unix:${qmpSocket},server=on,wait=off`,
        ],
        pidfile,
    );
    const t = { identity, pidfile, qmpSocket, serialLog };
    started.push(t);
    return t;
}

test("a daemonized QEMU is identified, answers QMP, reports pause and resume with events", async () => {
    const q = await bareQemu();
    expect(q.identity.pid).toBeGreaterThan(1);
    expect(await checkOurDaemon(q.identity, q.pidfile)).toEqual({ alive: true });
    const c = await QmpClient.connect(q.qmpSocket);
    try {
        expect(await queryStatus(c)).toEqual({ running: true, status: "running" });
        await c.execute("stop");
        await expect(c.waitForEvent("STOP", 5000)).resolves.toMatchObject({ event: "STOP" });
        expect(await queryStatus(c)).toEqual({ running: false, status: "paused" });
        await c.execute("cont");
        await c.waitForEvent("RESUME", 5000);
        expect((await queryStatus(c)).status).toBe("running");
        await expect(c.execute("no-such-command")).rejects.toThrow(/CommandNotFound/);
    } finally {
        c.close();
    }
});

test("stopQemu on a guest that ignores the power button falls back to quit, and nothing is left", async () => {
    const q = await bareQemu();
    const t0 = Date.now();
    expect(await stopQemu(q, { powerdownMs: 500 })).toBe("quit");
    expect(Date.now() - t0).toBeLessThan(5000);
    expect(await checkOurDaemon(q.identity, q.pidfile)).toMatchObject({ alive: false });
    // QEMU removes its pidfile on exit; its socket file stays (the caller removes it).
    expect(existsSync(q.pidfile)).toBe(false);
    expect(await stopQemu(q)).toBe("not-running");
});

test("QEMU serves one QMP client at a time; stopQemu then falls back to SIGTERM, not SIGKILL", async () => {
    const q = await bareQemu();
    const holder = await QmpClient.connect(q.qmpSocket);
    try {
        await expect(QmpClient.connect(q.qmpSocket, { connectTimeoutMs: 500 })).rejects.toThrow(/greeting.*timed out/);
        expect(await stopQemu(q, { powerdownMs: 500, quitMs: 3000 })).toBe("term");
        await holder.waitForClose(3000);
    } finally {
        holder.close();
    }
    expect(await checkOurDaemon(q.identity, q.pidfile)).toMatchObject({ alive: false });
});

test("a QEMU killed with SIGKILL is seen as gone (zombie or reaped)", async () => {
    const q = await bareQemu();
    process.kill(q.identity.pid, "SIGKILL");
    const deadline = Date.now() + 3000;
    let live = await checkOurDaemon(q.identity, q.pidfile);
    while (live.alive && Date.now() < deadline) live = await checkOurDaemon(q.identity, q.pidfile);
    expect(live).toMatchObject({ alive: false });
    expect(await stopQemu(q)).toBe("not-running");
});

test("a live process that is not our QEMU is never signalled", async () => {
    const sleeper = spawn("sleep", ["30"], { stdio: "ignore" });
    children.push(sleeper);
    const identity = await identify(sleeper.pid!);
    expect(identity).toBeDefined();
    const notOurs = await checkOurDaemon(identity!, path.join(dir, "some-vm", "qemu.pid"));
    expect(notOurs).toMatchObject({ alive: false, reason: expect.stringMatching(/not the QEMU/) });
    expect(
        await stopQemu({ identity: identity!, pidfile: path.join(dir, "x.pid"), qmpSocket: path.join(dir, "x.sock") }),
    ).toBe("not-running");
    // A recorded start time that differs is a reused pid.
    const reused = await checkOurDaemon({ ...identity!, startTime: "1" }, path.join(dir, "x.pid"));
    expect(reused).toMatchObject({ alive: false, reason: expect.stringMatching(/another process/) });
    expect((await readProcStat(sleeper.pid!))?.state).toMatch(/^[SR]$/);
});

test("a zombie counts as gone", async () => {
    // `sleep 0.1` exits under a parent (`sleep 30`) that never reaps it.
    const parent = spawn("sh", ["-c", "sleep 0.1 & echo $!; exec sleep 30"], { stdio: ["ignore", "pipe", "ignore"] });
    children.push(parent);
    const zpid = Number(await new Promise<string>((resolve) => parent.stdout!.once("data", (d) => resolve(String(d)))));
    const identity = await identify(zpid);
    expect(identity).toBeDefined();
    await new Promise((r) => setTimeout(r, 400));
    expect((await readProcStat(zpid))?.state).toBe("Z");
    expect(await identify(zpid)).toBeUndefined();
    expect(await checkOurDaemon(identity!, "/nonexistent")).toMatchObject({
        alive: false,
        reason: expect.stringMatching(/state Z/),
    });
});

test("QEMU refusing its command line fails with QEMU's own message and leaves no process", async () => {
    const sub = await mkdtemp(path.join(dir, "bad-"));
    const pidfile = path.join(sub, "qemu.pid");
    const err = await startDaemonized(
        ["qemu-system-x86_64", "-accel", "tcg", "-no-such-option", "-daemonize", "-pidfile", pidfile],
        pidfile,
    ).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(QemuStartError);
    expect((err as Error).message).toMatch(/exited with status 1: .*-no-such-option: invalid option/);
    expect(existsSync(pidfile)).toBe(false);
});
