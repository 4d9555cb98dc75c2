import { readFileSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import execa from "execa";
import { heal, isolate, partition, switchPorts } from "../../sdk/partitions";
import { resetIdlePorts, withSwitchConsole, mgmtPath } from "../../provider/host/net/switchControl";
import { startOnSwitch, runOnSwitch } from "../support/netnsClient";

/**
 * Partitions through the switch's management console, against a real vde_switch and stand-ins
 * that are namespaces plugged into it (the guest-level test is in networkDhcpGuests.test.ts).
 */

let dir: string;
let switchPid: number;
const standIns: Array<ReturnType<typeof startOnSwitch>> = [];
const plugs: number[] = [];

beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), "pq-part-"));
    const pidfile = path.join(dir, "switch.pid");
    await execa("vde_switch", [
        "--daemon",
        "--sock",
        path.join(dir, "switch"),
        "--pidfile",
        pidfile,
        "--dirmode",
        "0700",
        "--mode",
        "0600",
        "--mgmt",
        mgmtPath(dir),
        "--mgmtmode",
        "0600",
    ]);
    switchPid = Number(readFileSync(pidfile, "utf8").trim());
});

afterAll(async () => {
    for (const s of standIns) s.kill("SIGKILL");
    for (const pid of plugs) killQuietly(pid);
    if (switchPid) process.kill(switchPid, "SIGTERM");
    await rm(dir, { recursive: true, force: true });
});

/** A stand-in at `ip` that stays on the switch; resolves to its plug's pid once it is up. */
async function standIn(name: string, ip: string, mac: string): Promise<{ pid: number }> {
    const pidfile = path.join(dir, `${name}.plug.pid`);
    const p = startOnSwitch(path.join(dir, "switch"), mac, `ip addr add ${ip}/24 dev tap0; echo up; exec sleep 120`, {
        timeoutMs: 150_000,
        plugPidfile: pidfile,
    });
    standIns.push(p);
    await new Promise<void>((resolve, reject) => {
        p.stdout!.on("data", (d) => String(d).includes("up") && resolve());
        p.catch(reject);
    });
    const pid = Number(readFileSync(pidfile, "utf8").trim());
    plugs.push(pid);
    return { pid };
}

function killQuietly(pid: number): void {
    try {
        process.kill(pid, "SIGKILL");
    } catch {
        // already gone
    }
}

const sw = () => path.join(dir, "switch");
const reach = (from: string, to: string) =>
    `ip addr add ${from}/24 dev tap0; busybox ping -c 1 -W 1 ${to} >/dev/null 2>&1 && echo reach || echo no`;

test("isolate cuts a VM off at once, heal brings it back; partition groups keep apart; idle ports are reset", async () => {
    const a = await standIn("a", "10.99.0.1", "02:00:00:00:00:01");
    const b = await standIn("b", "10.99.0.2", "02:00:00:00:00:02");
    const net = { networkDir: dir };
    expect((await runOnSwitch(sw(), "02:00:00:00:00:09", reach("10.99.0.9", "10.99.0.1"))).stdout).toBe("reach");

    const t0 = process.hrtime.bigint();
    await isolate(net, a);
    const isolateMs = Number(process.hrtime.bigint() - t0) / 1e6;
    // Measured, not asserted (bench/networkDhcp.ts): the switch applies it before answering.
    console.log(`isolate took ${isolateMs.toFixed(1)} ms`);
    // The very next packet is dropped: nothing to wait for.
    expect((await runOnSwitch(sw(), "02:00:00:00:00:09", reach("10.99.0.9", "10.99.0.1"))).stdout).toBe("no");
    expect((await runOnSwitch(sw(), "02:00:00:00:00:09", reach("10.99.0.9", "10.99.0.2"))).stdout).toBe("reach");

    const t1 = process.hrtime.bigint();
    await heal(net);
    console.log(`heal took ${(Number(process.hrtime.bigint() - t1) / 1e6).toFixed(1)} ms`);
    expect((await runOnSwitch(sw(), "02:00:00:00:00:09", reach("10.99.0.9", "10.99.0.1"))).stdout).toBe("reach");
    expect((await switchPorts(net)).every((p) => p.vlan === 0)).toBe(true);

    // Two groups: a with b, the unnamed rest (the probe) apart from both.
    await partition(net, [[a, b]]);
    expect((await runOnSwitch(sw(), "02:00:00:00:00:09", reach("10.99.0.9", "10.99.0.2"))).stdout).toBe("no");
    // a and b share a VLAN of their own (that they reach each other is shown on real guests).
    const ports = await switchPorts(net);
    const vlanOf = (pid: number) => ports.find((p) => p.pids.includes(pid))!.vlan;
    expect(vlanOf(a.pid)).toBe(vlanOf(b.pid));
    expect(vlanOf(a.pid)).not.toBe(0);

    // a leaves while partitioned: its port keeps the VLAN until the idle ports are reset (what a VM's delete does).
    standIns[0].kill("SIGKILL");
    killQuietly(a.pid);
    await new Promise((r) => setTimeout(r, 300));
    const idle = (await switchPorts(net)).filter((p) => !p.active && p.vlan !== 0);
    expect(idle.length).toBeGreaterThan(0);
    await withSwitchConsole(mgmtPath(dir), resetIdlePorts);
    expect((await switchPorts(net)).filter((p) => !p.active && p.vlan !== 0)).toEqual([]);
    // A newcomer, which the switch gives a's freed port, then lands in the default VLAN, not in the old partition.
    const c = await standIn("c", "10.99.0.3", "02:00:00:00:00:03");
    expect((await switchPorts(net)).find((p) => p.pids.includes(c.pid))!.vlan).toBe(0);
    expect((await runOnSwitch(sw(), "02:00:00:00:00:09", reach("10.99.0.9", "10.99.0.3"))).stdout).toBe("reach");
    await heal(net);
    expect((await runOnSwitch(sw(), "02:00:00:00:00:09", reach("10.99.0.9", "10.99.0.2"))).stdout).toBe("reach");
});

test("a switch without a management socket is refused saying what to do", async () => {
    await expect(isolate({ networkDir: path.join(dir, "nowhere") }, { pid: 1 })).rejects.toThrow(
        /no management socket .* make it again/,
    );
});
