import { existsSync, readdirSync, readFileSync } from "node:fs";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import { parseVmSpec } from "../../provider/core/vmSpec";
import { STARTING_GRACE_MS } from "../../provider/host/net/networkStore";
import * as network from "../../provider/resources/network";
import * as runScript from "../../provider/resources/runScript";
import type { NetworkOutputs } from "../../provider/resources/network";
import * as vmResource from "../../provider/resources/virtualMachine";
import { attachNics, releaseNics } from "../../provider/resources/virtualMachine/networks";
import { hostEntryName, vmAddress } from "../../provider/core/dhcp";

/**
 * Addresses and MACs on a live network (a real switch, no guests needed: leases are taken
 * before QEMU starts): defaults stable and unique, explicit ones refused when taken, a full
 * subnet refused, a crashed VM's lease reclaimed; and the VM's check naming every bad field.
 */

let dir: string;
let stateDir: string;
const nets: NetworkOutputs[] = [];

beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), "pq-lease-"));
    stateDir = path.join(dir, "state");
});

afterAll(async () => {
    await Promise.all(nets.map((n) => network.remove("", n).catch(() => undefined)));
    await rm(dir, { recursive: true, force: true });
});

async function makeNet(subnet?: string, dhcp?: boolean): Promise<{ id: string; outs: NetworkOutputs }> {
    const r = await network.create({ stateDir, subnet, dhcp });
    nets.push(r.outs as NetworkOutputs);
    return { id: r.id, outs: r.outs as NetworkOutputs };
}

async function vmDir(name: string): Promise<string> {
    const d = path.join(dir, "vms", `${name}-${Math.random().toString(36).slice(2, 8)}`);
    await mkdir(d, { recursive: true });
    return d;
}

const spec = (name: string, networks: unknown[]) => parseVmSpec({ name, networks });

test("without DHCP, default addresses depend on the VM's name only; a clash takes the next free one", async () => {
    const { id } = await makeNet(undefined, false);
    const d1 = await vmDir("web1");
    const [first] = await attachNics(spec("web1", [{ network: id }]), stateDir, d1);
    await releaseNics([first], d1);
    // Made again (after other VMs came and went), it gets the same address and MAC.
    const others = await Promise.all(
        ["db", "cache", "queue"].map(async (n) => {
            const d = await vmDir(n);
            return { d, nics: await attachNics(spec(n, [{ network: id }]), stateDir, d) };
        }),
    );
    const [again] = await attachNics(spec("web1", [{ network: id }]), stateDir, d1);
    expect(again).toEqual(first);
    // Another VM with the same name cannot have that address: it takes the next one.
    const twin = await attachNics(spec("web1", [{ network: id }]), stateDir, await vmDir("web1"));
    const n = (a: string) => Number(a.split(".")[3]);
    expect(n(twin[0].ipv4)).toBe(n(first.ipv4) === 254 ? 1 : n(first.ipv4) + 1);
    expect(twin[0].mac).not.toBe(first.mac);
    for (const o of others) await releaseNics(o.nics, o.d);
});

test("on a DHCP network the default address is exactly vmAddress's, registered with DHCP/DNS; a clash is refused, never moved", async () => {
    const { id, outs } = await makeNet();
    const d1 = await vmDir("web1");
    const [first] = await attachNics(spec("web1", [{ network: id }]), stateDir, d1);
    const planned = vmAddress({ id, subnet: outs.subnet, domain: outs.domain, dhcp: outs.dhcp }, "web1");
    expect(first).toMatchObject({
        ipv4: planned.ipv4,
        mac: planned.mac,
        hostname: "web1",
        dhcp: true,
        fqdn: planned.fqdn,
    });
    const hostsFile = path.join(outs.networkDir, "dhcp", "hosts", hostEntryName(first.mac));
    expect(readFileSync(hostsFile, "utf8")).toBe(`${first.mac},${first.ipv4}\n`);
    expect(readFileSync(path.join(outs.networkDir, "dhcp", "dns", hostEntryName(first.mac)), "utf8")).toBe(
        `${first.ipv4} web1 ${planned.fqdn}\n`,
    );
    // Another VM whose name prefers that address (here: the same name) is refused, naming the holder and the fix.
    await expect(attachNics(spec("web1", [{ network: id }]), stateDir, await vmDir("web1"))).rejects.toThrow(
        `vm.networks[0].network: ${first.ipv4}, the address VM web1 gets by its name on network ${id}, is already used by VM web1`,
    );
    // Its DHCP entry is gone with its leases.
    await releaseNics([first], d1);
    expect(existsSync(hostsFile)).toBe(false);
    // A pinned address is reserved for DHCP too.
    const d2 = await vmDir("pinned");
    const pinnedAddress = outs.subnet.replace(/0\/24$/, "7");
    const [pinned] = await attachNics(spec("pinned", [{ network: id, ipv4: pinnedAddress }]), stateDir, d2);
    expect(readFileSync(path.join(outs.networkDir, "dhcp", "hosts", hostEntryName(pinned.mac)), "utf8")).toBe(
        `${pinned.mac},${pinnedAddress}\n`,
    );
    await releaseNics([pinned], d2);
});

