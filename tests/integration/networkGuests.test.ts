import { existsSync } from "node:fs";
import { mkdir, mkdtemp, readFile, rename, rm, writeFile } from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import * as network from "../../provider/resources/network";
import type { NetworkOutputs } from "../../provider/resources/network";
import * as vmResource from "../../provider/resources/virtualMachine";
import type { VirtualMachineOutputs } from "../../provider/resources/virtualMachine";
import { ensureTestGuest, guestKernelArguments, READY_MARKER } from "../guest/testGuest";
import { httpGet } from "../support/net";
import { isRunning } from "../support/process";

/**
 * Real guests on private networks. Three VMs on network A ping each other and fetch each
 * other's page over it; a fourth on network B reaches none of them (not even by ARP, which is
 * plain Ethernet broadcast); a fifth on both reaches all. Every VM also forwards guest port 80
 * to a host port the provider picks. Then B's switch is killed and read sees it.
 *
 * Each guest runs a script from its share at boot that waits for a `go` file listing targets,
 * probes them over the private network, and writes what it saw back into the share.
 */

let dir: string;
let stateDir: string;
let guest: { kernel: string; initrd: string };
const vms = new Map<
    string,
    { id: string; outs: VirtualMachineOutputs; inputs: vmResource.VirtualMachineInputs; share: string }
>();
const nets: NetworkOutputs[] = [];

const PROBE_SCRIPT = `#!/bin/sh
(
    i=0
    while [ ! -f /mnt/t/go ] && [ $i -lt 1200 ]; do sleep 0.25; i=$((i+1)); done
    for t in $(cat /mnt/t/go); do
        # timeout around each: busybox ping overstays -w when the target is routed through slirp.
        if timeout 10 ping -c 3 -w 6 "$t" >/dev/null 2>&1; then echo "ping $t ok"; else echo "ping $t fail"; fi
        # Debian's busybox wget segfaults when given -T; a watchdog bounds it instead.
        rm -f /tmp/body
        wget -q -O /tmp/body "http://$t/" 2>/dev/null & w=$!
        ( sleep 8; kill $w 2>/dev/null ) & k=$!
        if wait $w; then echo "http $t $(cat /tmp/body)"; else echo "http $t fail"; fi
        kill $k 2>/dev/null
        if timeout 6 arping -c 2 -w 3 -I pqnet0 "$t" >/dev/null 2>&1; then echo "arp0 $t ok"; else echo "arp0 $t fail"; fi
    done > /mnt/t/result.tmp
    mv /mnt/t/result.tmp /mnt/t/result
) &
`;

beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), "pq-netg-"));
    stateDir = path.join(dir, "state");
    guest = await ensureTestGuest();
}, 180_000);

afterAll(async () => {
    await Promise.all([...vms.values()].map((v) => vmResource.remove(v.id, v.outs).catch(() => undefined)));
    await Promise.all(nets.map((n) => network.remove("", n).catch(() => undefined)));
    await rm(dir, { recursive: true, force: true });
}, 180_000);

async function makeNet(name: string, subnet?: string): Promise<{ id: string; outs: NetworkOutputs }> {
    const r = await network.create({ name, subnet, stateDir });
    nets.push(r.outs as NetworkOutputs);
    return { id: r.id, outs: r.outs as NetworkOutputs };
}

async function inputsFor(
    name: string,
    networks: { network: string }[],
): Promise<{ inputs: vmResource.VirtualMachineInputs; share: string }> {
    const share = path.join(dir, `share-${name}`);
    await mkdir(share, { recursive: true });
    await writeFile(path.join(share, "pq-init.sh"), PROBE_SCRIPT);
    const vm = {
        name,
        accel: "tcg",
        kernel: guest.kernel,
        initrd: guest.initrd,
        kernelArguments: guestKernelArguments({ name, mounts: [{ tag: "pqt", at: "/mnt/t" }] }),
        shares: [{ source: share, mountTag: "pqt" }],
        portForwards: [{ guest: 80 }],
        networks,
    };
    return {
        inputs: { vm, ready: { serialPattern: READY_MARKER, tcpPort: 80, timeoutSeconds: 400 }, stateDir },
        share,
    };
}

async function createVm(name: string, networks: { network: string }[]) {
    const { inputs, share } = await inputsFor(name, networks);
    const checked = await vmResource.check({}, inputs);
    expect(checked.failures ?? []).toEqual([]);
    const r = await vmResource.create(inputs);
    vms.set(name, { id: r.id, outs: r.outs, inputs, share });
    return r;
}

