import { parseVmSpec } from "../../provider/core/vmSpec";
import { InputError } from "../../provider/core/validation";

function problemsOf(input: unknown): string {
    try {
        parseVmSpec(input);
    } catch (e) {
        expect(e).toBeInstanceOf(InputError);
        return (e as Error).message;
    }
    throw new Error("expected the spec to be refused");
}

describe("parseVmSpec", () => {
    test("fills Guix's defaults", () => {
        const spec = parseVmSpec({});
        expect(spec).toMatchObject({
            qemu: "qemu-system-x86_64",
            accel: "auto",
            memoryMiB: 256,
            cpus: 1,
            graphic: false,
            volatile: false,
            network: "user",
            disks: [],
            shares: [],
            portForwards: [],
            extraArgs: [],
        });
    });

    test("forwarded ports bind to loopback unless asked otherwise", () => {
        const spec = parseVmSpec({
            portForwards: [
                { host: 8080, guest: 80 },
                { host: 2222, guest: 22, hostAddress: "0.0.0.0" },
            ],
        });
        expect(spec.portForwards[0]).toEqual({ host: 8080, guest: 80, hostAddress: "127.0.0.1", protocol: "tcp" });
        expect(spec.portForwards[1].hostAddress).toBe("0.0.0.0");
    });

    test.each([
        [{ memoryMiB: 0 }, /vm\.memoryMiB: memoryMiB must be at least 16 \(got 0\)/],
        [{ memoryMiB: -5 }, /vm\.memoryMiB/],
        [{ memoryMiB: 12.5 }, /vm\.memoryMiB: memoryMiB must be a whole number/],
        [{ cpus: 0 }, /vm\.cpus: cpus must be between 1 and 255/],
        [{ accel: "hvf" }, /vm\.accel: accel must be "auto", "kvm" or "tcg" \(got "hvf"\)/],
        [
            { portForwards: [{ host: 0, guest: 80 }] },
            /vm\.portForwards\[0\]\.host: host must be between 1 and 65535 \(got 0\)/,
        ],
        [
            { portForwards: [{ host: 80, guest: 70000 }] },
            /vm\.portForwards\[0\]\.guest: guest must be between 1 and 65535/,
        ],
        [
            {
                portForwards: [
                    { host: 8080, guest: 80 },
                    { host: 8080, guest: 81 },
                ],
            },
            /vm\.portForwards\[1\]\.host: host port 8080\/tcp is already forwarded by portForwards\[0\]/,
        ],
        [
            { portForwards: [{ host: 8080, guest: 80, hostAddress: "localhost" }] },
            /vm\.portForwards\[0\]\.hostAddress: hostAddress must be an IPv4 address/,
        ],
        [
            { network: "none", portForwards: [{ host: 8080, guest: 80 }] },
            /vm\.portForwards: port forwards reach the guest through the user-mode NIC, which network "none" drops/,
        ],
        [
            { shares: [{ source: "/srv", mountTag: "x".repeat(32) }] },
            /vm\.shares\[0\]\.mountTag: mountTag must be at most 31 bytes/,
        ],
        [{ shares: [{ source: "/srv", mountTag: "_tag" }] }, /mountTag must not contain "\/" nor start with "_"/],
        [
            { shares: [{ source: "/a" }, { source: "/a" }] },
            /vm\.shares\[1\]\.source: mount tag TAG\w+ is already used by shares\[0\]/,
        ],
        [{ shares: [{ source: "relative/dir" }] }, /vm\.shares\[0\]\.source: source must be an absolute path/],
        [{ kernel: "/boot/vmlinuz\nrm -rf /" }, /vm\.kernel: kernel must not contain NUL, newline/],
        [{ disks: [{ path: "/img/a\0b", format: "raw" }] }, /vm\.disks\[0\]\.path: path must not contain NUL/],
        [
            { disks: [{ path: "/img/a", format: "vmdk" }] },
            /vm\.disks\[0\]\.format: format must be "raw" or "qcow2" \(got "vmdk"\)/,
        ],
        [
            {
                disks: [
                    { path: "/img/a", format: "raw" },
                    { path: "/img/a", format: "raw" },
                ],
            },
            /vm\.disks\[1\]: disks\[0\] already uses \/img\/a/,
        ],
        [
            { disks: [{ path: "/img/a", format: "raw", overlay: "/img/a" }] },
            /vm\.disks\[0\]\.overlay: overlay must be another file than path/,
        ],
        [
            { volatile: true, disks: [{ path: "/img/a", format: "raw", overlay: "/s/o.qcow2" }] },
            /vm\.disks\[0\]\.overlay: an overlay keeps the guest's writes and volatile throws them away/,
        ],
        [
            { disks: [{ path: "/img/a", format: "raw", inputHash: "not-hex" }] },
            /vm\.disks\[0\]\.inputHash: inputHash must be a lowercase hex digest/,
        ],
        [{ kernelArguments: ["quiet"] }, /vm\.kernelArguments: kernelArguments need kernel/],
        [{ initrd: "/boot/initrd" }, /vm\.initrd: initrd needs kernel/],
        [{ extraArgs: ["-smp\n2"] }, /vm\.extraArgs\[0\]/],
        [{ memory: 512 }, /vm\.memory: "memory" is not a key of vm .*did you mean "memoryMiB"/],
    ])("refuses %j", (input, message) => {
        expect(problemsOf(input)).toMatch(message);
    });

    test("reports every bad field at once", () => {
        const message = problemsOf({ memoryMiB: 0, cpus: 0 });
        expect(message).toMatch(/vm\.memoryMiB/);
        expect(message).toMatch(/vm\.cpus/);
    });

    test("a comma in a path is fine: it is escaped when placed in a QEMU option", () => {
        expect(parseVmSpec({ shares: [{ source: "/srv/a, b" }] }).shares[0].source).toBe("/srv/a, b");
    });
});
