import { launcherText, renderLauncher } from "../../provider/core/launcher";
import { acceptedArgvHashes, buildQemuArgv, specArgvHash, USER_NIC_MAC } from "../../provider/core/qemuArgv";
import { snapshotProblems } from "../../provider/core/snapshotRules";
import { parseVmSpec } from "../../provider/core/vmSpec";

/**
 * vm.firmware, vm.onReboot and the user-mode NIC's MAC as they reach QEMU's command line and the
 * VM's identity (argvHash). The golden hashes were computed by the provider before these fields
 * existed (commit 20ed9dd): a VM made then must keep its hash, or a no-op `up` would replace it.
 */

const CLOUD = {
    name: "cloud",
    disks: [
        { path: "/img/cloud.qcow2", format: "qcow2" },
        { path: "/img/seed.iso", format: "raw", readOnly: true },
    ],
};
const daemon = {
    pidfile: "/s/vms/vm-1/qemu.pid",
    qmpSocket: "/s/vms/vm-1/qmp.sock",
    serialLog: "/s/vms/vm-1/serial.log",
    uefiVars: "/s/vms/vm-1/uefi-vars.fd",
};

test('firmware "uefi": OVMF code read-only, the VM\'s own variable store, the first disk booted first', () => {
    const argv = buildQemuArgv(parseVmSpec({ ...CLOUD, firmware: "uefi" }), { accel: "tcg" }, daemon);
    const s = argv.join(" ");
    expect(s).toContain("-drive if=pflash,format=raw,unit=0,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd");
    expect(s).toContain("-drive if=pflash,format=raw,unit=1,file=/s/vms/vm-1/uefi-vars.fd");
    expect(s).toContain(
        "-drive file=/img/cloud.qcow2,format=qcow2,node-name=pq-disk0,file.node-name=pq-disk0-file,if=none,id=pq-boot -device virtio-blk-pci,drive=pq-boot,bootindex=0",
    );
    // The others stay plain virtio disks, after it.
    expect(s).toContain("-drive file=/img/seed.iso,format=raw,if=virtio,readonly=on");
    expect(s.indexOf("pq-boot")).toBeLessThan(s.indexOf("seed.iso"));
    expect(argv).not.toContain("-no-reboot");
});

test('firmware "bios" (default) adds nothing: SeaBIOS boots the first virtio disk', () => {
    const argv = buildQemuArgv(parseVmSpec(CLOUD), { accel: "tcg" }, daemon).join(" ");
    expect(argv).not.toContain("pflash");
    expect(argv).not.toContain("bootindex");
    expect(argv).toContain("-drive file=/img/cloud.qcow2,format=qcow2,if=virtio");
});

test("the firmware is part of the identity, where the VM's directory is is not", () => {
    const uefi = parseVmSpec({ ...CLOUD, firmware: "uefi" });
    expect(specArgvHash(uefi)).not.toBe(specArgvHash(parseVmSpec(CLOUD)));
    expect(specArgvHash(uefi)).toBe(specArgvHash(parseVmSpec({ ...CLOUD, firmware: "uefi" })));
    // The foreground launcher keeps the store in its working directory: a relative name, no host path.
    const { text } = launcherText(uefi, "tcg");
    expect(text).toContain("file=uefi-vars.fd");
    expect(text).toContain(
        "[ -e uefi-vars.fd ] || [ -L uefi-vars.fd ] || (umask 077 && cp /usr/share/OVMF/OVMF_VARS_4M.fd uefi-vars.fd)",
    );
});

test("the launcher copies the variable store only when nothing is there, before QEMU", () => {
    const text = renderLauncher(["qemu-system-x86_64"], {
        uefiVars: { template: "/t/VARS.fd", file: "/s/vm 1/uefi-vars.fd" },
    });
    const lines = text.split("\n");
    const copy = lines.findIndex((l) => l.includes("cp /t/VARS.fd"));
    expect(lines[copy]).toBe(
        "[ -e '/s/vm 1/uefi-vars.fd' ] || [ -L '/s/vm 1/uefi-vars.fd' ] || (umask 077 && cp /t/VARS.fd '/s/vm 1/uefi-vars.fd')",
    );
    expect(copy).toBeLessThan(lines.findIndex((l) => l.startsWith("exec ")));
});

