/**
 * Issue 25, the pure part: what check refuses (and how it says so) for the inputs the second
 * adversarial round found accepted wrongly, unclear or crashing. No host is touched: every call
 * here is a check, a diff or a spec parse.
 */
import * as diskImage from "../../provider/resources/diskImage";
import * as guestCommand from "../../provider/resources/guestCommand";
import * as network from "../../provider/resources/network";
import * as runScript from "../../provider/resources/runScript";
import * as vm from "../../provider/resources/virtualMachine";
import { extraArgsProblems } from "../../provider/core/extraArgs";
import { parseDiskImageSpec } from "../../provider/resources/diskImage/spec";
import { InputError } from "../../provider/core/validation";
import { parseVmSpec } from "../../provider/core/vmSpec";
import { StateError } from "../../provider/resources/stateGuard";

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

/** A check's failures as "property: reason". */
async function failures(
    result: Promise<{ failures?: Array<{ property: string; reason: string }> }>,
): Promise<string[]> {
    return ((await result).failures ?? []).map((f) => `${f.property}: ${f.reason}`);
}

describe("1. extraArgs are judged by what QEMU would do with them", () => {
    test.each([
        [["-qtest", "tcp:0.0.0.0:4000,server=on"], 0, /-qtest.*full control/],
        [["-qtest=tcp:0.0.0.0:4000,server=on"], 0, /-qtest/],
        [["-readconfig", "/tmp/qemu.cfg"], 0, /-readconfig.*config file/],
        [["-netdev", "socket,id=n,mcast=230.0.0.1:1234"], 1, /multicast/],
        [["-net", "socket,mcast=230.0.0.1:1234"], 1, /multicast/],
        [["-set", "chardev.c.server=on"], 1, /-set chardev/],
        [["-chardev", "udp,id=c,host=127.0.0.1,port=5555,localaddr=0.0.0.0,localport=5556"], 1, /UDP.*every interface/],
        [["-chardev", "udp,id=c,host=127.0.0.1,port=5555"], 1, /UDP.*every interface/],
        [["-netdev", "socket,id=n,udp=127.0.0.1:5555,localaddr=0.0.0.0:5556"], 1, /UDP.*every interface/],
        [["-netdev", "dgram,id=n,local.type=inet,local.host=0.0.0.0,local.port=5556"], 1, /every interface/],
        [["-netdev", '{"type":"socket","id":"n","listen":":1234"}'], 1, /every interface/],
        [["-parallel", "mon:stdio"], 1, /monitor/],
        [["-debugcon", "udp:127.0.0.1:5555@0.0.0.0:5556"], 1, /UDP.*every interface/],
        [["-object", "x-vfio-user-server,id=v,type=unix,path=/tmp/v"], 1, /object type "x-vfio-user-server".*allowed/],
        [["-frobnicate"], 0, /not an option pulumi-qemu lets through/],
        [["-chroot", "/srv"], 0, /changes QEMU.s root/],
        [["-display", "dbus"], 1, /display/],
    ] as const)("%j is refused at item %d", (args, index, why) => {
        const found = extraArgsProblems(args);
        expect(found.map((p) => p.index)).toContain(index);
        expect(found.find((p) => p.index === index)!.reason).toMatch(why);
        expect(problems(() => parseVmSpec({ extraArgs: args }))[0]).toMatch(
            new RegExp(`^vm\\.extraArgs\\[${index}\\]: `),
        );
    });

    test.each([
        [
            [
                "-chardev",
                "udp,id=c,host=127.0.0.1,port=5555,localaddr=127.0.0.1,localport=5556",
                "-device",
                "isa-serial,chardev=c",
            ],
        ],
        [["-netdev", "socket,id=n,connect=10.0.0.1:1234", "-device", "e1000,netdev=n"]],
        [["-netdev", "socket,id=n,udp=10.0.0.1:5555,localaddr=127.0.0.1:5556"]],
        [["-netdev", '{"type":"user","id":"n","hostfwd":"tcp:127.0.0.1:2222-:22"}']],
        [["-object", "memory-backend-ram,id=m,size=64M", "-object", "iothread,id=io"]],
        [["-set", "device.d.addr=0x5"]],
        [["-fw_cfg", "name=opt/com.example/x,string=1"]],
        [
            [
                "-nodefaults",
                "-no-user-config",
                "-snapshot",
                "-rtc",
                "base=utc",
                "-global",
                "kvm-pit.lost_tick_policy=discard",
            ],
        ],
        [["-drive", "file=/tmp/x.img,format=raw,if=virtio"]],
        [["-display", "none"]],
    ] as const)("%j is accepted", (args) => {
        expect(extraArgsProblems(args)).toEqual([]);
    });
});

