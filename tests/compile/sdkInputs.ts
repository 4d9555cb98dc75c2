import * as pulumi from "@pulumi/pulumi";
import * as qemu from "../../sdk";

/**
 * Never run, only compiled (by `tsc --noEmit` and by tests/unit/sdkCompile.test.ts): what a
 * program may pass the SDK's resources. Every union-typed input takes an Output of its union (the
 * SDK's own outputs included), and each `@ts-expect-error` line must stay an error — TypeScript
 * fails the build when one of them compiles.
 */

declare const img: qemu.DiskImage;
declare const vmRes: qemu.VirtualMachine;
declare const fmt: pulumi.Output<"raw" | "qcow2">;
declare const flag: pulumi.Output<boolean>;
declare const text: pulumi.Output<string>;
declare const num: pulumi.Output<number>;

export function compiles(): void {
    new qemu.VirtualMachine("b", { vm: { disks: [{ path: img.path, format: img.format }] } });
    new qemu.DiskImage("c", { source: { kind: "blank", size: "1G", format: fmt } });
    new qemu.VirtualMachine("e", { vm: { graphic: pulumi.output(false) } });

    // Every union-typed VM field, given an Output of its union.
    new qemu.VirtualMachine("f", {
        vm: {
            accel: pulumi.output<"auto" | "kvm" | "tcg">("tcg"),
            network: pulumi.output<"user" | "none">("user"),
            agent: pulumi.output<"qga" | "shell" | "none">("shell"),
            machine: pulumi.output<"pc" | "q35" | "microvm">("q35"),
            volatile: flag,
            memoryMiB: num,
            disks: [{ path: img.path, format: fmt, readOnly: flag, inputHash: img.inputHash }],
            portForwards: [{ guest: 80, protocol: pulumi.output<"tcp" | "udp">("tcp") }],
            shares: [{ source: "/srv", readOnly: flag }],
        },
        ready: { agent: pulumi.output<true>(true), timeoutSeconds: num },
        warmStart: pulumi.output<true>(true),
    });
    new qemu.RunScript("g", { vm: pulumi.output({ memoryMiB: 128, graphic: false }) });
    new qemu.DiskImage("h", { source: { kind: "file", path: text, format: fmt } });
    new qemu.DiskImage("i", {
        source: {
            kind: "overlay",
            backing: img.path,
            backingFormat: img.format,
            size: pulumi.output<number | string>("2G"),
        },
    });
    new qemu.DiskImage("j", {
        source: {
            kind: "directory",
            path: "/srv",
            size: 1 << 30,
            owners: pulumi.output<"root" | "preserve">("preserve"),
        },
    });
    new qemu.DiskImage("k", {
        source: { kind: "cloudInit", userData: { packages: ["nginx"] }, format: pulumi.output<"iso" | "vfat">("vfat") },
    });
    new qemu.GuestCommand("l", { vm: vmRes, create: "true" });
    new qemu.GuestCommand("m", { vm: vmRes.id, create: text });
    new qemu.Network("n", { subnet: text });
}

export function refused(): void {
    // @ts-expect-error not a format
    new qemu.VirtualMachine("x1", { vm: { disks: [{ path: "/a", format: "vmdk" }] } });
    // @ts-expect-error an Output of any string is not an Output of the format union
    new qemu.VirtualMachine("x2", { vm: { disks: [{ path: "/a", format: text }] } });
    // @ts-expect-error graphic is a boolean
    new qemu.VirtualMachine("x3", { vm: { graphic: "yes" } });
    // @ts-expect-error memoryMiB is a number
    new qemu.VirtualMachine("x4", { vm: { memoryMiB: "256" } });
    // @ts-expect-error a disk needs its path
    new qemu.VirtualMachine("x5", { vm: { disks: [{ format: "raw" }] } });
    // @ts-expect-error no such VM field
    new qemu.VirtualMachine("x6", { vm: { memory: 256 } });
    // @ts-expect-error a blank image has no path
    new qemu.DiskImage("x7", { source: { kind: "blank", size: "1G", format: "raw", path: "/a" } });
    // @ts-expect-error not a kind
    new qemu.DiskImage("x8", { source: { kind: "iso", size: "1G" } });
    // @ts-expect-error an Output of a boolean is not an Output of the accelerator union
    new qemu.VirtualMachine("x9", { vm: { accel: flag } });
    // @ts-expect-error not a machine type
    new qemu.VirtualMachine("x11", { vm: { machine: "isapc" } });
    // @ts-expect-error create is required
    new qemu.GuestCommand("x10", { vm: vmRes });
}
