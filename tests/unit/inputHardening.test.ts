import * as network from "../../provider/resources/network";
import * as runScript from "../../provider/resources/runScript";
import * as vm from "../../provider/resources/virtualMachine";
import { DISK_IMAGE_INPUT_KEYS, DISK_IMAGE_OUTPUT_KEYS } from "../../provider/core/diskImageSpec";
import { parseDiskImageSpec } from "../../provider/resources/diskImage/spec";
import { extraArgsProblems } from "../../provider/core/extraArgs";
import { check as checkDiskImage } from "../../provider/resources/diskImage";
import {
    InputError,
    MAX_QUOTED_CHARS,
    quoteValue,
    refuseUnknownKeys,
    unknownKeyProblems,
} from "../../provider/core/validation";
import { parseVmSpec } from "../../provider/core/vmSpec";
import {
    NETWORK_OUTPUT_KEYS,
    RUN_SCRIPT_OUTPUT_KEYS,
    VIRTUAL_MACHINE_OUTPUT_KEYS,
} from "../../provider/core/resourceKeys";
import { DISK_IMAGE_OUTPUTS, NETWORK_OUTPUTS, RUN_SCRIPT_OUTPUTS, VIRTUAL_MACHINE_OUTPUTS } from "../../sdk/resources";

/** The messages an input gets, one per bad field, as "property: reason". */
function problems(parse: () => unknown): string[] {
    try {
        parse();
    } catch (err) {
        if (err instanceof InputError) return err.problems.map((p) => `${p.property}: ${p.reason}`);
        throw err;
    }
    return [];
}

