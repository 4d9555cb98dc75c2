import {
    acceptedArgvHashes,
    buildQemuArgv,
    nameConfigText,
    nameFromConfigText,
    specArgvHash,
} from "../../provider/core/qemuArgv";
import { mountTag } from "../../provider/core/mountTag";
import { parseVmSpec } from "../../provider/core/vmSpec";
import { escapeOptionValue } from "../../provider/core/qemuOption";

const TCG = { accel: "tcg" as const };

/** The value that follows `flag` each time it appears. */
function valuesOf(argv: string[], flag: string): string[] {
    return argv.flatMap((a, i) => (a === flag ? [argv[i + 1]] : []));
}

describe("buildQemuArgv", () => {
    const full = parseVmSpec({
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
    });

    test("follows Guix's choices", () => {
        const argv = buildQemuArgv(full, TCG);
        expect(argv[0]).toBe("qemu-system-x86_64");
        expect(valuesOf(argv, "-accel")).toEqual(["tcg"]);
        expect(valuesOf(argv, "-m")).toEqual(["512"]);
        expect(valuesOf(argv, "-smp")).toEqual(["2"]);
        // onReboot "restart" (default): a guest reboot is QEMU's own reset (firmwareBoot.test.ts has "stop").
        expect(argv).not.toContain("-no-reboot");
        expect(argv).toContain("-nographic");
        expect(valuesOf(argv, "-object")).toEqual(["rng-random,filename=/dev/urandom,id=pq-rng"]);
        expect(valuesOf(argv, "-device")).toEqual(["virtio-rng-pci,rng=pq-rng"]);
        expect(valuesOf(argv, "-kernel")).toEqual(["/boot/vmlinuz"]);
        expect(valuesOf(argv, "-initrd")).toEqual(["/boot/initrd.img"]);
        expect(valuesOf(argv, "-append")).toEqual(["console=ttyS0 quiet root=/dev/vda"]);
        expect(valuesOf(argv, "-name")).toEqual(["web,,1"]);
        expect(argv[argv.length - 1]).toBe("-S");
    });

    test("9p shares carry Guix's mount tag, escape commas and mark read-only ones", () => {
        const virtfs = valuesOf(buildQemuArgv(full, TCG), "-virtfs");
        expect(virtfs).toEqual([
            `local,path=/srv/a share,,with comma,security_model=none,mount_tag=${mountTag("/srv/a share,with comma")},readonly=on`,
            "local,path=/srv/rw,security_model=none,mount_tag=data",
        ]);
    });

    test("disks: read-only raw marked so, overlays booted instead of their base", () => {
        expect(valuesOf(buildQemuArgv(full, TCG), "-drive")).toEqual([
            "file=/img/base,,raw,format=raw,if=virtio,readonly=on",
            "file=/state/root,, ov.qcow2,format=qcow2,if=virtio",
        ]);
        const volatile = parseVmSpec({ volatile: true, disks: [{ path: "/img/a.qcow2", format: "qcow2" }] });
        expect(valuesOf(buildQemuArgv(volatile, TCG), "-drive")).toEqual([
            "file=/img/a.qcow2,format=qcow2,if=virtio,snapshot=on",
        ]);
    });

    test("user networking with loopback port forwards, or none", () => {
        expect(valuesOf(buildQemuArgv(full, TCG), "-nic")).toEqual([
            "user,model=virtio-net-pci,mac=52:54:00:12:34:56,hostfwd=tcp:127.0.0.1:8080-:80,hostfwd=udp:0.0.0.0:5353-:53",
        ]);
        expect(valuesOf(buildQemuArgv(parseVmSpec({ network: "none" }), TCG), "-nic")).toEqual(["none"]);
    });

    test("a daemon gets a pidfile, an escaped QMP socket and a serial log instead of -nographic", () => {
        const argv = buildQemuArgv(full, TCG, {
            pidfile: "/run/a,b/qemu.pid",
            qmpSocket: "/run/a,b/qmp.sock",
            serialLog: "/run/a,b/serial.log",
        });
        expect(argv).not.toContain("-nographic");
        expect(argv).toContain("-daemonize");
        expect(valuesOf(argv, "-pidfile")).toEqual(["/run/a,b/qemu.pid"]);
        expect(valuesOf(argv, "-qmp")).toEqual(["unix:/run/a,,b/qmp.sock,server=on,wait=off"]);
        expect(valuesOf(argv, "-serial")).toEqual(["file:/run/a,b/serial.log"]);
        expect(valuesOf(argv, "-display")).toEqual(["none"]);
    });

    test("a daemon's disks get block node names (for faults), a volatile one's not; the hash does not see them", () => {
        const daemon = { pidfile: "/r/qemu.pid", qmpSocket: "/r/qmp.sock", serialLog: "/r/serial.log" };
        expect(valuesOf(buildQemuArgv(full, TCG, daemon), "-drive")).toEqual([
            "file=/img/base,,raw,format=raw,if=virtio,readonly=on,node-name=pq-disk0,file.node-name=pq-disk0-file",
            "file=/state/root,, ov.qcow2,format=qcow2,if=virtio,node-name=pq-disk1,file.node-name=pq-disk1-file",
        ]);
        const volatile = parseVmSpec({ volatile: true, disks: [{ path: "/img/a.qcow2", format: "qcow2" }] });
        expect(valuesOf(buildQemuArgv(volatile, TCG, daemon), "-drive")).toEqual([
            "file=/img/a.qcow2,format=qcow2,if=virtio,snapshot=on",
        ]);
        // A launcher (no daemon) is as before, and so is the hash, which is made without the daemon
        // (network.test.ts pins its values): VMs started before keep their identity.
        expect(valuesOf(buildQemuArgv(full, TCG), "-drive").join(" ")).not.toContain("node-name");
    });

    test("graphic guests keep their display and get no console=ttyS0", () => {
        const argv = buildQemuArgv(parseVmSpec({ graphic: true, kernel: "/k", kernelArguments: ["quiet"] }), TCG);
        expect(argv).not.toContain("-nographic");
        expect(valuesOf(argv, "-append")).toEqual(["quiet"]);
    });

    test("is deterministic for the same spec and host facts", () => {
        expect(buildQemuArgv(full, TCG)).toEqual(buildQemuArgv(parseVmSpec(JSON.parse(JSON.stringify(full))), TCG));
    });
});

