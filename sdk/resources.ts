import * as pulumi from "@pulumi/pulumi";
import { diskImageProvider, guestCommandProvider, networkProvider, runScriptProvider, virtualMachineProvider } from "./providers";
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

/** Where a resource lives, as its state records it (placement.ts); every resource has them. */
const PLACEMENT_OUTPUTS = ["host", "hostAccess"] as const;

/** Every resource may live on a far host (its `host` input): these outputs say where. */
abstract class PlacedResource extends pulumi.dynamic.Resource {
    /** The far host's normalised URL ("ssh://user@host:port"); undefined on this machine. */
    declare public readonly host: pulumi.Output<string | undefined>;
    /** The key files a `host` input named, kept so refresh and delete can reach the host. */
    declare public readonly hostAccess: pulumi.Output<{ identityFile?: string; knownHosts?: string } | undefined>;

    protected constructor(provider: pulumi.dynamic.ResourceProvider, name: string, props: object, outputs: readonly string[], opts: pulumi.CustomResourceOptions | undefined, type: string) {
        super(provider, name, withOutputs(props, [...outputs, ...PLACEMENT_OUTPUTS]), opts, "qemu", type);
    }
}

export const DISK_IMAGE_OUTPUTS = ["path", "format", "virtualSizeBytes", "inputHash", "backingPath", "backingInputHash", "mode", "drift"] as const;

/** A base image (blank, imported from a file, built from a directory) or a qcow2 overlay on another image. */
export class DiskImage extends PlacedResource {
    /** Absolute path of the image file. */
    declare public readonly path: pulumi.Output<string>;
    /** The image's format. */
    declare public readonly format: pulumi.Output<"raw" | "qcow2">;
    /** Virtual size of the disk the guest sees, in bytes. */
    declare public readonly virtualSizeBytes: pulumi.Output<number>;
    /** Changes exactly when what the image is made from changes; overlays and VMs key on it. */
    declare public readonly inputHash: pulumi.Output<string>;
    /** Backing image of an overlay. */
    declare public readonly backingPath: pulumi.Output<string | undefined>;
    /** inputHash of an overlay's backing image. */
    declare public readonly backingInputHash: pulumi.Output<string | undefined>;
    /** The file's mode as written, octal ("0600"). */
    declare public readonly mode: pulumi.Output<string>;
    /** What a refresh found changed behind the provider's back; the next up replaces the image. */
    declare public readonly drift: pulumi.Output<string | undefined>;

    constructor(name: string, args: DiskImageArgs, opts?: pulumi.CustomResourceOptions) {
        super(diskImageProvider, name, args, DISK_IMAGE_OUTPUTS, opts, "DiskImage");
    }
}

export const RUN_SCRIPT_OUTPUTS = ["argv", "argvHash", "accel", "contentHash", "mode", "drift"] as const;

/** A launcher script (Guix's run-vm.sh) that execs one QEMU command line. */
export class RunScript extends PlacedResource {
    /** Absolute path of the launcher script. */
    declare public readonly path: pulumi.Output<string>;
    /** The QEMU command line the launcher execs. */
    declare public readonly argv: pulumi.Output<string[]>;
    /** Hash of the command line, leaving out host noise; a change replaces. */
    declare public readonly argvHash: pulumi.Output<string>;
    /** The accelerator written into the launcher on this host. */
    declare public readonly accel: pulumi.Output<"kvm" | "tcg">;
    /** sha256 of the launcher text as written. */
    declare public readonly contentHash: pulumi.Output<string>;
    /** The file's mode as written, octal ("0600"). */
    declare public readonly mode: pulumi.Output<string>;
    /** What a refresh found changed (edited, removed, new mode); the next up rewrites the launcher. */
    declare public readonly drift: pulumi.Output<string | undefined>;

    constructor(name: string, args: RunScriptArgs, opts?: pulumi.CustomResourceOptions) {
        super(runScriptProvider, name, { path: undefined, ...args }, RUN_SCRIPT_OUTPUTS, opts, "RunScript");
    }
}

export const VIRTUAL_MACHINE_OUTPUTS = ["pid", "qmpSocket", "serialLog", "launcherPath", "argvHash", "status", "accel", "accelReason", "startedAt", "readySeconds", "vmDir", "nics", "hosts", "networkDrift", "ports", "endpoints", "portsNote", "agent", "agentSocket", "pidfile", "processStartTime", "bootId", "start", "startNote"] as const;

/** A running QEMU guest, started from its launcher and controlled over QMP. */
export class VirtualMachine extends PlacedResource {
    /** QEMU's process id. */
    declare public readonly pid: pulumi.Output<number>;
    /** QMP control socket (0600). */
    declare public readonly qmpSocket: pulumi.Output<string>;
    /** Serial console log file (0600). */
    declare public readonly serialLog: pulumi.Output<string>;
    /** The launcher the VM was started from. */
    declare public readonly launcherPath: pulumi.Output<string>;
    /** Hash of the command line, leaving out host noise; a change replaces the VM. */
    declare public readonly argvHash: pulumi.Output<string>;
    /** Run state reported by QMP ("running"), or what a refresh found. */
    declare public readonly status: pulumi.Output<string>;
    /** The accelerator this host really used ("kvm" or "tcg"). */
    declare public readonly accel: pulumi.Output<"kvm" | "tcg">;
    /** Why that accelerator was chosen. */
    declare public readonly accelReason: pulumi.Output<string>;
    /** When QEMU was started (ISO 8601, UTC). */
    declare public readonly startedAt: pulumi.Output<string>;
    /** Seconds from starting QEMU until the ready condition held. */
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
    /** Which auto-picked ports could not be the ones used before. */
    declare public readonly portsNote: pulumi.Output<string | undefined>;
    /** vm.agent and the host end of its channel (for pulumi-qemu/testing's attach and GuestCommand). */
    declare public readonly agent: pulumi.Output<"qga" | "shell" | undefined>;
    /** Host end of the agent channel (a unix socket). */
    declare public readonly agentSocket: pulumi.Output<string | undefined>;
    /** QEMU's pidfile. */
    declare public readonly pidfile: pulumi.Output<string>;
    /** With `pid` and `bootId`, what tells this run of QEMU from any other process. */
    declare public readonly processStartTime: pulumi.Output<string>;
    /** Host boot the process belongs to (/proc/sys/kernel/random/boot_id). */
    declare public readonly bootId: pulumi.Output<string>;
    /** With warmStart: "cold" (booted, then snapshotted) or "restored" (from the warm snapshot). */
    declare public readonly start: pulumi.Output<"cold" | "restored" | undefined>;
    /** With warmStart: why a warm snapshot present was not used. */
    declare public readonly startNote: pulumi.Output<string | undefined>;

