import type * as pulumi from "@pulumi/pulumi";

/** Every field of T, at every depth, may be a Pulumi Input (an Output of another resource, a promise…). */
export type DeepInput<T> = T extends string | number | boolean
    ? pulumi.Input<T>
    : T extends ReadonlyArray<infer U>
      ? pulumi.Input<ReadonlyArray<DeepInput<U>>>
      : T extends object
        ? pulumi.Input<{ [K in keyof T]: DeepInput<T[K]> }>
        : pulumi.Input<T>;

/** A virtual machine as users declare it; defaults follow Guix's <virtual-machine> record. */
export interface VmSpecArgs {
    /** Shown by QEMU as the guest's name. */
    name?: string;
    /** QEMU binary; default `qemu-system-x86_64`. */
    qemu?: string;
    /** qemu-img binary used by launchers that create overlays; default `qemu-img`. */
    qemuImg?: string;
    /** `auto` (default) uses KVM only where it really works, else TCG. */
    accel?: "auto" | "kvm" | "tcg";
    /** Default 256. */
    memoryMiB?: number;
    /** Default 1. */
    cpus?: number;
    /** Default false: serial console. */
    graphic?: boolean;
    /** Direct kernel boot. */
    kernel?: string;
    initrd?: string;
    kernelArguments?: string[];
    /** `inputHash`: the DiskImage's inputHash output, so a rebuilt image restarts the VM even at the same path. */
    disks?: { path: string; format: "raw" | "qcow2"; readOnly?: boolean; overlay?: string; inputHash?: string }[];
    /** Throw away what the guest writes to its disks when QEMU exits. Default false. */
    volatile?: boolean;
    /** Host directories shared over virtio-9p; the mount tag defaults to Guix's rule. */
    shares?: { source: string; mountTag?: string; readOnly?: boolean }[];
    /**
     * User-networking forwards; hostAddress defaults to 127.0.0.1. Without `host`, the provider
     * picks a free port at create and keeps it (the VM's `ports` and `endpoints` outputs).
     */
    portForwards?: { host?: number; guest: number; hostAddress?: string; protocol?: "tcp" | "udp" }[];
    network?: "user" | "none";
    /**
     * Private networks (a Network's `id`), one virtio-net NIC each beside the user-mode NIC.
     * Defaults: the address is a stable host number from the VM's name, the MAC is locally
     * administered and derived from the network and address, the hostname is the VM's name.
     */
    networks?: { network: string; mac?: string; ipv4?: string; hostname?: string }[];
    extraArgs?: string[];
    /**
     * A command channel into the guest (a virtio-serial port; its host end is the `agentSocket`
     * output): "shell" for guests running pulumi-qemu's shell-agent.sh, "qga" for guests with
     * qemu-guest-agent. Default "none".
     */
    agent?: "qga" | "shell" | "none";
}

export type DiskImageSource =
    | { kind: "blank"; size: number | string; format: "raw" | "qcow2" }
    | { kind: "file"; path: string; format?: "raw" | "qcow2" }
    | { kind: "directory"; path: string; size: number | string; fsType?: "ext4"; label?: string; owners?: "root" | "preserve" }
    | { kind: "overlay"; backing: string; backingFormat?: "raw" | "qcow2"; size?: number | string; backingInputHash?: string }
    | CloudInitSource;

/** A cloud-init NoCloud seed (volume `cidata`); objects are rendered as YAML, user data as `#cloud-config`. */
export interface CloudInitSource {
    kind: "cloudInit";
    userData: string | Record<string, unknown>;
    /** `instance-id` defaults to one derived from the seed's content; `local-hostname` names the guest. */
    metaData?: { "instance-id"?: string; "local-hostname"?: string; [key: string]: unknown };
    /** Network configuration version 2. */
    networkConfig?: Record<string, unknown>;
    vendorData?: string | Record<string, unknown>;
    /** "iso" (default) or "vfat". */
    format?: "iso" | "vfat";
}

