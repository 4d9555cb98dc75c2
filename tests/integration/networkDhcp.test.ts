import { existsSync, readFileSync } from "node:fs";
import { mkdir, mkdtemp, rm, utimes } from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import { parseSubnet, type Subnet } from "../../provider/core/network";
import { startDhcp } from "../../provider/host/net/dhcpServer";
import { startSwitch, switchPaths } from "../../provider/host/net/vdeSwitch";
import * as network from "../../provider/resources/network";
import type { NetworkOutputs } from "../../provider/resources/network";
import { isRunning } from "../support/process";

/**
 * The Network resource's DHCP/DNS server: started with the switch by default, absent with
 * `dhcp: false`, turned on and off in place, a dead one reported by read and restarted by
 * update, stopped by delete, and a crashed create's server found and stopped. What guests get
 * from it is in networkDhcpGuests.test.ts.
 */

let dir: string;
const made: NetworkOutputs[] = [];

beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), "pq-netdhcp-"));
});

afterAll(async () => {
    await Promise.all(made.map((outs) => network.remove("", outs).catch(() => undefined)));
    await rm(dir, { recursive: true, force: true });
});

async function createNet(inputs: network.NetworkInputs): Promise<{ id: string; outs: NetworkOutputs }> {
    const r = await network.create(inputs);
    made.push(r.outs as NetworkOutputs);
    return { id: r.id, outs: r.outs as NetworkOutputs };
}

async function until(cond: () => boolean, ms = 5000): Promise<void> {
    const end = Date.now() + ms;
    while (!cond()) {
        if (Date.now() > end) throw new Error("condition not met in time");
        await new Promise((r) => setTimeout(r, 20));
    }
}

const cmdline = (pid: number) => readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0");

test("a network runs its DHCP/DNS server by default; dhcp: false keeps a bare switch", async () => {
    const stateDir = path.join(dir, "basic");
    const t0 = Date.now();
    const { id, outs } = await createNet({ name: "Lab", stateDir });
    const withMs = Date.now() - t0;
    expect(outs).toMatchObject({ dhcp: true, domain: "lab", dhcpServer: outs.subnet.replace(/0\/24$/, "254") });
    const { server, plug } = outs.dhcpIdentity!;
    expect(cmdline(server.pid)[0]).toBe("dnsmasq");
    expect(cmdline(plug.pid)[0]).toBe("vde_plug2tap");
    expect(readFileSync(path.join(outs.networkDir, "network.json"), "utf8")).toContain('"domain": "lab"');
    expect(await network.read(id, outs)).toEqual({ id, props: outs });
    expect(await network.diff(id, outs, { name: "Lab", stateDir })).toEqual({ changes: false });
    expect(await network.diff(id, outs, { name: "Lab", stateDir, dhcp: true })).toEqual({ changes: false });

    const t1 = Date.now();
    const bare = await createNet({ stateDir, dhcp: false });
    const withoutMs = Date.now() - t1;
    console.log(`network create: ${withMs} ms with DHCP, ${withoutMs} ms without`);
    expect(bare.outs.dhcp).toBe(false);
    expect(bare.outs.dhcpIdentity).toBeUndefined();
    expect(existsSync(path.join(bare.outs.networkDir, "dhcp"))).toBe(false);

    await network.remove(id, outs);
    await until(() => !isRunning(server.pid) && !isRunning(plug.pid));
    expect(existsSync(outs.networkDir)).toBe(false);
});

test("a network from before dhcp existed stays as it is until the program asks for dhcp: then it gets its server in place; dhcp: false takes it away", async () => {
    const stateDir = path.join(dir, "old");
    const { id, outs } = await createNet({ stateDir, dhcp: false });
    // The state such a network has: none of the new outputs.
    const { dhcp: _d, domain: _dom, ...oldState } = outs;
    // The same program as before (no dhcp): nothing to do, so an old stack's no-op up touches nothing.
    expect(await network.diff(id, oldState as NetworkOutputs, { stateDir })).toEqual({ changes: false });
    const d = await network.diff(id, oldState as NetworkOutputs, { stateDir, dhcp: true });
    expect(d).toEqual({ changes: true, replaces: [] });
    const updated = (await network.update!(id, oldState as NetworkOutputs, { stateDir, dhcp: true }))
        .outs as NetworkOutputs;
    made.push(updated);
    expect(updated).toMatchObject({ dhcp: true, pid: outs.pid, switchIdentity: outs.switchIdentity });
    expect(isRunning(updated.dhcpIdentity!.server.pid)).toBe(true);
    // And off again, in place.
    expect(await network.diff(id, updated, { stateDir, dhcp: false })).toEqual({ changes: true, replaces: [] });
    const off = (await network.update!(id, updated, { stateDir, dhcp: false })).outs as NetworkOutputs;
    made.push(off);
    await until(() => !isRunning(updated.dhcpIdentity!.server.pid));
    expect(off.dhcp).toBe(false);
    expect(off.dhcpIdentity).toBeUndefined();
    expect(existsSync(path.join(outs.networkDir, "dhcp"))).toBe(false);
    expect(isRunning(outs.pid)).toBe(true);
});

test("a killed dnsmasq is drift that read reports and up repairs in place", async () => {
    const stateDir = path.join(dir, "drift");
    const { id, outs } = await createNet({ stateDir });
    const old = outs.dhcpIdentity!;
    process.kill(old.server.pid, "SIGKILL");
    await until(() => !isRunning(old.server.pid));
    const read = await network.read(id, outs);
    const props = read.props as NetworkOutputs;
    expect(read.id).toBe(id);
    expect(props.dhcpDrift).toMatch(/DHCP\/DNS server is not running \(dnsmasq: .*\); the next up starts it again/);
    // Even without a refresh, up sees it.
    expect(await network.diff(id, outs, { stateDir })).toEqual({ changes: true, replaces: [] });
    expect(await network.diff(id, props, { stateDir })).toEqual({ changes: true, replaces: [] });
    const fixed = (await network.update!(id, props, { stateDir })).outs as NetworkOutputs;
    made.push(fixed);
    expect(fixed.dhcpDrift).toBeUndefined();
    expect(fixed.pid).toBe(outs.pid);
    expect(fixed.dhcpIdentity!.server.pid).not.toBe(old.server.pid);
    // The old plug (still in the switch when dnsmasq died) was found and stopped.
    await until(() => !isRunning(old.plug.pid));
    expect(await network.read(id, fixed)).toEqual({ id, props: fixed });
    expect(await network.diff(id, fixed, { stateDir })).toEqual({ changes: false });
});

test("a create that crashed after starting dnsmasq leaves nothing the next create does not stop and clean", async () => {
    const stateDir = path.join(dir, "crashed");
    const orphan = path.join(stateDir, "networks", "lan-Crash2");
    await mkdir(orphan, { recursive: true, mode: 0o700 });
    const sw = await startSwitch(orphan);
    const dhcp = await startDhcp(orphan, switchPaths(orphan).switchDir, {
        subnet: parseSubnet("10.98.7.0/24") as Subnet,
        domain: "lan",
        mac: "02:00:0a:62:07:fe",
    });
    const old = new Date(Date.now() - 120_000);
    await utimes(orphan, old, old);
    await createNet({ stateDir });
    await until(() => !isRunning(sw.pid) && !isRunning(dhcp.server.pid) && !isRunning(dhcp.plug.pid));
    expect(existsSync(orphan)).toBe(false);
});