describe("3. an image's mode never lets others write it", () => {
    test.each(["0666", "0662", "0646"])("mode %s is refused", (mode) => {
        const [msg] = problems(() =>
            parseDiskImageSpec({ source: { kind: "blank", size: "1M", format: "raw" }, mode }),
        );
        expect(msg).toMatch(/^mode: .*others/);
    });
    test.each(["0600", "0640", "0644", "0660"])("mode %s is accepted", (mode) => {
        expect(parseDiskImageSpec({ source: { kind: "blank", size: "1M", format: "raw" }, mode }).mode).toBe(
            parseInt(mode, 8),
        );
    });
});

describe("7. forwards of one guest port that ports/endpoints could not tell apart", () => {
    test("two auto-picked forwards for guest port 80 are refused, naming the second", () => {
        const [msg] = problems(() => parseVmSpec({ portForwards: [{ guest: 80 }, { guest: 80 }] }));
        expect(msg).toMatch(/^vm\.portForwards\[1\]: .*guest port 80.*portForwards\[0\]/);
    });
    test("one auto and one explicit forward of the same guest port are refused too", () => {
        expect(problems(() => parseVmSpec({ portForwards: [{ guest: 80, host: 8080 }, { guest: 80 }] }))).toHaveLength(
            1,
        );
    });
    test("two explicit forwards, or one per protocol, are accepted", () => {
        expect(
            parseVmSpec({
                portForwards: [
                    { guest: 80, host: 8080 },
                    { guest: 80, host: 8081 },
                ],
            }).portForwards,
        ).toHaveLength(2);
        expect(
            parseVmSpec({ portForwards: [{ guest: 53 }, { guest: 53, protocol: "udp" }] }).portForwards,
        ).toHaveLength(2);
    });
});

describe("8. kernel arguments fit the kernel's command line", () => {
    test("10,000 characters are refused, naming the limit", () => {
        const [msg] = problems(() =>
            parseVmSpec({ kernel: "/boot/vmlinuz", kernelArguments: ["a=" + "x".repeat(10_000)] }),
        );
        expect(msg).toMatch(/^vm\.kernelArguments: .*2048/);
    });
    test("many short ones adding up past the limit are refused too", () => {
        expect(
            problems(() =>
                parseVmSpec({
                    kernel: "/boot/vmlinuz",
                    kernelArguments: Array.from({ length: 300 }, (_, i) => `opt${i}=1`),
                }),
            ),
        ).toHaveLength(1);
    });
    test("a long but fitting command line is accepted", () => {
        expect(
            parseVmSpec({ kernel: "/boot/vmlinuz", kernelArguments: ["a=" + "x".repeat(1500)] }).kernelArguments,
        ).toHaveLength(1);
    });
});

describe("9. host pseudo-files are no image paths or sources", () => {
    test.each(["/dev/sda", "/dev/null", "/proc/self/environ", "/sys/kernel/notes"])("image path %s is refused", (p) => {
        expect(
            problems(() => parseDiskImageSpec({ source: { kind: "blank", size: "1M", format: "raw" }, path: p }))[0],
        ).toMatch(/^path: .*(\/dev|\/proc|\/sys)/);
    });
    test.each(["/proc/self/environ", "/dev/zero", "/sys/firmware/dmi/tables/DMI"])("file source %s is refused", (p) => {
        expect(problems(() => parseDiskImageSpec({ source: { kind: "file", path: p } }))[0]).toMatch(/^source\.path: /);
    });
    test("/dev/shm (a tmpfs many keep images on) is accepted", () => {
        expect(
            parseDiskImageSpec({ source: { kind: "blank", size: "1M", format: "raw" }, path: "/dev/shm/x.img" }).path,
        ).toBe("/dev/shm/x.img");
    });
});

describe("10. a Network's subnet", () => {
    test("0.0.0.0/24 is refused", async () => {
        expect((await failures(network.check({}, { subnet: "0.0.0.0/24" })))[0]).toMatch(/^subnet: .*0\.0\.0\.0/);
    });
    test("10.0.2.0/24 is refused at the Network's own check: it overlaps the user-mode network", async () => {
        expect((await failures(network.check({}, { subnet: "10.0.2.0/23" })))[0]).toMatch(
            /^subnet: .*user-mode network 10\.0\.2\.0\/24/,
        );
    });
});