async function go(name: string, targets: string[]): Promise<void> {
    const share = vms.get(name)!.share;
    await writeFile(path.join(share, "go.tmp"), targets.join("\n") + "\n");
    await rename(path.join(share, "go.tmp"), path.join(share, "go"));
}

async function results(name: string, deadlineMs: number): Promise<string[]> {
    const file = path.join(vms.get(name)!.share, "result");
    const until = Date.now() + deadlineMs;
    while (!existsSync(file)) {
        if (Date.now() > until) {
            const partial = await readFile(`${file}.tmp`, "utf8").catch(() => "(nothing)");
            throw new Error(`${name} wrote no probe results within ${deadlineMs} ms; so far:\n${partial}`);
        }
        await new Promise((r) => setTimeout(r, 250));
    }
    return (await readFile(file, "utf8")).trim().split("\n");
}

const ip = (name: string, nic = 0) => vms.get(name)!.outs.nics![nic].ipv4;

test("VMs on two networks: members reach each other, outsiders reach nothing, one on both reaches all", async () => {
    const a = await makeNet("neta");
    const b = await makeNet("netb");
    const t0 = Date.now();
    await Promise.all([
        createVm("a1", [{ network: a.id }]),
        createVm("a2", [{ network: a.id }]),
        createVm("a3", [{ network: a.id }]),
        createVm("b1", [{ network: b.id }]),
        createVm("ab", [{ network: a.id }, { network: b.id }]),
    ]);
    console.log(`five VMs on two networks: all ready after ${((Date.now() - t0) / 1000).toFixed(1)} s`);

    // Addresses: in the subnet, distinct, and the MAC carries them.
    const aAddrs = ["a1", "a2", "a3", "ab"].map((n) => ip(n));
    expect(new Set(aAddrs).size).toBe(4);
    for (const n of ["a1", "a2", "a3", "b1", "ab"]) {
        const nics = vms.get(n)!.outs.nics!;
        for (const nic of nics) {
            expect(nic.mac).toMatch(/^02:[0-9a-f]{2}(:[0-9a-f]{2}){4}$/);
            expect(nic.ipv4.split(".").slice(0, 3).join(".")).toBe(nic.subnet.split(".").slice(0, 3).join("."));
        }
    }
    expect(vms.get("ab")!.outs.nics!.map((x) => x.network)).toEqual([a.id, b.id]);
    expect(vms.get("a1")!.outs.nics![0].switchIdentity).toBe(a.outs.switchIdentity);
    expect(vms.get("a1")!.outs.hosts).toEqual({ text: `${ip("a1")} a1\n`, names: { a1: ip("a1") } });

    await Promise.all([
        go("a1", [ip("a2"), ip("a3")]),
        go("a2", [ip("a1"), ip("a3")]),
        go("a3", [ip("a1"), ip("ab")]),
        go("b1", [ip("a1"), ip("a2"), ip("a3")]),
        go("ab", [ip("a1"), ip("a2"), ip("a3"), ip("b1")]),
    ]);
    const seen = Object.fromEntries(
        await Promise.all(["a1", "a2", "a3", "b1", "ab"].map(async (n) => [n, await results(n, 180_000)] as const)),
    );
    console.log(JSON.stringify(seen, null, 1));
    const page = (n: string) => `pulumi-qemu test guest ${n}`;
    expect(seen.a1).toEqual([
        `ping ${ip("a2")} ok`,
        `http ${ip("a2")} ${page("a2")}`,
        `arp0 ${ip("a2")} ok`,
        `ping ${ip("a3")} ok`,
        `http ${ip("a3")} ${page("a3")}`,
        `arp0 ${ip("a3")} ok`,
    ]);
    expect(seen.a2).toEqual([
        `ping ${ip("a1")} ok`,
        `http ${ip("a1")} ${page("a1")}`,
        `arp0 ${ip("a1")} ok`,
        `ping ${ip("a3")} ok`,
        `http ${ip("a3")} ${page("a3")}`,
        `arp0 ${ip("a3")} ok`,
    ]);
    expect(seen.a3).toEqual([
        `ping ${ip("a1")} ok`,
        `http ${ip("a1")} ${page("a1")}`,
        `arp0 ${ip("a1")} ok`,
        `ping ${ip("ab")} ok`,
        `http ${ip("ab")} ${page("ab")}`,
        `arp0 ${ip("ab")} ok`,
    ]);
    // Not by IP, and not even by an Ethernet broadcast on its own segment.
    expect(seen.b1).toEqual(
        ["a1", "a2", "a3"].flatMap((n) => [`ping ${ip(n)} fail`, `http ${ip(n)} fail`, `arp0 ${ip(n)} fail`]),
    );
    // ab's pqnet0 is on A: a1..a3 answer ARP there; b1 is reached over pqnet1 (B) by IP.
    expect(seen.ab).toEqual([
        ...["a1", "a2", "a3"].flatMap((n) => [`ping ${ip(n)} ok`, `http ${ip(n)} ${page(n)}`, `arp0 ${ip(n)} ok`]),
        `ping ${ip("b1")} ok`,
        `http ${ip("b1")} ${page("b1")}`,
        `arp0 ${ip("b1")} fail`,
    ]);
}, 900_000);

