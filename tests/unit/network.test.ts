import {
    addressProblem,
    defaultMac,
    defaultSubnet,
    formatSubnet,
    hostCount,
    macProblem,
    mergeHosts,
    netmask,
    parseSubnet,
    preferredHostNumber,
    probeOrder,
    renderHosts,
    subnetsOverlap,
    USER_NET,
    type Subnet,
} from "../../provider/core/network";
import { acceptedArgvHashes, buildQemuArgv, specArgvHash, type NicPlan } from "../../provider/core/qemuArgv";
import { parseVmSpec } from "../../provider/core/vmSpec";
import { InputError } from "../../provider/core/validation";

const TCG = { accel: "tcg" as const };

function subnet(text: string): Subnet {
    const s = parseSubnet(text);
    if (typeof s === "string") throw new Error(s);
    return s;
}

function valuesOf(argv: string[], flag: string): string[] {
    return argv.flatMap((a, i) => (a === flag ? [argv[i + 1]] : []));
}

function problemsOf(input: unknown): string {
    try {
        parseVmSpec(input);
    } catch (e) {
        expect(e).toBeInstanceOf(InputError);
        return (e as Error).message;
    }
    throw new Error("expected the spec to be refused");
}

describe("subnets", () => {
    test("parse, format, mask and count hosts", () => {
        const s = subnet("10.77.1.0/24");
        expect(formatSubnet(s)).toBe("10.77.1.0/24");
        expect(netmask(s)).toBe("255.255.255.0");
        expect(hostCount(s)).toBe(254);
        expect(hostCount(subnet("192.168.4.0/30"))).toBe(2);
    });

    test.each([
        ["10.77.1.5/24", /host bits set; write its network address, 10\.77\.1\.0\/24/],
        ["10.77.1.0", /IPv4 CIDR such as/],
        ["10.77.300.0/24", /above 255/],
        ["10.0.0.0/31", /between \/8 and \/30/],
        ["10.0.0.0/4", /between \/8 and \/30/],
        ["127.0.0.0/8", /loopback, multicast or reserved/],
        ["224.1.0.0/16", /loopback, multicast or reserved/],
    ])("refuses %s", (text, why) => {
        expect(parseSubnet(text)).toMatch(why);
    });

    test("overlap is containment either way, not just equality", () => {
        expect(subnetsOverlap(subnet("10.1.0.0/16"), subnet("10.1.7.0/24"))).toBe(true);
        expect(subnetsOverlap(subnet("10.1.7.0/24"), subnet("10.1.0.0/16"))).toBe(true);
        expect(subnetsOverlap(subnet("10.1.7.0/24"), subnet("10.1.8.0/24"))).toBe(false);
        expect(subnetsOverlap(subnet("10.0.0.0/8"), USER_NET)).toBe(true);
    });

    test("default subnets are /24s in 10.64.0.0/10, stable per identity and attempt, never the user-mode net", () => {
        const a = defaultSubnet("lan-abc123");
        expect(defaultSubnet("lan-abc123")).toEqual(a);
        expect(a.prefix).toBe(24);
        expect(subnetsOverlap(a, subnet("10.64.0.0/10"))).toBe(true);
        expect(defaultSubnet("lan-abc123", 1)).not.toEqual(a);
        const seen = new Set<string>();
        for (let i = 0; i < 500; i++) {
            const s = defaultSubnet(`net-${i}`);
            expect(subnetsOverlap(s, USER_NET)).toBe(false);
            seen.add(formatSubnet(s));
        }
        // 16384 slots: 500 identities spread over nearly as many subnets.
        expect(seen.size).toBeGreaterThan(490);
    });

    test("addresses outside the subnet, or its network and broadcast addresses, are refused by name", () => {
        const s = subnet("10.77.1.0/24");
        expect(addressProblem(s, "10.77.1.5")).toBeUndefined();
        expect(addressProblem(s, "10.77.2.5")).toBe("10.77.2.5 is outside the network's subnet 10.77.1.0/24");
        expect(addressProblem(s, "10.77.1.0")).toMatch(/^10\.77\.1\.0 is the network address of 10\.77\.1\.0\/24/);
        expect(addressProblem(s, "10.77.1.255")).toMatch(/^10\.77\.1\.255 is the broadcast address/);
    });
});

