import { readdirSync, statSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import { networkDomain, serverAddress, serverMac, vmAddress } from "../../provider/core/dhcp";
import { parseSubnet, type Subnet } from "../../provider/core/network";
import {
    checkDhcp,
    dhcpPaths,
    releaseDhcpLease,
    reloadDhcp,
    removeDhcpFiles,
    removeDhcpHost,
    startDhcp,
    stopDhcp,
    writeDhcpHost,
    type DhcpIdentity,
} from "../../provider/host/net/dhcpServer";
import { removeSwitchFiles, startSwitch, stopSwitch, switchPaths } from "../../provider/host/net/vdeSwitch";
import type { ProcessIdentity } from "../../provider/host/qemu/qemuProcess";
import { isRunning } from "../support/process";
import { runOnSwitch } from "../support/netnsClient";

/**
 * The network's DHCP/DNS server on its own: a real vde_switch, real dnsmasq in its own user +
 * network namespace, and clients that are namespaces plugged into the switch running busybox's
 * udhcpc and nslookup.
 */

let dir: string;
let sw: ProcessIdentity;
let dhcp: DhcpIdentity | undefined;
const subnet = parseSubnet("10.97.3.0/24") as Subnet;
const domain = networkDomain("lab");
const net = { id: "lab-abc123", subnet: "10.97.3.0/24", domain, dhcp: true };

beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), "pq-dhcp-"));
    sw = await startSwitch(dir);
});

afterAll(async () => {
    await stopDhcp(dhcp, dir).catch(() => undefined);
    await stopSwitch(sw, switchPaths(dir).pidfile).catch(() => undefined);
    await removeSwitchFiles(dir);
    await rm(dir, { recursive: true, force: true });
});

test("dnsmasq answers DHCP with the planned address and DNS for names on the network, from its own namespace", async () => {
    const web = vmAddress(net, "web");
    await writeDhcpHost(dir, { mac: web.mac, ipv4: web.ipv4, hostname: "web" }, domain);
    const t0 = Date.now();
    dhcp = await startDhcp(dir, switchPaths(dir).switchDir, { subnet, domain, mac: serverMac(net.id, subnet) });
    console.log(`dnsmasq start (namespace, plug, sockets bound) took ${Date.now() - t0} ms`);
    expect(await checkDhcp(dhcp, dir)).toEqual({ alive: true });
    // Nothing of it in the host's network namespace: its sockets live in a namespace of their own.
    expect(readlinkNs(dhcp.server.pid)).not.toBe(readlinkNs(process.pid));
    expect(readlinkNs(dhcp.plug.pid)).toBe(readlinkNs(dhcp.server.pid));
    // Owner-only files.
    const p = dhcpPaths(dir);
    for (const d of [p.dhcpDir, p.hostsDir, p.dnsDir]) expect(statSync(d).mode & 0o777).toBe(0o700);
    for (const f of readdirSync(p.dhcpDir)) {
        const st = statSync(path.join(p.dhcpDir, f));
        if (st.isFile()) expect([f, st.mode & 0o077]).toEqual([f, 0]);
    }

    const r = await runOnSwitch(
        switchPaths(dir).switchDir,
        web.mac,
        [
            "t0=$(date +%s%N)",
            'busybox udhcpc -i tap0 -n -q -t 10 -T 1 -s "$UDHCPC_SCRIPT" | grep bound',
            't1=$(date +%s%N); echo "lease-ms $(( (t1-t0)/1000000 ))"',
            `t0=$(date +%s%N); busybox nslookup web.${domain} ${serverAddress(subnet)} >/dev/null && echo fqdn-ok; t1=$(date +%s%N); echo "dns-us $(( (t1-t0)/1000 ))"`,
            `busybox nslookup web ${serverAddress(subnet)} | grep -A1 'Name:' | tail -1`,
            `busybox nslookup example.com ${serverAddress(subnet)} >/dev/null 2>&1 || echo outside-refused`,
            `ip neigh show ${serverAddress(subnet)}`,
        ].join("\n"),
    );
    console.log(r.stdout, r.stderr);
    expect(r.stdout).toContain(
        `bound ip=${web.ipv4} dns=${serverAddress(subnet)} domain=${domain} hostname=web router=`,
    );
    expect(r.stdout).toMatch(/router=\n/);
    expect(r.stdout).toContain("fqdn-ok");
    expect(r.stdout).toContain(`Address: ${web.ipv4}`);
    expect(r.stdout).toContain("outside-refused");
    // The server answers from the MAC fixed by the network's id.
    expect(r.stdout).toContain(`lladdr ${serverMac(net.id, subnet)}`);
});

