import * as pulumi from "@pulumi/pulumi";
import { parseTimeout } from "../provider/host/callDeadline";
import { hostAbove } from "./host";
import {
    diskImageProvider,
    guestCommandProvider,
    networkProvider,
    runScriptProvider,
    TIMEOUTS_KEY,
    virtualMachineProvider,
} from "./providers";
import {
    diskImageOutputs,
    guestCommandOutputs,
    networkOutputs,
    outputNames,
    runScriptOutputs,
    virtualMachineOutputs,
} from "../provider/core/outputSpecs";
import type {
    DiskImageOutputProperties,
    GuestCommandOutputProperties,
    NetworkOutputProperties,
    RunScriptOutputProperties,
    VirtualMachineOutputProperties,
} from "./generatedTypes";
import type { DiskImageArgs, GuestCommandArgs, NetworkArgs, RunScriptArgs, VirtualMachineArgs } from "./types";
import { vmAddress, type PlannedNic } from "../provider/core/dhcp";

/**
 * Output keys are passed to Pulumi as `undefined` inputs: that is how a dynamic resource
 * declares which properties the provider fills in.
 */
function withOutputs(args: object, outputs: readonly string[]): pulumi.Inputs {
    const props: pulumi.Inputs = {};
    for (const key of outputs) props[key] = undefined;
    return { ...props, ...args };
}

/**
 * What the resource options add to a dynamic resource's inputs, since its provider sees nothing
 * else: the host of a `Host` above it (its own `host` input wins), and its customTimeouts, in
 * seconds under TIMEOUTS_KEY, which the shim takes off again and runs the call under
 * (sdk/providers.ts, provider/host/callDeadline.ts).
 */
function placedProps(props: object, opts: pulumi.CustomResourceOptions | undefined): object {
    const own = (props as { host?: unknown }).host;
    const above = own === undefined ? hostAbove(opts) : undefined;
    const timeouts = timeoutSeconds(opts?.customTimeouts);
    return { ...props, ...(above ? { host: above } : {}), ...(timeouts ? { [TIMEOUTS_KEY]: timeouts } : {}) };
}

function timeoutSeconds(t: pulumi.CustomTimeouts | undefined): Record<string, number> | undefined {
    if (!t) return undefined;
    const out: Record<string, number> = {};
    for (const op of ["create", "update", "delete"] as const) {
        const s = parseTimeout(t[op], `customTimeouts.${op}`);
        if (s !== undefined) out[op] = s;
    }
    return Object.keys(out).length ? out : undefined;
}

/**
 * Every resource may live on a far host (its `host` input); its outputs (`host` and `hostAccess`
 * among them) are declared in provider/core/outputSpecs.ts, and typed on each class by the
 * interface of the same name (generatedTypes.ts).
 */
abstract class PlacedResource extends pulumi.dynamic.Resource {
    protected constructor(
        provider: pulumi.dynamic.ResourceProvider,
        name: string,
        props: object,
        outputs: readonly string[],
        opts: pulumi.CustomResourceOptions | undefined,
        type: string,
    ) {
        super(provider, name, withOutputs(placedProps(props, opts), outputs), opts, "qemu", type);
    }
}

export const DISK_IMAGE_OUTPUTS = outputNames(diskImageOutputs);

export interface DiskImage extends DiskImageOutputProperties {}

/** A base image (blank, imported from a file, built from a directory) or a qcow2 overlay on another image. */
export class DiskImage extends PlacedResource {
    constructor(name: string, args: DiskImageArgs, opts?: pulumi.CustomResourceOptions) {
        super(diskImageProvider, name, args, DISK_IMAGE_OUTPUTS, opts, "DiskImage");
    }
}

export const RUN_SCRIPT_OUTPUTS = outputNames(runScriptOutputs);

export interface RunScript extends RunScriptOutputProperties {}

/** A launcher script (Guix's run-vm.sh) that execs one QEMU command line. */
export class RunScript extends PlacedResource {
    constructor(name: string, args: RunScriptArgs, opts?: pulumi.CustomResourceOptions) {
        super(runScriptProvider, name, args, RUN_SCRIPT_OUTPUTS, opts, "RunScript");
    }
}

export const VIRTUAL_MACHINE_OUTPUTS = outputNames(virtualMachineOutputs);

export interface VirtualMachine extends VirtualMachineOutputProperties {}

/** A running QEMU guest, started from its launcher and controlled over QMP. */
export class VirtualMachine extends PlacedResource {
    constructor(name: string, args: VirtualMachineArgs, opts?: pulumi.CustomResourceOptions) {
        super(virtualMachineProvider, name, args, VIRTUAL_MACHINE_OUTPUTS, opts, "VirtualMachine");
    }
}

export const NETWORK_OUTPUTS = outputNames(networkOutputs);

export interface Network extends NetworkOutputProperties {}

/** A private Ethernet segment on this host: a vde_switch only this user can join. VMs join with `vm.networks: [{ network: net.id }]`. */
export class Network extends PlacedResource {
    constructor(name: string, args: NetworkArgs = {}, opts?: pulumi.CustomResourceOptions) {
        super(networkProvider, name, args, NETWORK_OUTPUTS, opts, "Network");
    }

    /**
     * The address, MAC and names VM `vmName` gets on this network when its NIC pins neither ipv4
     * nor mac: exactly what DHCP hands it and its `nics` report. Known at preview once the network
     * exists, with no dependency on the VM (so it can go into another VM's seed).
     */
    addressOf(vmName: string, hostname?: string): pulumi.Output<PlannedNic> {
        return pulumi
            .all([this.id, this.subnet, this.domain, this.dhcp])
            .apply(([id, subnet, domain, dhcp]) =>
                vmAddress({ id, subnet, domain, dhcp: dhcp ?? false }, vmName, hostname),
            );
    }
}
const GUEST_COMMAND_OUTPUTS = outputNames(guestCommandOutputs);

export interface GuestCommand extends GuestCommandOutputProperties {}

/**
 * A command run inside a VM over its agent channel (vm.agent "shell" or "qga"): `create` at
 * create, `update` (or `create`) when the commands, environment or stdin change, `delete` at
 * delete, `check` at refresh (a non-zero exit is drift; the next `up` runs `create` again).
 * A replaced or restarted VM runs it again.
 */
export class GuestCommand extends PlacedResource {
    constructor(name: string, args: GuestCommandArgs, opts?: pulumi.CustomResourceOptions) {
        const vm = args.vm instanceof VirtualMachine ? vmReference(args.vm) : args.vm;
        super(guestCommandProvider, name, { ...args, vm }, GUEST_COMMAND_OUTPUTS, opts, "GuestCommand");
    }
}

/** The VirtualMachine outputs a GuestCommand needs: its channel, and who the running QEMU is. */
function vmReference(vm: VirtualMachine): pulumi.Inputs {
    return {
        id: vm.id,
        agent: vm.agent,
        agentSocket: vm.agentSocket,
        qmpSocket: vm.qmpSocket,
        serialLog: vm.serialLog,
        pid: vm.pid,
        processStartTime: vm.processStartTime,
        bootId: vm.bootId,
        pidfile: vm.pidfile,
    };
}
