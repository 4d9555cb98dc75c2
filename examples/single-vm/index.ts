import * as pulumi from "@pulumi/pulumi";
import * as qemu from "pulumi-qemu";

const config = new pulumi.Config();
const port = config.getNumber("port") ?? 18022;

const spec = {
    memoryMiB: 256,
    kernel: config.require("kernel"),
    initrd: config.require("initrd"),
    kernelArguments: config.getObject<string[]>("kernelArguments") ?? [],
    portForwards: [{ host: port, guest: 80 }],
};

// A launcher you can run by hand (`sh $(pulumi stack output launcher)`) …
const launcher = new qemu.RunScript("launcher", { vm: { ...spec, portForwards: [{ host: port + 1, guest: 80 }] } });
// … and the same guest kept running by Pulumi.
const vm = new qemu.VirtualMachine("vm", { vm: spec, ready: { tcpPort: port, timeoutSeconds: 180 } });

export const launcherPath = launcher.path;
export const status = vm.status;
export const accel = vm.accel;
export const address = `http://127.0.0.1:${port}/`;
