import { readFileSync } from "node:fs";
import * as path from "node:path";
import { buildQemuArgv, specArgvHash } from "../../provider/core/qemuArgv";
import { packageSchema } from "../../provider/plugin/schema";
import { parseVmSpec } from "../../provider/core/vmSpec";

/** vm.machine: its argv, the hash of VMs made before it existed, and what microvm cannot do. */

const base = { kernel: "/boot/vmlinuz", kernelArguments: ["console=ttyS0"], portForwards: [{ host: 8080, guest: 80 }] };

test('"pc", QEMU\'s own default, stays implicit: a VM made before the field keeps its argv and hash', () => {
    const before = parseVmSpec(base);
    const pc = parseVmSpec({ ...base, machine: "pc" });
    expect(before.machine).toBe("pc");
    expect(buildQemuArgv(pc, { accel: "tcg" })).not.toContain("-machine");
    expect(specArgvHash(pc)).toBe(specArgvHash(before));
});

test('"q35" and "microvm" each name their machine, and another machine is another hash', () => {
    const q35 = buildQemuArgv(parseVmSpec({ ...base, machine: "q35" }), { accel: "tcg" });
    expect(q35.join(" ")).toContain("-machine q35");
    expect(q35.join(" ")).toContain(
        "-nic user,model=virtio-net-pci,mac=52:54:00:12:34:56,hostfwd=tcp:127.0.0.1:8080-:80",
    );
    const micro = buildQemuArgv(parseVmSpec({ ...base, machine: "microvm", accel: "kvm" }), { accel: "kvm" });
    // microvm plugs no -nic: the user-mode NIC is a netdev and a device on its PCIe bus.
    expect(micro.join(" ")).toContain("-machine microvm,pcie=on");
    expect(micro.join(" ")).toContain(
        "-netdev user,id=pq-user,hostfwd=tcp:127.0.0.1:8080-:80 -device virtio-net-pci,netdev=pq-user,mac=52:54:00:12:34:56",
    );
    expect(micro).not.toContain("-nic");
    const hashes = new Set(["pc", "q35"].map((machine) => specArgvHash(parseVmSpec({ ...base, machine }))));
    expect(hashes.size).toBe(2);
});

test("what microvm cannot do is refused, naming the field and the way out", () => {
    const problems = (input: Record<string, unknown>) => {
        try {
            parseVmSpec(input);
            return "";
        } catch (err) {
            return (err as Error).message;
        }
    };
    expect(problems({ machine: "microvm", accel: "kvm" })).toMatch(
        /vm\.machine: microvm has no firmware to boot a disk: set kernel/,
    );
    expect(problems({ ...base, machine: "microvm" })).toMatch(
        /vm\.machine: microvm needs accel "kvm".*use machine "q35"/,
    );
    expect(problems({ ...base, machine: "microvm", accel: "tcg" })).toMatch(/microvm needs accel "kvm"/);
    expect(problems({ ...base, machine: "microvm", accel: "kvm", graphic: true })).toMatch(
        /vm\.machine: microvm has no display/,
    );
    expect(problems({ ...base, machine: "microvm", accel: "kvm", firmware: "uefi" })).toMatch(
        /vm\.machine: microvm has no flash for UEFI firmware/,
    );
    expect(problems({ ...base, machine: "isapc" })).toMatch(/vm\.machine: machine must be "pc", "q35" or "microvm"/);
    expect(problems({ ...base, machine: "microvm", accel: "kvm" })).toBe("");
});

test("the field reaches the package schema, the SDK types and the reference docs with its enum and default", () => {
    const schema = JSON.parse(packageSchema("0.0.0"));
    expect(schema.types["qemu:index:VmSpec"].properties.machine).toMatchObject({
        $ref: "#/types/qemu:index:Machine",
        default: "pc",
    });
    expect(schema.types["qemu:index:Machine"].enum).toEqual([{ value: "pc" }, { value: "q35" }, { value: "microvm" }]);
    const root = path.join(__dirname, "..", "..");
    expect(readFileSync(path.join(root, "sdk", "generatedTypes.ts"), "utf8")).toMatch(
        /Default: `"pc"`\. \*\/\n    machine\?: "pc" \| "q35" \| "microvm";/,
    );
    expect(readFileSync(path.join(root, "docs", "reference.md"), "utf8")).toMatch(
        /\| `machine` \| "pc" \\\| "q35" \\\| "microvm" \| `"pc"` \| QEMU machine type/,
    );
});