test("an address or MAC another VM holds is refused naming the field and the holder; nothing is kept", async () => {
    const { id, outs } = await makeNet("10.150.3.0/24");
    const holder = await vmDir("holder");
    await attachNics(
        spec("holder", [{ network: id, ipv4: "10.150.3.10", mac: "02:00:00:00:00:aa" }]),
        stateDir,
        holder,
    );
    const before = readdirSync(path.join(outs.networkDir, "leases")).sort();
    await expect(
        attachNics(spec("late", [{ network: id, ipv4: "10.150.3.10" }]), stateDir, await vmDir("late")),
    ).rejects.toThrow(
        `vm.networks[0].ipv4: 10.150.3.10 is already used by VM holder on network ${id}; choose another address or leave ipv4 out`,
    );
    await expect(
        attachNics(
            spec("late", [{ network: id, ipv4: "10.150.3.11", mac: "02:00:00:00:00:AA" }]),
            stateDir,
            await vmDir("late"),
        ),
    ).rejects.toThrow(`vm.networks[0].mac: MAC 02:00:00:00:00:aa is already used by VM holder on network ${id}`);
    expect(readdirSync(path.join(outs.networkDir, "leases")).sort()).toEqual(before);
});

test("a lease whose VM directory is gone (a VM lost in a crash) is taken over", async () => {
    const { id } = await makeNet("10.151.0.0/24");
    const lost = await vmDir("lost");
    await attachNics(spec("lost", [{ network: id, ipv4: "10.151.0.9" }]), stateDir, lost);
    await rm(lost, { recursive: true });
    const [nic] = await attachNics(spec("new", [{ network: id, ipv4: "10.151.0.9" }]), stateDir, await vmDir("new"));
    expect(nic.ipv4).toBe("10.151.0.9");
});

test("a full subnet is refused naming the network", async () => {
    const { id } = await makeNet("10.152.0.0/30", false);
    await attachNics(spec("x1", [{ network: id }]), stateDir, await vmDir("x1"));
    await attachNics(spec("x2", [{ network: id }]), stateDir, await vmDir("x2"));
    await expect(attachNics(spec("x3", [{ network: id }]), stateDir, await vmDir("x3"))).rejects.toThrow(
        `vm.networks[0].network: network ${id}'s subnet 10.152.0.0/30 has no free address left; use a larger subnet`,
    );
});

test("VM check names every network problem before anything starts", async () => {
    const { id } = await makeNet("10.153.0.0/24");
    const r = await vmResource.check(
        {},
        {
            stateDir,
            vm: {
                name: "bad",
                networks: [
                    { network: id, ipv4: "10.153.1.5" },
                    { network: id, ipv4: "10.153.0.255" },
                    { network: id, ipv4: "10.153.0.0" },
                    { network: "nosuch-abc123" },
                    // makeNet's network runs DHCP (the default): its server has the subnet's last host.
                    { network: id, ipv4: "10.153.0.254" },
                ],
            },
        },
    );
    expect(r.failures).toEqual([
        { property: "vm.networks[0].ipv4", reason: "10.153.1.5 is outside the network's subnet 10.153.0.0/24" },
        {
            property: "vm.networks[1].ipv4",
            reason: expect.stringMatching(/^10\.153\.0\.255 is the broadcast address of 10\.153\.0\.0\/24/),
        },
        { property: "vm.networks[2].ipv4", reason: expect.stringMatching(/^10\.153\.0\.0 is the network address/) },
        {
            property: "vm.networks[3].network",
            reason: `there is no network nosuch-abc123 in the state directory ${stateDir}; give the VM the Network's id and the same stateDir as the Network`,
        },
        {
            property: "vm.networks[4].ipv4",
            reason: `10.153.0.254 is the address of network ${id}'s DHCP/DNS server (the subnet's last host); pin another, or leave ipv4 out`,
        },
    ]);
    // A network overlapping the user-mode network 10.0.2.0/24 is refused by the Network's own check now
    // (tests/unit/hardeningRound2.test.ts, item 10), so the VM's overlap check only meets networks made before.
    expect(existsSync(path.join(stateDir, "vms"))).toBe(false);
});