test('onReboot: "restart" (default) lets QEMU reset the machine, "stop" is -no-reboot', () => {
    expect(buildQemuArgv(parseVmSpec(CLOUD), { accel: "tcg" })).not.toContain("-no-reboot");
    expect(buildQemuArgv(parseVmSpec({ ...CLOUD, onReboot: "stop" }), { accel: "tcg" })).toContain("-no-reboot");
    expect(() => parseVmSpec({ ...CLOUD, onReboot: "reboot" })).toThrow(
        /vm\.onReboot: onReboot must be "restart" .* or "stop"/,
    );
    expect(() => parseVmSpec({ ...CLOUD, firmware: "efi" })).toThrow(
        /vm\.firmware: firmware must be "bios" .* or "uefi"/,
    );
});

test("a VM made before onReboot existed keeps its hash while its program leaves onReboot out", () => {
    // Computed by 20ed9dd's specArgvHash, which always had -no-reboot and no written-out MAC.
    const golden = [
        [
            {
                name: "web",
                kernel: "/boot/vmlinuz",
                disks: [{ path: "/img/a.qcow2", format: "qcow2", inputHash: "0123456789abcdef" }],
                portForwards: [{ host: 8080, guest: 80 }],
            },
            "08a25de5fedef454855194a830d04e61a5cae0868db10ef2d6bc220d4be850e2",
        ],
        [
            { disks: [{ path: "/img/cloud.qcow2", format: "qcow2" }], network: "none" },
            "19ac8967335e7e4f53430dbc8ad1f610e587acb5c4fc91b8e75bdd107536057b",
        ],
    ] as const;
    for (const [vm, old] of golden) {
        const spec = parseVmSpec(vm);
        expect(specArgvHash(spec)).not.toBe(old); // the new default, restart, is another command line…
        expect(acceptedArgvHashes(spec, vm)).toContain(old); // …but the old VM is kept
        expect(specArgvHash(parseVmSpec({ ...vm, onReboot: "stop" }))).toBe(old);
        // Writing onReboot says which is wanted: "restart" replaces the old VM once, "stop" keeps it.
        expect(
            acceptedArgvHashes(parseVmSpec({ ...vm, onReboot: "restart" }), { ...vm, onReboot: "restart" }),
        ).not.toContain(old);
        expect(acceptedArgvHashes(parseVmSpec({ ...vm, onReboot: "stop" }), { ...vm, onReboot: "stop" })).toEqual([
            old,
        ]);
    }
});

test("the user-mode NIC has a fixed MAC, written out, and left out of the hash", () => {
    const argv = buildQemuArgv(parseVmSpec({ ...CLOUD, portForwards: [{ host: 2222, guest: 22 }] }), { accel: "tcg" });
    expect(argv).toContain(`user,model=virtio-net-pci,mac=${USER_NIC_MAC},hostfwd=tcp:127.0.0.1:2222-:22`);
    expect(USER_NIC_MAC).toBe("52:54:00:12:34:56");
    expect(buildQemuArgv(parseVmSpec({ ...CLOUD, network: "none" }), { accel: "tcg" }).join(" ")).not.toContain(
        USER_NIC_MAC,
    );
});

test('network "none" drops the user-mode NIC, and port forwards with it are refused naming why', () => {
    expect(() => parseVmSpec({ ...CLOUD, network: "none", portForwards: [{ guest: 22 }] })).toThrow(
        /vm\.portForwards: port forwards reach the guest through the user-mode NIC, which network "none" drops: remove portForwards, or leave network "user"/,
    );
});

test("a UEFI VM cannot be snapshotted (its raw variable store holds no snapshot): said at check, naming vm.firmware", () => {
    const spec = parseVmSpec({ ...CLOUD, firmware: "uefi" });
    expect(snapshotProblems(spec).map((p) => p.property)).toEqual(["vm.firmware"]);
});