describe("addresses and MACs", () => {
    test("a VM's preferred host number comes from its name alone and is a host", () => {
        const s = subnet("10.77.1.0/24");
        const n = preferredHostNumber(s, "web1");
        expect(preferredHostNumber(subnet("10.99.3.0/24"), "web1")).toBe(n);
        expect(n).toBeGreaterThanOrEqual(1);
        expect(n).toBeLessThanOrEqual(254);
        expect(preferredHostNumber(s, "web2")).not.toBe(n);
    });

    test("probing visits every host once, wrapping after the last", () => {
        const s = subnet("10.0.8.0/29");
        expect([...probeOrder(s, 5)]).toEqual([5, 6, 1, 2, 3, 4]);
    });

    test("default MACs are unicast, locally administered, and carry the network byte and the address", () => {
        const mac = defaultMac("lan-abc123", "10.77.1.5");
        expect(mac).toMatch(/^02:[0-9a-f]{2}:0a:4d:01:05$/);
        expect(macProblem(mac)).toBeUndefined();
        expect(defaultMac("lan-abc123", "10.77.1.6")).not.toBe(mac);
        expect(defaultMac("other-xyz789", "10.77.1.5").slice(0, 5)).not.toBe(mac.slice(0, 5));
    });

    test.each([
        ["03:00:00:00:00:01", /multicast/],
        ["01:00:5e:00:00:01", /multicast/],
        ["02:00:00:00:00", /six hex pairs/],
        ["02-00-00-00-00-01", /six hex pairs/],
        ["00:00:00:00:00:00", /not a usable address/],
    ])("refuses MAC %s", (mac, why) => {
        expect(macProblem(mac)).toMatch(why);
    });

    test("hosts text and map; merged fleets keep every line and the first address per name", () => {
        const a = renderHosts([{ hostname: "web1", address: "10.77.1.5" }]);
        expect(a).toEqual({ text: "10.77.1.5 web1\n", names: { web1: "10.77.1.5" } });
        const b = renderHosts([
            { hostname: "db", address: "10.77.1.9" },
            { hostname: "db", address: "10.88.0.9" },
        ]);
        expect(b.names).toEqual({ db: "10.77.1.9" });
        expect(mergeHosts([a, b])).toEqual({
            text: "10.77.1.5 web1\n10.77.1.9 db\n10.88.0.9 db\n",
            names: { web1: "10.77.1.5", db: "10.77.1.9" },
        });
    });
});