describe("11. GuestCommand and Network judged as the others", () => {
    test("a relative stateDir is refused", async () => {
        expect(
            (await failures(guestCommand.check({}, { vm: "vm-abc123", create: "true", stateDir: "rel/dir" })))[0],
        ).toMatch(/^stateDir: .*absolute/);
    });
    test("an environment value with a NUL byte is refused at check, without quoting it", async () => {
        const [msg] = await failures(
            guestCommand.check({}, { vm: "vm-abc123", create: "true", environment: { TOKEN: "se\0cret" } }),
        );
        expect(msg).toMatch(/^environment\.TOKEN: .*NUL/);
        expect(msg).not.toMatch(/cret/);
    });
    test("Network.diff with empty state raises its StateError", async () => {
        await expect(network.diff("net-abc123", {} as never, {})).rejects.toThrow(StateError);
    });
});

describe("12. undefined or null where an object was expected: refusals, not TypeErrors", () => {
    const lifecycles = { vm, runScript, diskImage, network, guestCommand } as Record<string, any>;
    test.each(Object.keys(lifecycles))("%s: check with undefined and null answers", async (name) => {
        const m = lifecycles[name];
        for (const news of [undefined, null]) {
            const result = await m.check(news, news);
            expect(result).toBeDefined();
        }
    });
    test.each(["vm", "runScript", "diskImage"])("%s: create with undefined inputs is an InputError", async (name) => {
        await expect(lifecycles[name].create(undefined)).rejects.toThrow(InputError);
        await expect(lifecycles[name].create(null)).rejects.toThrow(InputError);
    });
    test.each(["diskImage", "network", "guestCommand"])(
        "%s: diff with undefined state or inputs is a StateError or InputError",
        async (name) => {
            for (const [olds, news] of [
                [undefined, undefined],
                [null, null],
                [undefined, {}],
            ]) {
                const err = await lifecycles[name].diff("x", olds, news).then(
                    () => undefined,
                    (e: Error) => e,
                );
                if (err !== undefined)
                    (expect(err).toBeInstanceOf(Error), expect(["StateError", "InputError"]).toContain(err.name));
            }
        },
    );
    test("a 5,000-level nested userData object is refused, not a stack overflow", async () => {
        let deep: unknown = "x";
        for (let i = 0; i < 5000; i++) deep = { a: deep };
        const [msg] = await failures(diskImage.check({}, { source: { kind: "cloudInit", userData: deep } }));
        expect(msg).toMatch(/^source\.userData: .*nest/);
    });
});

describe("13. refusals name the field, what is expected, and the likely key", () => {
    test("a missing vm says a VM spec object is wanted", async () => {
        const [msg] = await failures(vm.check({}, {}));
        expect(msg).toMatch(/^vm: .*(required|missing)/);
        expect(msg).not.toMatch(/Invalid input/);
    });
    test("a string where a list is wanted shows the list it would be", async () => {
        const [msg] = await failures(vm.check({}, { vm: { kernel: "/k", kernelArguments: "console=ttyS0" } }));
        expect(msg).toMatch(/^vm\.kernelArguments: .*list.*\["console=ttyS0"\]/);
    });
    test("a nested unknown key is named by its full path, with the allowed keys and the likely one", async () => {
        const [msg] = await failures(vm.check({}, { vm: { memmory: 512 } }));
        expect(msg).toMatch(/^vm\.memmory: .*memoryMiB.*did you mean "memoryMiB"/);
        expect(msg).toMatch(/cpus/);
        const [ready] = await failures(vm.check({}, { vm: {}, ready: { serialPatern: "login:" } }));
        expect(ready).toMatch(/^ready\.serialPatern: .*did you mean "serialPattern"/);
        const [size] = await failures(
            diskImage.check({}, { source: { kind: "cloudInit", size: "1M", userData: "#cloud-config\n" } }),
        );
        expect(size).toMatch(/^source\.size: .*userData/);
    });
    test("GuestCommand's vm says an id or the VM's outputs are wanted", async () => {
        for (const v of [undefined, 5]) {
            const [msg] = await failures(guestCommand.check({}, { vm: v, create: "true" }));
            expect(msg).toMatch(/^vm: .*id.*outputs/);
        }
    });
    test("no raw zod text is left in any of these refusals", async () => {
        const all = [
            ...(await failures(
                vm.check({}, { vm: { memoryMiB: "lots", disks: "x", portForwards: [{ guest: "80" }] } }),
            )),
            ...(await failures(runScript.check({}, {}))),
            ...(await failures(
                diskImage.check({}, { source: { kind: "blank", size: "1M", format: "raw", extra: 1 } }),
            )),
        ];
        expect(all.length).toBeGreaterThan(2);
        for (const m of all) expect(m).not.toMatch(/Invalid input|Unrecognized key/);
    });
});
