import * as pulumi from "@pulumi/pulumi";
import { diskImageProvider, runScriptProvider, virtualMachineProvider } from "./providers";
import type { DiskImageArgs, RunScriptArgs, VirtualMachineArgs } from "./types";

/**
 * Output keys are passed to Pulumi as `undefined` inputs: that is how a dynamic resource
 * declares which properties the provider fills in.
 */
function withOutputs(args: object, outputs: readonly string[]): pulumi.Inputs {
    const props: pulumi.Inputs = {};
    for (const key of outputs) props[key] = undefined;
    return { ...props, ...args };
}

const DISK_IMAGE_OUTPUTS = ["path", "format", "virtualSizeBytes", "inputHash", "backingPath", "backingInputHash", "drift"] as const;

/** A base image (blank, imported from a file, built from a directory) or a qcow2 overlay on another image. */
export class DiskImage extends pulumi.dynamic.Resource {
    declare public readonly path: pulumi.Output<string>;
    declare public readonly format: pulumi.Output<"raw" | "qcow2">;
    declare public readonly virtualSizeBytes: pulumi.Output<number>;
    /** Changes exactly when what the image is made from changes; overlays and VMs key on it. */
    declare public readonly inputHash: pulumi.Output<string>;
    declare public readonly backingPath: pulumi.Output<string | undefined>;
    declare public readonly backingInputHash: pulumi.Output<string | undefined>;
    declare public readonly drift: pulumi.Output<string | undefined>;

    constructor(name: string, args: DiskImageArgs, opts?: pulumi.CustomResourceOptions) {
        super(diskImageProvider, name, withOutputs(args, DISK_IMAGE_OUTPUTS), opts, "qemu", "DiskImage");
    }
}

const RUN_SCRIPT_OUTPUTS = ["argv", "argvHash", "accel", "contentHash", "drift"] as const;

/** A launcher script (Guix's run-vm.sh) that execs one QEMU command line. */
export class RunScript extends pulumi.dynamic.Resource {
    declare public readonly path: pulumi.Output<string>;
    declare public readonly argv: pulumi.Output<string[]>;
    declare public readonly argvHash: pulumi.Output<string>;
    /** The accelerator written into the launcher on this host. */
    declare public readonly accel: pulumi.Output<"kvm" | "tcg">;
    declare public readonly contentHash: pulumi.Output<string>;
    declare public readonly drift: pulumi.Output<string | undefined>;

    constructor(name: string, args: RunScriptArgs, opts?: pulumi.CustomResourceOptions) {
        super(runScriptProvider, name, withOutputs({ path: undefined, ...args }, RUN_SCRIPT_OUTPUTS), opts, "qemu", "RunScript");
    }
}

const VIRTUAL_MACHINE_OUTPUTS = ["pid", "qmpSocket", "serialLog", "launcherPath", "argvHash", "status", "accel", "accelReason", "startedAt", "readySeconds", "vmDir", "agent", "agentSocket"] as const;

/** A running QEMU guest, started from its launcher and controlled over QMP. */
export class VirtualMachine extends pulumi.dynamic.Resource {
    declare public readonly pid: pulumi.Output<number>;
    declare public readonly qmpSocket: pulumi.Output<string>;
    declare public readonly serialLog: pulumi.Output<string>;
    declare public readonly launcherPath: pulumi.Output<string>;
    declare public readonly argvHash: pulumi.Output<string>;
    declare public readonly status: pulumi.Output<string>;
    /** The accelerator this host really used ("kvm" or "tcg"). */
    declare public readonly accel: pulumi.Output<"kvm" | "tcg">;
    declare public readonly accelReason: pulumi.Output<string>;
    declare public readonly startedAt: pulumi.Output<string>;
    declare public readonly readySeconds: pulumi.Output<number>;
    /** Launcher, pidfile, QMP socket and serial log live here. */
    declare public readonly vmDir: pulumi.Output<string>;
    /** vm.agent and the host end of its channel (for pulumi-qemu/testing's attach and GuestCommand). */
    declare public readonly agent: pulumi.Output<"qga" | "shell" | undefined>;
    declare public readonly agentSocket: pulumi.Output<string | undefined>;

    constructor(name: string, args: VirtualMachineArgs, opts?: pulumi.CustomResourceOptions) {
        super(virtualMachineProvider, name, withOutputs(args, VIRTUAL_MACHINE_OUTPUTS), opts, "qemu", "VirtualMachine");
    }
}
