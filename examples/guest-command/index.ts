import * as pulumi from "@pulumi/pulumi";
import * as qemu from "pulumi-qemu";

const config = new pulumi.Config();
const shared = config.get("sharedDir");

// The guest runs pulumi-qemu's shell agent (the test guest starts it from its /init).
const vm = new qemu.VirtualMachine("vm", {
    vm: {
        memoryMiB: 256,
        network: "none",
        agent: "shell",
        kernel: config.require("kernel"),
        initrd: config.require("initrd"),
        kernelArguments: config.getObject<string[]>("kernelArguments") ?? [],
        accel: (config.get("accel") as "auto" | "tcg" | undefined) ?? "auto",
        shares: shared ? [{ source: shared, mountTag: "pqshare" }] : [],
    },
    ready: { agent: true, timeoutSeconds: 180 },
});

// A step inside the guest: refresh runs `check`, and if the file is gone the next up writes it again.
const motd = new qemu.GuestCommand("motd", {
    vm,
    create: 'printf "%s\\n" "$GREETING" > /etc/motd; cat /etc/motd',
    delete: shared ? "rm -f /etc/motd; echo motd-deleted > /mnt/share/deleted" : "rm -f /etc/motd",
    check: "test -s /etc/motd",
    environment: { GREETING: config.get("greeting") ?? "managed by pulumi" },
});

export const greeting = motd.stdout;
export const machine = vm;
