/**
 * What a VirtualMachine takes and what its state keeps. Kept apart from the lifecycle so the parts
 * that read state (import, networks, site) need not import the lifecycle that imports them.
 */
import type { PlacementInputs, PlacementOutputs } from "../placement";
import type { NicOutput } from "./networks";

export interface ReadyInputs {
    serialPattern?: string;
    tcpPort?: number;
    /** The guest agent channel (vm.agent) answers. */
    agent?: boolean;
    /** A command that must exit 0 inside the guest (over the agent channel). */
    command?: string;
    /** A TCP port something listens on inside the guest (read from its /proc/net/tcp*). */
    guestPort?: number;
    timeoutSeconds?: number;
}

export interface VirtualMachineInputs extends PlacementInputs {
    vm: unknown;
    ready?: ReadyInputs;
    stateDir?: string;
    /** Snapshot the VM once ready; start that same VM again by restoring it (see README "Snapshots"). */
    warmStart?: boolean;
}

export interface VirtualMachineOutputs extends PlacementOutputs {
    vm: unknown;
    ready?: ReadyInputs;
    stateDir?: string;
    warmStart?: boolean;
    /** With warmStart: whether this start booted the guest or restored its warm snapshot. */
    start?: "cold" | "restored";
    /** With warmStart: why a warm snapshot present was not used (a warning). */
    startNote?: string;
    /** The VM's private directory: launcher, pidfile, QMP socket and serial log live here. */
    vmDir: string;
    pid: number;
    pidfile: string;
    qmpSocket: string;
    serialLog: string;
    launcherPath: string;
    argvHash: string;
    status: string;
    accel: "kvm" | "tcg";
    accelReason: string;
    startedAt: string;
    readySeconds: number;
    /** With `pid`, what tells our QEMU from a later process that got the same pid. */
    processStartTime: string;
    bootId: string;
    /** Each private NIC as attached (present when vm.networks is). */
    nics?: NicOutput[];
    /** This VM's /etc/hosts entries (present when vm.networks is). */
    hosts?: { text: string; names: Record<string, string> };
    /** Set by read when a network the VM joined died or was recreated; diff then replaces the VM. */
    networkDrift?: string;
    /** Host port of each forward by guest port ("80", "53/udp"), and "ADDRESS:PORT" of each (present with portForwards). */
    ports?: Record<string, number>;
    endpoints?: Record<string, string>;
    /** Which remembered auto ports were taken and replaced. */
    portsNote?: string;
    /** The guest agent kind (vm.agent) and the host end of its channel, when not "none". */
    agent?: "qga" | "shell";
    agentSocket?: string;
    /** The user-mode NIC's MAC (USER_NIC_MAC), when vm.network is "user": what a cloud-init networkConfig matches it by. */
    userNicMac?: string;
}