describe("specArgvHash", () => {
    test("does not depend on the accelerator a host resolved", () => {
        const spec = parseVmSpec({ memoryMiB: 512 });
        expect(buildQemuArgv(spec, { accel: "kvm" })).not.toEqual(buildQemuArgv(spec, TCG));
        expect(specArgvHash(spec)).toBe(specArgvHash(parseVmSpec({ memoryMiB: 512 })));
    });

    test("a default spelled out is no change; a real change is", () => {
        expect(specArgvHash(parseVmSpec({}))).toBe(
            specArgvHash(parseVmSpec({ memoryMiB: 256, cpus: 1, accel: "auto", portForwards: [] })),
        );
        expect(specArgvHash(parseVmSpec({}))).not.toBe(specArgvHash(parseVmSpec({ memoryMiB: 512 })));
        expect(specArgvHash(parseVmSpec({ accel: "tcg" }))).not.toBe(specArgvHash(parseVmSpec({})));
    });

    test("an image rebuilt at the same path changes the hash but not the argv", () => {
        const disk = { path: "/img/root.qcow2", format: "qcow2" as const };
        const before = parseVmSpec({ disks: [{ ...disk, inputHash: "a".repeat(64) }] });
        const after = parseVmSpec({ disks: [{ ...disk, inputHash: "b".repeat(64) }] });
        expect(buildQemuArgv(before, TCG)).toEqual(buildQemuArgv(after, TCG));
        expect(specArgvHash(before)).not.toBe(specArgvHash(after));
    });

    test("escapeOptionValue doubles every comma", () => {
        expect(escapeOptionValue("a,b,,c")).toBe("a,,b,,,,c");
    });
});

describe("agent channel", () => {
    const daemon = {
        pidfile: "/s/vm/qemu.pid",
        qmpSocket: "/s/vm/qmp.sock",
        serialLog: "/s/vm/serial.log",
        agentSocket: "/s/v,m/agent.sock",
    };

    test('the default "none" leaves argv and hash as they were before agents existed', () => {
        // Computed on the commit before vm.agent was added. Those VMs also predate onReboot: kept (acceptedArgvHashes).
        expect(acceptedArgvHashes(parseVmSpec({}), {})).toContain(
            "f5b657a0ed9268f0346e1b70df42d357d1c936d5f4d8f0456219f06bf1f13f41",
        );
        const vm = { kernel: "/k", memoryMiB: 512, portForwards: [{ host: 8080, guest: 80 }] };
        expect(acceptedArgvHashes(parseVmSpec(vm), vm)).toContain(
            "05e126fa8cb9fb251ad0ed5ce2fb1b5a3ffafb2f25f6d275c97adbe2010a28fd",
        );
        expect(buildQemuArgv(parseVmSpec({ agent: "none" }), TCG, daemon)).toEqual(
            buildQemuArgv(parseVmSpec({}), TCG, daemon),
        );
        expect(buildQemuArgv(parseVmSpec({}), TCG, daemon).join(" ")).not.toContain("virtserialport");
    });

    test("shell and qga get a virtio-serial port on a server socket in the VM's directory, each with its own name", () => {
        for (const [agent, name] of [
            ["shell", "org.pulumi-qemu.shell.0"],
            ["qga", "org.qemu.guest_agent.0"],
        ] as const) {
            const argv = buildQemuArgv(parseVmSpec({ agent }), TCG, daemon);
            expect(valuesOf(argv, "-chardev")).toEqual([
                "socket,id=pq-agent,path=/s/v,,m/agent.sock,server=on,wait=off",
            ]);
            expect(valuesOf(argv, "-device")).toEqual(
                expect.arrayContaining([
                    "virtio-serial-pci,id=pq-vser",
                    `virtserialport,bus=pq-vser.0,chardev=pq-agent,name=${name}`,
                ]),
            );
        }
    });

    test("the agent is part of the hash, the socket path is not", () => {
        const none = specArgvHash(parseVmSpec({}));
        const shell = specArgvHash(parseVmSpec({ agent: "shell" }));
        const qga = specArgvHash(parseVmSpec({ agent: "qga" }));
        expect(new Set([none, shell, qga]).size).toBe(3);
        // A foreground launcher has no private directory: its socket goes to the working directory.
        expect(valuesOf(buildQemuArgv(parseVmSpec({ agent: "shell" }), TCG), "-chardev")).toEqual([
            "socket,id=pq-agent,path=agent.sock,server=on,wait=off",
        ]);
    });

    test("a wrong agent kind is refused naming the field", () => {
        expect(() => parseVmSpec({ agent: "ssh" })).toThrow(/vm\.agent.*"qga", "shell" or "none"/);
    });
});

test("a VM's name written to its config file reads back as written (the debug command finds VMs by it)", () => {
    for (const name of ["web-1", "a,b", "name with spaces", "ünïcode"]) {
        expect(nameFromConfigText(nameConfigText(name))).toBe(name);
    }
    expect(nameFromConfigText("[name]\n")).toBeUndefined();
});