test("a leased host's name outlives its host files until the lease is released; then it is gone", async () => {
    const web = vmAddress(net, "web");
    const probe = vmAddress(net, "probe2");
    const ask = `ip addr add ${probe.ipv4}/24 dev tap0\nbusybox nslookup web.${domain} ${serverAddress(subnet)} 2>&1 | grep -c 'Address: ${web.ipv4}'; true`;
    await removeDhcpHost(dir, web.mac);
    expect(await reloadDhcp(dhcp!, dir)).toBe(true);
    // Still answered, from the lease the first test's client took.
    expect((await runOnSwitch(switchPaths(dir).switchDir, probe.mac, ask)).stdout.trim()).toBe("1");
    await releaseDhcpLease(dhcp!, dir, web);
    expect((await runOnSwitch(switchPaths(dir).switchDir, probe.mac, ask)).stdout.trim()).toBe("0");
    expect(await checkDhcp(dhcp!, dir)).toEqual({ alive: true });
});

test("a host added while dnsmasq runs is known at once; a removed one is forgotten after reload", async () => {
    const db = vmAddress(net, "db");
    const probe = vmAddress(net, "probe");
    await writeDhcpHost(dir, { mac: db.mac, ipv4: db.ipv4, hostname: "db" }, domain);
    const ask = `busybox nslookup db.${domain} ${serverAddress(subnet)} 2>&1 | grep -c 'Address: ${db.ipv4}'; true`;
    const before = await runOnSwitch(
        switchPaths(dir).switchDir,
        probe.mac,
        `ip addr add ${probe.ipv4}/24 dev tap0\n${ask}`,
    );
    expect(before.stdout.trim()).toBe("1");
    await removeDhcpHost(dir, db.mac);
    expect(await reloadDhcp(dhcp!, dir)).toBe(true);
    const after = await runOnSwitch(
        switchPaths(dir).switchDir,
        probe.mac,
        `ip addr add ${probe.ipv4}/24 dev tap0\n${ask}`,
    );
    expect(after.stdout.trim()).toBe("0");
    expect(await checkDhcp(dhcp!, dir)).toEqual({ alive: true });
});

test("a killed dnsmasq is seen; its plug, left by a 'crash', is found through the pidfile and stopped by the next start", async () => {
    const old = dhcp!;
    process.kill(old.server.pid, "SIGKILL");
    await waitFor(() => !isRunning(old.server.pid));
    expect(await checkDhcp(old, dir)).toMatchObject({ alive: false, reason: expect.stringContaining("dnsmasq") });
    expect(isRunning(old.plug.pid)).toBe(true);
    // The next start knows nothing of `old` (a crashed provider) and still cleans it up; it answers from the same MAC.
    dhcp = await startDhcp(dir, switchPaths(dir).switchDir, { subnet, domain, mac: serverMac(net.id, subnet) });
    await waitFor(() => !isRunning(old.plug.pid), 1000);
    expect(dhcp.plug.pid).not.toBe(old.plug.pid);
    expect(await checkDhcp(dhcp, dir)).toEqual({ alive: true });

    await stopDhcp(dhcp, dir);
    // An exiting process drops its command line a moment before it becomes a zombie: allow that moment.
    const [server, plug] = [dhcp.server.pid, dhcp.plug.pid];
    await waitFor(() => !isRunning(server) && !isRunning(plug), 1000);
    await removeDhcpFiles(dir);
    expect(readdirSync(dir).includes("dhcp")).toBe(false);
    dhcp = undefined;
});

test("a start that fails (the switch is not there) leaves nothing running and says why", async () => {
    const other = await mkdtemp(path.join(os.tmpdir(), "pq-dhcp-bad-"));
    try {
        await expect(
            startDhcp(
                other,
                path.join(other, "no-switch"),
                { subnet, domain, mac: serverMac(net.id, subnet) },
                { timeoutMs: 8000 },
            ),
        ).rejects.toThrow(/DHCP\/DNS server .* exited/);
        const p = dhcpPaths(other);
        for (const f of [p.pidfile, p.plugPidfile]) {
            const pid = Number((await import("node:fs")).readFileSync(f, { encoding: "utf8", flag: "a+" }).trim() || 0);
            if (pid) expect(isRunning(pid)).toBe(false);
        }
    } finally {
        await rm(other, { recursive: true, force: true });
    }
});

function readlinkNs(pid: number): string {
    return require("node:fs").readlinkSync(`/proc/${pid}/ns/net`);
}

async function waitFor(cond: () => boolean, ms = 5000): Promise<void> {
    const end = Date.now() + ms;
    while (!cond()) {
        if (Date.now() > end) throw new Error("condition not met in time");
        await new Promise((r) => setTimeout(r, 20));
    }
}
