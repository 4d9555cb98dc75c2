import {
    defaultHostNumber,
    dhcpHostLine,
    dnsHostLine,
    dnsmasqArgv,
    hostEntryName,
    networkDomain,
    serverAddress,
    serverHostNumber,
    vmAddress,
} from "../../provider/core/dhcp";
import { defaultMac, hostAddress, parseSubnet, preferredHostNumber, type Subnet } from "../../provider/core/network";
import { parsePortPrint, parseVlanPrint } from "../../provider/core/switchPorts";
import { boundUdpPorts } from "../../provider/host/net/dhcpServer";

function subnet(text: string): Subnet {
    const s = parseSubnet(text);
    if (typeof s === "string") throw new Error(s);
    return s;
}

test("the server takes the last host; a VM's default address never is it on a DHCP network", () => {
    const s = subnet("10.70.1.0/24");
    expect(serverHostNumber(s)).toBe(254);
    expect(serverAddress(s)).toBe("10.70.1.254");
    expect(serverAddress(subnet("10.70.1.0/30"))).toBe("10.70.1.2");
    // Find a name whose preferred number is the server's: DHCP moves it to the next (wrapping to 1).
    let name = "";
    for (let i = 0; !name; i++) if (preferredHostNumber(s, `vm${i}`) === 254) name = `vm${i}`;
    expect(defaultHostNumber(s, name, false)).toBe(254);
    expect(defaultHostNumber(s, name, true)).toBe(1);
    // Any other name is unaffected by DHCP.
    expect(defaultHostNumber(s, "web", true)).toBe(preferredHostNumber(s, "web"));
});

test("vmAddress is the network's default for the name: address, MAC from the network id, names under the domain", () => {
    const net = { id: "lab-Ab12Cd", subnet: "10.70.1.0/24", domain: "lab", dhcp: true };
    const a = vmAddress(net, "web");
    expect(a.ipv4).toBe(hostAddress(subnet(net.subnet), defaultHostNumber(subnet(net.subnet), "web", true)));
    expect(a.mac).toBe(defaultMac(net.id, a.ipv4));
    expect(a).toMatchObject({ netmask: "255.255.255.0", hostname: "web", fqdn: "web.lab" });
    expect(vmAddress(net, "web", "www").fqdn).toBe("www.lab");
    // Pure: the same inputs, the same answer; another network id, another MAC.
    expect(vmAddress(net, "web")).toEqual(a);
    expect(vmAddress({ ...net, id: "lab-Zz99Yy" }, "web").mac).not.toBe(a.mac);
    expect(() => vmAddress({ ...net, subnet: "10.70.1.5/24" }, "web")).toThrow(/host bits/);
    expect(vmAddress({ id: "Lab_2.x-Ab12Cd", subnet: "10.70.1.0/24" }, "db").fqdn).toBe("db.lab-2-x-ab12cd");
});

test("a network's domain is one lowercase DNS label", () => {
    expect(networkDomain("Lab")).toBe("lab");
    expect(networkDomain("my_net.v2")).toBe("my-net-v2");
    expect(networkDomain("__")).toBe("net");
    expect(networkDomain("a".repeat(80))).toHaveLength(63);
});

test("dnsmasq's host lines and files", () => {
    const h = { mac: "02:AB:0a:46:01:05", ipv4: "10.70.1.5", hostname: "web" };
    expect(dhcpHostLine(h)).toBe("02:ab:0a:46:01:05,10.70.1.5\n");
    expect(dnsHostLine(h, "lab")).toBe("10.70.1.5 web web.lab\n");
    expect(hostEntryName(h.mac)).toBe("mac-02-ab-0a-46-01-05");
});

test("dnsmasq's command line: only its tap, no upstream, no router, static leases that never expire", () => {
    const argv = dnsmasqArgv(
        {
            pidfile: "/n/dhcp/dnsmasq.pid",
            hostsDir: "/n/dhcp/hosts",
            dnsDir: "/n/dhcp/dns",
            leaseFile: "/n/dhcp/leases",
        },
        subnet("10.70.1.0/24"),
        "lab",
        "tap0",
    );
    expect(argv[0]).toBe("dnsmasq");
    // The pidfile is its own argument, which is how the process is recognised.
    expect(argv[argv.indexOf("-x") + 1]).toBe("/n/dhcp/dnsmasq.pid");
    expect(argv).toEqual(
        expect.arrayContaining([
            "--no-daemon",
            "--interface=tap0",
            "--bind-interfaces",
            "--no-resolv",
            "--no-hosts",
            "--dhcp-range=10.70.1.1,static,255.255.255.0,infinite",
            "--dhcp-option=option:router",
            "--dhcp-hostsdir=/n/dhcp/hosts",
            "--hostsdir=/n/dhcp/dns",
            "--domain=lab",
            "--local=/lab/",
        ]),
    );
});

test("the switch console's port and VLAN tables", () => {
    const ports = parsePortPrint([
        "Port 0001 untagged_vlan=0000 ACTIVE - Unnamed Allocatable",
        " Current User: root Access Control: (User: NONE - Group: NONE)",
        " IN:  pkts         32          bytes                 2944",
        "  -- endpoint ID 0003 module unix prog   : vde_plug2tap: user=root pid=16895",
        "Port 0002 untagged_vlan=0100 ACTIVE - Unnamed Allocatable",
        "  -- endpoint ID 0005 module unix prog   : QEMU user=root pid=200",
        "  -- endpoint ID 0006 module unix prog   : QEMU user=root pid=201",
        "Port 0003 untagged_vlan=0007 INACTIVE - Unnamed Allocatable",
    ]);
    expect(ports).toEqual([
        { port: 1, vlan: 0, active: true, pids: [16895] },
        { port: 2, vlan: 100, active: true, pids: [200, 201] },
        { port: 3, vlan: 7, active: false, pids: [] },
    ]);
    expect(parseVlanPrint(["VLAN 0000", " -- Port 0002 tagged=0 active=0 status=Learning", "VLAN 0008"])).toEqual([
        0, 8,
    ]);
});

test("bound UDP ports from /proc/net/udp", () => {
    const text = [
        "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops",
        "  251: FE4B610A:0035 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 1 2 0000000000000000 0",
        "  265: 00000000:0043 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 1 2 0000000000000000 0",
    ].join("\n");
    expect([...boundUdpPorts(text)].sort()).toEqual([53, 67]);
});