describe("vm.networks in the spec", () => {
    const nic: NicPlan = {
        sock: "/state/networks/lan-x,y/switch",
        mac: "02:aa:0a:4d:01:05",
        ipv4: "10.77.1.5",
        netmask: "255.255.255.0",
        hostname: "web1",
    };
    const kernelVm = { name: "web1", kernel: "/k", kernelArguments: ["quiet"] };

    test("without networks the argv and its hash are exactly those of 0.2.0", () => {
        // Golden values computed with the code before networks existed. Those VMs predate onReboot too,
        // so they are kept through acceptedArgvHashes (a program that leaves onReboot out).
        expect(acceptedArgvHashes(parseVmSpec({}), {})).toContain(
            "f5b657a0ed9268f0346e1b70df42d357d1c936d5f4d8f0456219f06bf1f13f41",
        );
        const fullVm = {
            name: "web,1",
            memoryMiB: 512,
            cpus: 2,
            kernel: "/boot/vmlinuz",
            initrd: "/boot/initrd.img",
            kernelArguments: ["quiet", "root=/dev/vda"],
            disks: [
                { path: "/img/base,raw", format: "raw", readOnly: true },
                { path: "/img/root.raw", format: "raw", overlay: "/state/root, ov.qcow2" },
            ],
            shares: [
                { source: "/srv/a share,with comma", readOnly: true },
                { source: "/srv/rw", mountTag: "data" },
            ],
            portForwards: [
                { host: 8080, guest: 80 },
                { host: 5353, guest: 53, protocol: "udp", hostAddress: "0.0.0.0" },
            ],
            extraArgs: ["-S"],
        };
        expect(acceptedArgvHashes(parseVmSpec(fullVm), fullVm)).toContain(
            "bb6c20bedadb049690baa5d524b1e2b22c48f834314681dd1042592219d03c70",
        );
        expect(parseVmSpec({}).networks).toBeUndefined();
    });

    test("each NIC is a vde netdev with an escaped socket and a virtio-net device, after the user NIC", () => {
        const spec = parseVmSpec({ ...kernelVm, networks: [{ network: "lan-x" }] });
        const argv = buildQemuArgv(spec, { ...TCG, nics: [nic] });
        expect(valuesOf(argv, "-nic")).toEqual(["user,model=virtio-net-pci,mac=52:54:00:12:34:56"]);
        expect(valuesOf(argv, "-netdev")).toEqual(["vde,id=pqnet0,sock=/state/networks/lan-x,,y/switch"]);
        expect(valuesOf(argv, "-device")).toContain("virtio-net-pci,netdev=pqnet0,mac=02:aa:0a:4d:01:05");
        expect(argv.indexOf("-netdev")).toBeGreaterThan(argv.indexOf("-nic"));
        expect(valuesOf(argv, "-append")).toEqual([
            "console=ttyS0 quiet ifname=pqnet0:02:aa:0a:4d:01:05 ip=10.77.1.5:::255.255.255.0:web1:pqnet0:off",
        ]);
    });

    test("network none keeps the private NICs", () => {
        const spec = parseVmSpec({ ...kernelVm, network: "none", networks: [{ network: "lan-x" }] });
        const argv = buildQemuArgv(spec, { ...TCG, nics: [nic] });
        expect(valuesOf(argv, "-nic")).toEqual(["none"]);
        expect(valuesOf(argv, "-netdev")).toHaveLength(1);
    });

    test("an argv for networks cannot be built without the resolved NICs", () => {
        expect(() => buildQemuArgv(parseVmSpec({ ...kernelVm, networks: [{ network: "lan-x" }] }), TCG)).toThrow(
            /vm\.networks: .*only a VirtualMachine/,
        );
    });

    test("the hash sees the network and what was asked, not the socket path or the address picked", () => {
        const spec = parseVmSpec({ ...kernelVm, networks: [{ network: "lan-x" }] });
        const h = specArgvHash(spec);
        expect(specArgvHash(parseVmSpec({ ...kernelVm, networks: [{ network: "lan-x" }] }))).toBe(h);
        expect(specArgvHash(parseVmSpec({ ...kernelVm, networks: [{ network: "lan-y" }] }))).not.toBe(h);
        expect(
            specArgvHash(parseVmSpec({ ...kernelVm, networks: [{ network: "lan-x", ipv4: "10.77.1.5" }] })),
        ).not.toBe(h);
        expect(
            specArgvHash(parseVmSpec({ ...kernelVm, networks: [{ network: "lan-x", mac: "02:00:00:00:00:01" }] })),
        ).not.toBe(h);
        expect(specArgvHash(parseVmSpec(kernelVm))).not.toBe(h);
    });

    test("bad NICs are refused naming the field", () => {
        expect(problemsOf({ networks: [{ network: "lan-x" }] })).toMatch(/vm\.name: a VM on networks needs a name/);
        expect(problemsOf({ name: "a", networks: [{ network: "lan-x", mac: "03:00:00:00:00:01" }] })).toMatch(
            /vm\.networks\[0\]\.mac: mac 03:00:00:00:00:01 is a multicast address/,
        );
        expect(problemsOf({ name: "a", networks: [{ network: "lan-x", mac: "zz" }] })).toMatch(
            /vm\.networks\[0\]\.mac: mac must be six hex pairs/,
        );
        expect(problemsOf({ name: "a", networks: [{ network: "lan-x", ipv4: "10.1.2" }] })).toMatch(
            /vm\.networks\[0\]\.ipv4: ipv4 must be an IPv4 address/,
        );
        expect(
            problemsOf({
                name: "a",
                networks: [
                    { network: "lan-x", mac: "02:00:00:00:00:01" },
                    { network: "lan-y", mac: "02:00:00:00:00:01" },
                ],
            }),
        ).toMatch(/vm\.networks\[1\]\.mac: mac 02:00:00:00:00:01 is already used by networks\[0\]/);
        expect(
            problemsOf({
                name: "a",
                networks: [
                    { network: "lan-x", ipv4: "10.0.0.5" },
                    { network: "lan-x", ipv4: "10.0.0.5" },
                ],
            }),
        ).toMatch(/vm\.networks\[1\]\.ipv4: ipv4 10\.0\.0\.5 on network lan-x is already taken/);
        expect(problemsOf({ name: "web_1", networks: [{ network: "lan-x" }] })).toMatch(
            /vm\.networks\[0\]\.hostname: the VM's name "web_1" is not a valid hostname/,
        );
        expect(problemsOf({ name: "a", networks: [{ network: "../etc" }] })).toMatch(
            /vm\.networks\[0\]\.network: network must be a Network's id/,
        );
        expect(problemsOf({ name: "a", networks: [{ network: "lan-x", extra: 1 }] })).toMatch(/vm\.networks\[0\]/);
    });
});

describe("auto host ports", () => {
    test("a forward without host is 'auto' in the hash and the picked port in the argv", () => {
        const spec = parseVmSpec({ portForwards: [{ guest: 80 }, { host: 2222, guest: 22 }] });
        expect(valuesOf(buildQemuArgv(spec, { ...TCG, hostPorts: { 0: 40123 } }), "-nic")).toEqual([
            "user,model=virtio-net-pci,mac=52:54:00:12:34:56,hostfwd=tcp:127.0.0.1:40123-:80,hostfwd=tcp:127.0.0.1:2222-:22",
        ]);
        const h = specArgvHash(spec);
        expect(specArgvHash(parseVmSpec({ portForwards: [{ guest: 80 }, { host: 2222, guest: 22 }] }))).toBe(h);
        // An explicit port is a different VM.
        expect(
            specArgvHash(
                parseVmSpec({
                    portForwards: [
                        { host: 40123, guest: 80 },
                        { host: 2222, guest: 22 },
                    ],
                }),
            ),
        ).not.toBe(h);
    });

    test("two auto forwards are not a duplicate host port", () => {
        expect(parseVmSpec({ portForwards: [{ guest: 80 }, { guest: 81 }] }).portForwards).toHaveLength(2);
    });
});