export interface DiskImageArgs {
    /** Where the image goes; default a file under the state directory named after its input hash. */
    path?: pulumi.Input<string>;
    stateDir?: pulumi.Input<string>;
    source: DeepInput<DiskImageSource>;
    /** The image file's mode, as octal text ("0640"); default "0600". No execute bits; a new mode replaces the image. */
    mode?: pulumi.Input<string>;
}

export interface RunScriptArgs {
    vm: DeepInput<VmSpecArgs>;
    /** Where the launcher goes; default under the state directory, named after the argv hash. */
    path?: pulumi.Input<string>;
    stateDir?: pulumi.Input<string>;
    /** The launcher's mode, as octal text ("0755"); default "0500". No group or other write; rewritten in place. */
    mode?: pulumi.Input<string>;
}

export interface ReadyArgs {
    /**
     * Ready once the serial console prints this: plain text is a substring, `/…/flags` a regular
     * expression. Matched with terminal escapes and carriage returns removed.
     */
    serialPattern?: string;
    /** Ready once this forwarded host port answers with some bytes (a bare connect proves nothing under user networking). */
    tcpPort?: number;
    /** Ready once the guest agent channel (vm.agent) answers. */
    agent?: boolean;
    /** Ready once this command exits 0 inside the guest (over the agent channel). */
    command?: string;
    /** Ready once something listens on this TCP port inside the guest (not through a forward). */
    guestPort?: number;
    /** Give up, stop the VM and fail after this long. */
    timeoutSeconds?: number;
}

export interface NetworkArgs {
    /** A label for the network's directory (two networks with one name are still two networks). */
    name?: pulumi.Input<string>;
    /** IPv4 CIDR such as "10.77.1.0/24"; default a /24 in 10.64.0.0/10 derived from the network's id. */
    subnet?: pulumi.Input<string>;
    /** VMs that join must use the same state directory. */
    stateDir?: pulumi.Input<string>;
}

export interface VirtualMachineArgs {
    vm: DeepInput<VmSpecArgs>;
    ready?: DeepInput<ReadyArgs>;
    stateDir?: pulumi.Input<string>;
    /** Snapshot the VM once ready, and start this same VM again by restoring it (needs a writable qcow2 disk, no shares, not volatile). */
    warmStart?: pulumi.Input<true>;
}

/** The VirtualMachine outputs a GuestCommand uses (a stack output of the VM has them all). */
export interface VmReferenceArgs {
    id?: string;
    agent: "qga" | "shell";
    agentSocket: string;
    qmpSocket: string;
    serialLog: string;
    pid: number;
    processStartTime: string;
    bootId: string;
    pidfile: string;
}

export interface GuestCommandArgs {
    /** The VirtualMachine (created with vm.agent set), its outputs, or its id (the name of its directory under `<stateDir>/vms`). */
    vm: import("./resources").VirtualMachine | DeepInput<VmReferenceArgs> | pulumi.Input<string>;
    /** Where a `vm` given by id is looked up (the VirtualMachine's stateDir); default as for the other resources. */
    stateDir?: pulumi.Input<string>;
    /** Shell text run in the guest at create (and again after drift). */
    create: pulumi.Input<string>;
    /** Run instead of `create` when the commands, environment or stdin change. */
    update?: pulumi.Input<string>;
    /** Run at delete, on the same VM run; skipped when that VM is gone. */
    delete?: pulumi.Input<string>;
    /** Run at refresh: a non-zero exit reports drift, and the next `up` runs `create` again. */
    check?: pulumi.Input<string>;
    environment?: pulumi.Input<Record<string, pulumi.Input<string>>>;
    stdin?: pulumi.Input<string>;
    /** Any change replaces the resource (runs `delete`, then `create`). */
    triggers?: pulumi.Input<unknown[]>;
    /** Each command is killed in the guest after this long; default 300. */
    timeoutSeconds?: pulumi.Input<number>;
}