describe("bad values quoted in errors", () => {
    test("a long bad value is cut to about 200 characters, saying how long it was", () => {
        const long = "x".repeat(5000);
        const [msg] = problems(() => parseVmSpec({ portForwards: [{ host: 2222, guest: 22, hostAddress: long }] }));
        expect(msg).toMatch(
            /^vm\.portForwards\[0\]\.hostAddress: hostAddress must be an IPv4 address.*\(got "x+… \(cut; 5000 characters\)\)$/,
        );
        expect(msg.length).toBeLessThan(MAX_QUOTED_CHARS + 150);
        expect(quoteValue("short")).toBe('"short"');
        expect(quoteValue("y".repeat(MAX_QUOTED_CHARS - 2))).toBe(JSON.stringify("y".repeat(MAX_QUOTED_CHARS - 2)));
    });

    test("an empty string is said to be empty, not to be no string", () => {
        expect(problems(() => parseVmSpec({ name: "" }))).toEqual(['vm.name: name must not be empty (got "")']);
        expect(problems(() => parseVmSpec({ qemu: "" }))).toEqual([
            'vm.qemu: qemu must not be empty (leave it out for qemu-system-x86_64) (got "")',
        ]);
        expect(problems(() => parseVmSpec({ qemuImg: "" }))).toEqual([
            'vm.qemuImg: qemuImg must not be empty (leave it out for qemu-img) (got "")',
        ]);
        expect(problems(() => parseVmSpec({ name: "n".repeat(65) }))[0]).toMatch(
            /^vm\.name: name must be at most 64 characters/,
        );
        // Every check of every core schema carries its own words: none says "must be a string" of a string.
        const strings = [
            { name: "" },
            { qemu: "" },
            { qemuImg: "" },
            { kernel: "" },
            { disks: [{ path: "", format: "raw" }] },
            { shares: [{ source: "", mountTag: "" }] },
        ];
        for (const input of strings)
            for (const m of problems(() => parseVmSpec(input))) expect(m).not.toMatch(/must be a string/);
        for (const m of problems(() =>
            parseDiskImageSpec({
                source: { kind: "directory", path: "", size: "1M", label: "" },
                path: "",
                stateDir: "",
            }),
        )) {
            expect(m).not.toMatch(/must be a string/);
        }
    });
});

describe("hostAddress", () => {
    test.each([
        ["255.255.255.255", /broadcast address/],
        ["224.0.0.1", /multicast address \(224\.0\.0\.0\/4\)/],
        ["239.255.255.250", /multicast/],
        ["240.0.0.1", /reserved range 240\.0\.0\.0\/4/],
        ["250.1.2.3", /reserved/],
    ])("%s is refused, saying why", (address, why) => {
        const [msg] = problems(() => parseVmSpec({ portForwards: [{ host: 2222, guest: 22, hostAddress: address }] }));
        expect(msg).toMatch(/^vm\.portForwards\[0\]\.hostAddress: hostAddress /);
        expect(msg).toMatch(why);
    });

    test.each(["127.0.0.1", "0.0.0.0", "192.168.1.10", "223.255.255.255", "10.0.0.255"])(
        "%s is accepted",
        (address) => {
            expect(
                parseVmSpec({ portForwards: [{ host: 2222, guest: 22, hostAddress: address }] }).portForwards[0]
                    .hostAddress,
            ).toBe(address);
        },
    );
});

describe("vm.extraArgs that take over what the provider manages or listen beyond loopback", () => {
    test.each([
        [["-pidfile", "/tmp/p"], 0, /managed by the provider/],
        [["--daemonize"], 0, /managed/],
        [["-qmp=tcp:0.0.0.0:4444,server=on,wait=off"], 0, /managed/],
        [["-qmp-pretty", "unix:/tmp/q,server"], 0, /managed/],
        [["-monitor", "stdio"], 0, /managed/],
        [["-mon", "chardev=c"], 0, /managed/],
        [["-serial", "stdio"], 0, /managed/],
        [["-incoming", "tcp:0:4444"], 0, /managed/],
        [["-gdb", "tcp::1234"], 0, /gdb stub/],
        [["-s"], 0, /gdb stub.*every interface/],
        [["--s"], 0, /gdb stub/],
        [
            ["-m", "64", "-chardev", "socket,id=c,port=4444,server=on,wait=off"],
            3,
            /chardev socket server on every interface/,
        ],
        [["-chardev", "socket,id=c,host=0.0.0.0,port=4444,server,wait=off"], 1, /on every interface/],
        [
            ["-chardev=socket,id=c,host=10.1.2.3,port=4444,server=on"],
            0,
            /on 10\.1\.2\.3, reachable from other machines/,
        ],
        [["-parallel", "tcp::4444,server=on"], 1, /tcp: server on every interface/],
        [["-debugcon", "telnet:0.0.0.0:23,server"], 1, /telnet: server/],
        [["-netdev", "socket,id=n,listen=:1234"], 1, /socket network backend listening on every interface/],
        [["-netdev", "user,id=n,hostfwd=tcp::2222-:22"], 1, /host forward on every interface.*portForwards/],
        [["-nic", "user,hostfwd=tcp:192.168.1.5:80-:80"], 1, /host forward on 192\.168\.1\.5/],
        [
            ["-netdev", "stream,id=n,server=on,addr.type=inet,addr.host=0.0.0.0,addr.port=1"],
            1,
            /stream network backend server/,
        ],
        [["-vnc", ":0"], 1, /VNC server on every interface/],
        [["-vnc", "127.0.0.1:0,websocket=on"], 1, /VNC websocket on every interface/],
        [["-display", "vnc=:1"], 1, /VNC server/],
        [["-spice", "port=5930,disable-ticketing=on"], 1, /SPICE server on every interface/],
    ] as const)("%j is refused at item %d", (args, index, why) => {
        const found = extraArgsProblems(args);
        expect(found).toHaveLength(1);
        expect(found[0].index).toBe(index);
        expect(found[0].reason).toMatch(why);
        const [msg] = problems(() => parseVmSpec({ extraArgs: args }));
        expect(msg).toMatch(new RegExp(`^vm\\.extraArgs\\[${index}\\]: `));
    });

    test.each([
        [["-S"]],
        [
            [
                "-chardev",
                "socket,id=c,path=/tmp/x.sock,server=on,wait=off",
                "-device",
                "virtio-serial",
                "-device",
                "virtserialport,chardev=c",
            ],
        ],
        [["-chardev", "socket,id=c,host=127.0.0.1,port=4444,server=on,wait=off"]],
        [["-chardev", "socket,id=c,host=10.0.0.1,port=4444"]], // a client connects out: no listener
        [["-netdev", "user,id=n,hostfwd=tcp:127.0.0.1:2222-:22", "-device", "e1000,netdev=n"]],
        [["-vnc", "127.0.0.1:0"]],
        [["-vnc", "unix:/tmp/vnc.sock"]],
        [["-vnc", "none"]],
        [["-spice", "port=5930,addr=127.0.0.1,disable-ticketing=on"]],
        [["-parallel", "tcp:127.0.0.1:4444,server=on"]],
        [["-append", "console=ttyS0 -serial"]], // text inside another option's value is not an option
        [["-smp", "2", "-cpu", "max", "-machine", "q35"]],
    ] as const)("%j is accepted", (args) => {
        expect(extraArgsProblems(args)).toEqual([]);
        expect(parseVmSpec({ extraArgs: args }).extraArgs).toEqual(args);
    });
});

describe("unknown top-level keys", () => {
    test("a DiskImage refuses a misspelt input, listing the allowed ones and the likely one", () => {
        const source = { kind: "blank", size: "1M", format: "raw" };
        expect(problems(() => parseDiskImageSpec({ source, pth: "/x.img" } as never))).toEqual([
            'pth: "pth" is not an input of this resource (inputs: source, path, stateDir, mode); did you mean "path"?',
        ]);
        expect(problems(() => parseDiskImageSpec({ source, statedir: "/s" } as never))).toEqual([
            'statedir: "statedir" is not an input of this resource (inputs: source, path, stateDir, mode); did you mean "stateDir"?',
        ]);
        expect(problems(() => parseDiskImageSpec({ source, format: "raw" } as never))[0]).toMatch(
            /^format: "format" is not an input of this resource/,
        );
    });

    test("Pulumi's __provider and the SDK's undefined outputs pass", () => {
        const source = { kind: "blank", size: "1M", format: "raw" };
        const outputs = Object.fromEntries(DISK_IMAGE_OUTPUTS.map((k) => [k, undefined]));
        expect(() =>
            parseDiskImageSpec({ ...outputs, source, path: "/x.img", __provider: "serialized" } as never),
        ).not.toThrow();
        // The list in core is the SDK's own.
        expect([...DISK_IMAGE_OUTPUT_KEYS].sort()).toEqual([...DISK_IMAGE_OUTPUTS].sort());
        expect(DISK_IMAGE_INPUT_KEYS).toEqual(["source", "path", "stateDir", "mode"]);
        expect([...RUN_SCRIPT_OUTPUT_KEYS].sort()).toEqual([...RUN_SCRIPT_OUTPUTS].sort());
        expect([...NETWORK_OUTPUT_KEYS].sort()).toEqual([...NETWORK_OUTPUTS].sort());
        expect([...VIRTUAL_MACHINE_OUTPUT_KEYS].sort()).toEqual([...VIRTUAL_MACHINE_OUTPUTS].sort());
    });

    test("the helper for the other resources: every unknown key named at once", () => {
        const found = unknownKeyProblems(
            { vm: {}, redy: {}, statedir: "/s", zzz: 1, __provider: "p", pid: undefined },
            ["vm", "ready", "stateDir"],
            ["pid"],
        );
        expect(found.map((p) => p.property)).toEqual(["redy", "statedir", "zzz"]);
        expect(found[0].reason).toMatch(/did you mean "ready"\?$/);
        expect(found[2].reason).toBe('"zzz" is not an input of this resource (inputs: vm, ready, stateDir)');
        expect(() => refuseUnknownKeys({ vm: {}, pid: 3 }, ["vm"], ["pid"])).toThrow(/^pid: "pid" is not an input/); // an output with a value is not an input
    });
});

test("a size with thousands of digits is quoted cut, too", () => {
    const [msg] = problems(() =>
        parseDiskImageSpec({ source: { kind: "blank", size: `1.${"0".repeat(3000)}1K`, format: "raw" } }),
    );
    expect(msg).toMatch(/^source\.size: size "1\.0+… \(cut; 3004 characters\) is not a whole number of bytes/);
    expect(msg.length).toBeLessThan(2 * 200 + 200);
});

test("DiskImage's check reports an unknown key as a check failure, and passes __provider", async () => {
    const check = checkDiskImage;
    const source = { kind: "blank", size: "1M", format: "raw" };
    const bad = await check({}, { source, redy: true, __provider: "p" });
    expect(bad.failures).toEqual([
        { property: "redy", reason: '"redy" is not an input of this resource (inputs: source, path, stateDir, mode)' },
    ]);
    expect((await check({}, { source, path: "/x.img", __provider: "p" })).failures).toBeUndefined();
});

test("RunScript's and VirtualMachine's checks refuse unknown top-level keys, suggest the meant one, and pass __provider", async () => {
    const spec = { kernel: "/boot/vmlinuz" };
    const rs = await runScript.check({}, { vm: spec, pth: "/x.sh", __provider: "p" });
    expect(rs.failures).toEqual([{ property: "pth", reason: expect.stringContaining('did you mean "path"?') }]);
    expect(
        (await runScript.check({}, { vm: spec, path: "/x.sh", __provider: "p", argvHash: undefined })).failures,
    ).toBeUndefined();
    const v = await vm.check({}, { vm: spec, redy: { tcpPort: 1 }, statedir: "/s", __provider: "p" });
    expect(v.failures?.map((f: { property: string }) => f.property)).toEqual(["redy", "statedir"]);
    expect(v.failures?.[1].reason).toContain('did you mean "stateDir"?');
    expect((await vm.check({}, { vm: spec, __provider: "p", pid: undefined })).failures).toBeUndefined();
});

test("Network's check refuses unknown top-level keys and passes __provider", async () => {
    const bad = await network.check({}, { name: "lan", subnett: "10.9.0.0/24", __provider: "p" });
    expect(bad.failures).toEqual([{ property: "subnett", reason: expect.stringContaining('did you mean "subnet"?') }]);
    expect((await network.check({}, { name: "lan", __provider: "p", pid: undefined })).failures).toBeUndefined();
});