    constructor(name: string, args: VirtualMachineArgs, opts?: pulumi.CustomResourceOptions) {
        super(virtualMachineProvider, name, args, VIRTUAL_MACHINE_OUTPUTS, opts, "VirtualMachine");
    }
}

export interface NicOutput {
    /** The Network's id. */
    network: string;
    /** Which switch process the NIC joined (boot id/pid/start time). */
    switchIdentity: string;
    /** The NIC's MAC address. */
    mac: string;
    /** The guest's IPv4 address on the network. */
    ipv4: string;
    /** The network's netmask, dotted quad. */
    netmask: string;
    /** The guest's name on the network. */
    hostname: string;
    /** The network runs DHCP/DNS: the guest can ask it for this address. */
    dhcp?: boolean;
    /** hostname.<the network's domain>, answered by the network's DNS (with dhcp). */
    fqdn?: string;
}

export interface HostsOutput {
    /** /etc/hosts lines, one per address. */
    text: string;
    /** Hostname to IPv4 address. */
    names: Record<string, string>;
}

export const NETWORK_OUTPUTS = ["subnet", "netmask", "networkDir", "switchDir", "pidfile", "pid", "processStartTime", "bootId", "switchIdentity", "dhcp", "domain", "dhcpServer", "dhcpIdentity", "dhcpDrift"] as const;

/** A private Ethernet segment on this host: a vde_switch only this user can join. VMs join with `vm.networks: [{ network: net.id }]`. */
export class Network extends PlacedResource {
    /** The subnet in use: the one asked for, or a /24 in 10.64.0.0/10 derived from the network's id. */
    declare public readonly subnet: pulumi.Output<string>;
    /** The subnet's netmask, dotted quad. */
    declare public readonly netmask: pulumi.Output<string>;
    /** The network's private directory (0700). */
    declare public readonly networkDir: pulumi.Output<string>;
    /** The switch's control directory (what `-netdev vde,sock=` connects to). */
    declare public readonly switchDir: pulumi.Output<string>;
    /** The vde_switch process id. */
    declare public readonly pid: pulumi.Output<number>;
    /** Which switch process this is (boot id / pid / start time). */
    declare public readonly switchIdentity: pulumi.Output<string>;
    /** Whether the network runs DHCP/DNS (false for a network made before the field existed, until the next up). */
    declare public readonly dhcp: pulumi.Output<boolean | undefined>;
    /** The DNS domain VMs answer under: VM `web` is `web` and `web.<domain>`. */
    declare public readonly domain: pulumi.Output<string | undefined>;
    /** The DHCP/DNS server's address on the network (the subnet's last host), with dhcp. */
    declare public readonly dhcpServer: pulumi.Output<string | undefined>;
    /** Set by refresh when the DHCP/DNS server died or was replaced; the next up starts it again in place. */
    declare public readonly dhcpDrift: pulumi.Output<string | undefined>;

    constructor(name: string, args: NetworkArgs = {}, opts?: pulumi.CustomResourceOptions) {
        super(networkProvider, name, args, NETWORK_OUTPUTS, opts, "Network");
    }

    /**
     * The address, MAC and names VM `vmName` gets on this network when its NIC pins neither ipv4
     * nor mac: exactly what DHCP hands it and its `nics` report. Known at preview once the network
     * exists, with no dependency on the VM (so it can go into another VM's seed).
     */
    addressOf(vmName: string, hostname?: string): pulumi.Output<PlannedNic> {
        return pulumi.all([this.id, this.subnet, this.domain, this.dhcp]).apply(([id, subnet, domain, dhcp]) => vmAddress({ id, subnet, domain, dhcp: dhcp ?? false }, vmName, hostname));
    }
}
const GUEST_COMMAND_OUTPUTS = ["stdout", "stderr", "exitCode", "vmIdentity", "drift", "vmTarget"] as const;

/**
 * A command run inside a VM over its agent channel (vm.agent "shell" or "qga"): `create` at
 * create, `update` (or `create`) when the commands, environment or stdin change, `delete` at
 * delete, `check` at refresh (a non-zero exit is drift; the next `up` runs `create` again).
 * A replaced or restarted VM runs it again.
 */
export class GuestCommand extends PlacedResource {
    /** What the last command run printed on stdout (secret when a command input is). */
    declare public readonly stdout: pulumi.Output<string>;
    /** What it printed on stderr (secret when a command input is). */
    declare public readonly stderr: pulumi.Output<string>;
    /** Its exit status: 0, since a failing command fails the resource. */
    declare public readonly exitCode: pulumi.Output<number>;
    /** Which run of which VM it ran on. */
    declare public readonly vmIdentity: pulumi.Output<string>;
    /** Set by a refresh whose check failed. */
    declare public readonly drift: pulumi.Output<string | undefined>;

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
