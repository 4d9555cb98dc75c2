import * as pulumi from "@pulumi/pulumi";
import { diskImageProvider, networkProvider, runScriptProvider, virtualMachineProvider } from "./providers";
import type { DiskImageArgs, NetworkArgs, RunScriptArgs, VirtualMachineArgs } from "./types";

/**
 * Output keys are passed to Pulumi as `undefined` inputs: that is how a dynamic resource
 * declares which properties the provider fills in.
 */
function withOutputs(args: object, outputs: readonly string[]): pulumi.Inputs {
    const props: pulumi.Inputs = {};
    for (const key of outputs) props[key] = undefined;
    return { ...props, ...args };
}

export const DISK_IMAGE_OUTPUTS = ["path", "format", "virtualSizeBytes", "inputHash", "backingPath", "backingInputHash", "mode", "drift"] as const;

/** A base image (blank, imported from a file, built from a directory) or a qcow2 overlay on another image. */
export class DiskImage extends pulumi.dynamic.Resource {
    declare public readonly path: pulumi.Output<string>;
    declare public readonly format: pulumi.Output<"raw" | "qcow2">;
    declare public readonly virtualSizeBytes: pulumi.Output<number>;
    /** Changes exactly when what the image is made from changes; overlays and VMs key on it. */
    declare public readonly inputHash: pulumi.Output<string>;
    declare public readonly backingPath: pulumi.Output<string | undefined>;
    declare public readonly backingInputHash: pulumi.Output<string | undefined>;
    /** The file's mode as written, octal ("0600"). */
    declare public readonly mode: pulumi.Output<string>;
    declare public readonly drift: pulumi.Output<string | undefined>;

    constructor(name: string, args: DiskImageArgs, opts?: pulumi.CustomResourceOptions) {
        super(diskImageProvider, name, withOutputs(args, DISK_IMAGE_OUTPUTS), opts, "qemu", "DiskImage");
    }
}

export const RUN_SCRIPT_OUTPUTS = ["argv", "argvHash", "accel", "contentHash", "mode", "drift"] as const;

/** A launcher script (Guix's run-vm.sh) that execs one QEMU command line. */
export class RunScript extends pulumi.dynamic.Resource {
    declare public readonly path: pulumi.Output<string>;
    declare public readonly argv: pulumi.Output<string[]>;
    declare public readonly argvHash: pulumi.Output<string>;
    /** The accelerator written into the launcher on this host. */
    declare public readonly accel: pulumi.Output<"kvm" | "tcg">;
    declare public readonly contentHash: pulumi.Output<string>;
    /** The file's mode as written, octal ("0600"). */
    declare public readonly mode: pulumi.Output<string>;
    declare public readonly drift: pulumi.Output<string | undefined>;

    constructor(name: string, args: RunScriptArgs, opts?: pulumi.CustomResourceOptions) {
        super(runScriptProvider, name, withOutputs({ path: undefined, ...args }, RUN_SCRIPT_OUTPUTS), opts, "qemu", "RunScript");
    }
}

export const VIRTUAL_MACHINE_OUTPUTS = ["pid", "qmpSocket", "serialLog", "launcherPath", "argvHash", "status", "accel", "accelReason", "startedAt", "readySeconds", "vmDir", "nics", "hosts", "networkDrift", "ports", "endpoints", "portsNote"] as const;

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
    /** Each private NIC as attached: network id, switch identity, MAC, address, netmask, hostname. */
    declare public readonly nics: pulumi.Output<NicOutput[] | undefined>;
    /** This VM's /etc/hosts lines and hostname → address map; combine a fleet's with `mergeHosts`. */
    declare public readonly hosts: pulumi.Output<HostsOutput | undefined>;
    /** Set by a refresh when a network this VM joined died or was recreated; the next up replaces the VM. */
    declare public readonly networkDrift: pulumi.Output<string | undefined>;
    /** Host port of each forward, keyed by guest port ("80", or "53/udp" for UDP). */
    declare public readonly ports: pulumi.Output<Record<string, number> | undefined>;
    /** "127.0.0.1:PORT" of each forward, keyed as `ports`. */
    declare public readonly endpoints: pulumi.Output<Record<string, string> | undefined>;
    declare public readonly portsNote: pulumi.Output<string | undefined>;

    constructor(name: string, args: VirtualMachineArgs, opts?: pulumi.CustomResourceOptions) {
        super(virtualMachineProvider, name, withOutputs(args, VIRTUAL_MACHINE_OUTPUTS), opts, "qemu", "VirtualMachine");
    }
}

export interface NicOutput {
    network: string;
    switchIdentity: string;
    mac: string;
    ipv4: string;
    netmask: string;
    hostname: string;
}

export interface HostsOutput {
    text: string;
    names: Record<string, string>;
}

export const NETWORK_OUTPUTS = ["subnet", "netmask", "networkDir", "switchDir", "pidfile", "pid", "processStartTime", "bootId", "switchIdentity"] as const;

/** A private Ethernet segment on this host: a vde_switch only this user can join. VMs join with `vm.networks: [{ network: net.id }]`. */
export class Network extends pulumi.dynamic.Resource {
    /** The subnet in use: the one asked for, or a /24 in 10.64.0.0/10 derived from the network's id. */
    declare public readonly subnet: pulumi.Output<string>;
    declare public readonly netmask: pulumi.Output<string>;
    declare public readonly networkDir: pulumi.Output<string>;
    /** The switch's control directory (what `-netdev vde,sock=` connects to). */
    declare public readonly switchDir: pulumi.Output<string>;
    declare public readonly pid: pulumi.Output<number>;
    /** Which switch process this is (boot id / pid / start time). */
    declare public readonly switchIdentity: pulumi.Output<string>;

    constructor(name: string, args: NetworkArgs = {}, opts?: pulumi.CustomResourceOptions) {
        super(networkProvider, name, withOutputs(args, NETWORK_OUTPUTS), opts, "qemu", "Network");
    }
}