test("auto host ports: five distinct ports, each serving its VM, stable over a no-op diff", async () => {
    const names = ["a1", "a2", "a3", "b1", "ab"];
    const ports = names.map((n) => vms.get(n)!.outs.ports!["80"]);
    expect(new Set(ports).size).toBe(5);
    for (const [i, n] of names.entries()) {
        const outs = vms.get(n)!.outs;
        expect(outs.endpoints).toEqual({ "80": `127.0.0.1:${ports[i]}` });
        expect(await httpGet(`http://${outs.endpoints!["80"]}/`)).toMatchObject({
            status: 200,
            body: `pulumi-qemu test guest ${n}\n`,
        });
        // Same inputs again: nothing to do, whatever port was picked.
        expect(await vmResource.diff(vms.get(n)!.id, outs, vms.get(n)!.inputs)).toEqual({ changes: false });
        expect(outs.argvHash).not.toContain(String(ports[i]));
    }
});

test("a switch killed with SIGKILL: the network reads as gone, its VMs report drift and the next diff replaces them", async () => {
    const b = nets.find((n) => n.networkDir.includes("netb"))!;
    process.kill(b.pid, "SIGKILL");
    const until = Date.now() + 5000;
    while (isRunning(b.pid) && Date.now() < until) await new Promise((r) => setTimeout(r, 50));
    const refreshVm = async (n: string, why: RegExp) => {
        const v = vms.get(n)!;
        const r = await vmResource.read(v.id, v.outs);
        expect(r.id).toBe(v.id);
        expect(r.props!.networkDrift).toMatch(why);
        return r;
    };
    // Refreshed before the network: its switch is found dead.
    const early = await refreshVm(
        "b1",
        /^networks\[0\]: the switch of network netb-\w+ is gone \(.*\); the next up replaces this VM$/,
    );
    expect(await network.read(path.basename(b.networkDir), b)).toEqual({ id: "", props: {} });
    // Refreshed after it: the network's files went with it.
    const late = await refreshVm(
        "ab",
        /^networks\[1\]: network netb-\w+ no longer exists \(its record is gone\); the next up replaces this VM$/,
    );

    for (const [n, r] of [
        ["b1", early],
        ["ab", late],
    ] as const) {
        const v = vms.get(n)!;
        // Drift survives a second refresh and makes the next diff a replacement.
        const again = await vmResource.read(v.id, r.props as VirtualMachineOutputs);
        expect(again.props!.networkDrift).toBe(r.props!.networkDrift);
        expect(await vmResource.diff(v.id, r.props as VirtualMachineOutputs, v.inputs)).toMatchObject({
            changes: true,
            replaces: ["vm"],
            deleteBeforeReplace: true,
        });
    }
    for (const n of ["a1", "a2", "a3"]) {
        const v = vms.get(n)!;
        expect((await vmResource.read(v.id, v.outs)).props).not.toHaveProperty("networkDrift");
    }
}, 60_000);

test("b1 made again on a new network gets its old host port back and a fresh lease", async () => {
    const old = vms.get("b1")!;
    const oldPort = old.outs.ports!["80"];
    await vmResource.remove(old.id, old.outs);
    vms.delete("b1");
    const b2 = await makeNet("netb");
    await rm(old.share, { recursive: true, force: true });
    const r = await createVm("b1", [{ network: b2.id }]);
    expect(r.outs.ports).toEqual({ "80": oldPort });
    expect(r.outs).not.toHaveProperty("portsNote");
    expect(r.outs.nics![0].network).toBe(b2.id);
    expect(r.outs.nics![0].switchIdentity).toBe(b2.outs.switchIdentity);
}, 300_000);