test("a network whose switch died is refused at check, with what to do", async () => {
    const { id, outs } = await makeNet();
    process.kill(outs.pid, "SIGKILL");
    await new Promise((r) => setTimeout(r, 300));
    const r = await vmResource.check({}, { stateDir, vm: { name: "late", networks: [{ network: id }] } });
    expect(r.failures).toEqual([
        {
            property: "vm.networks[0].network",
            reason: expect.stringMatching(
                new RegExp(
                    `^the switch of network ${id} is not running \\(.*\\); run a refresh so that the network is made again$`,
                ),
            ),
        },
    ]);
});

test("a lease of a VM whose QEMU was killed (its directory kept for a post-mortem) is taken over; a starting VM's is not", async () => {
    const { id } = await makeNet("10.154.0.0/24");
    const starting = await vmDir("starting");
    await attachNics(spec("starting", [{ network: id, ipv4: "10.154.0.7" }]), stateDir, starting);
    // No pidfile yet: the holder is still starting its QEMU.
    await expect(
        attachNics(spec("other", [{ network: id, ipv4: "10.154.0.7" }]), stateDir, await vmDir("other")),
    ).rejects.toThrow(/already used by VM starting/);
    // Its pidfile now names a process that is not its QEMU (here: this test runner): stale.
    await writeFile(path.join(starting, "qemu.pid"), `${process.pid}\n`);
    const [nic] = await attachNics(
        spec("other", [{ network: id, ipv4: "10.154.0.7" }]),
        stateDir,
        await vmDir("other"),
    );
    expect(nic.ipv4).toBe("10.154.0.7");
});

test("a RunScript refuses what only a running VM can resolve: picked host ports and networks", async () => {
    const r = await runScript.check(
        {},
        { vm: { name: "l", portForwards: [{ guest: 80 }], networks: [{ network: "lan-abc123" }] } },
    );
    expect(r.failures).toEqual([
        {
            property: "vm.portForwards[0].host",
            reason: "a launcher needs a fixed host port; only a VirtualMachine picks one",
        },
        {
            property: "vm.networks",
            reason: "a launcher cannot join private networks (their addresses are leased at start); use a VirtualMachine",
        },
    ]);
});

test("a lease taken by a create that crashed before QEMU started (no pidfile for long) is taken over", async () => {
    const { id, outs } = await makeNet("10.155.0.0/24");
    const crashed = await vmDir("crashed");
    await attachNics(spec("crashed", [{ network: id, ipv4: "10.155.0.4" }]), stateDir, crashed);
    const leases = readdirSync(path.join(outs.networkDir, "leases")).map((f) =>
        path.join(outs.networkDir, "leases", f),
    );
    expect(leases).toHaveLength(2); // its address and its MAC
    for (const lease of leases) {
        const held = JSON.parse(readFileSync(lease, "utf8"));
        expect(held).toMatchObject({ vm: "crashed", vmDir: crashed, pidfile: path.join(crashed, "qemu.pid") });
        await writeFile(lease, JSON.stringify({ ...held, takenAt: Date.now() - STARTING_GRACE_MS - 1000 }));
    }
    const [nic] = await attachNics(spec("next", [{ network: id, ipv4: "10.155.0.4" }]), stateDir, await vmDir("next"));
    expect(nic.ipv4).toBe("10.155.0.4");
});

test("two NICs of one VM on one network get two addresses and two MACs", async () => {
    const { id } = await makeNet("10.156.0.0/24");
    const nics = await attachNics(
        spec("twice", [{ network: id }, { network: id, ipv4: "10.156.0.9" }, { network: id }]),
        stateDir,
        await vmDir("twice"),
    );
    expect(new Set(nics.map((n) => n.ipv4)).size).toBe(3);
    expect(new Set(nics.map((n) => n.mac)).size).toBe(3);
    expect(nics[1].ipv4).toBe("10.156.0.9");
});

test("an explicit address one of the VM's own NICs already got by default is refused naming the field", async () => {
    const { id } = await makeNet("10.157.0.0/24");
    // Where "own" lands by default (its name alone decides), learnt and given back.
    const probe = await vmDir("probe");
    const [first] = await attachNics(spec("own", [{ network: id }]), stateDir, probe);
    await releaseNics([first], probe);
    const d = await vmDir("own");
    await expect(
        attachNics(spec("own", [{ network: id }, { network: id, ipv4: first.ipv4 }]), stateDir, d),
    ).rejects.toThrow(
        new RegExp(
            `^vm\\.networks\\[1\\]\\.ipv4: ${first.ipv4.replace(/\./g, "\\.")} is already this VM's address on network ${id} \\(networks\\[0\\] got it by default\\)`,
        ),
    );
});
