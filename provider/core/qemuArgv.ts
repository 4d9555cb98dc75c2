import { hashValue } from "./hash";
import { mountTag } from "./mountTag";
import { escapeOptionValue, optionString } from "./qemuOption";
import type { DiskSpec, PortForwardSpec, ShareSpec, VmSpec } from "./vmSpec";

/** What the host decided, passed in so that building the argv never probes anything. */
export interface HostFacts extends Resolved {
    accel: "kvm" | "tcg";
}

/** A NIC on a private network as the provider resolved it: its switch, MAC and address. */
export interface NicPlan {
    /** The switch's control directory (`-netdev vde,sock=`). */
    sock: string;
    mac: string;
    ipv4: string;
    netmask: string;
    hostname: string;
}

/**
 * Values the provider picks at create time (NIC addresses, free host ports). They reach the
 * argv but not the hash: the hash sees what the user asked for ("auto"), so a no-op diff
 * stays a no-op whatever was picked.
 */
export interface Resolved {
    /** One per `vm.networks` entry, in order; required when the spec has networks. */
    nics?: NicPlan[];
    /** The host port picked for each `portForwards` entry without one, by index. */
    hostPorts?: Record<number, number>;
}

/** Where a daemonized QEMU keeps its pid, control socket and console. */
export interface DaemonRuntime {
    pidfile: string;
    qmpSocket: string;
    serialLog: string;
    /** The host end of the guest agent's virtio-serial port, when `agent` is not "none". */
    agentSocket?: string;
}

/**
 * The QEMU command line for `spec`, in a fixed order so that the same spec on the same host
 * facts always gives the same argv (and so the same hash). Without `daemon` it is the
 * foreground command a launcher execs; with it, QEMU detaches and is driven over QMP.
 */
export function buildQemuArgv(spec: VmSpec, host: HostFacts, daemon?: DaemonRuntime): string[] {
    if (spec.networks?.length && host.nics?.length !== spec.networks.length) {
        throw new Error("vm.networks: NICs on private networks need their addresses resolved; only a VirtualMachine resource can run a VM on networks");
    }
    return argvWithAccel(spec, host.accel, daemon, host);
}

/**
 * The hash diffs compare. It is taken over the argv with the accelerator as the user asked
 * for it ("auto" stays "auto"), so previewing the same stack on a host with working KVM and
 * on one without gives the same hash; runtime paths are left out for the same reason. The
 * identities of the disk images are in it too: a disk rebuilt at the same path changes no
 * argument, yet the guest booted from the old one must be replaced.
 */
export function specArgvHash(spec: VmSpec): string {
    return hashValue({
        argv: argvWithAccel(spec, spec.accel, undefined, asAsked(spec)),
        images: spec.disks.map((disk) => disk.inputHash ?? null),
    });
}

/** NICs and ports as the user wrote them: the network's id for its switch, "auto" for what is picked. */
function asAsked(spec: VmSpec): Resolved {
    if (!spec.networks?.length) return {};
    return {
        nics: spec.networks.map((nic) => ({
            sock: `network:${nic.network}`,
            mac: nic.mac ?? "auto",
            ipv4: nic.ipv4 ?? "auto",
            netmask: "auto",
            hostname: nic.hostname ?? spec.name ?? "",
        })),
    };
}

function argvWithAccel(spec: VmSpec, accel: string, daemon: DaemonRuntime | undefined, resolved: Resolved): string[] {
    return [
        spec.qemu,
        "-accel", accel,
        ...nameArgs(spec),
        "-m", String(spec.memoryMiB),
        "-smp", String(spec.cpus),
        // A guest that reboots would otherwise loop; Guix's launchers stop instead.
        "-no-reboot",
        ...rngArgs(),
        ...consoleArgs(spec, daemon),
        ...kernelArgs(spec, resolved.nics ?? []),
        ...spec.shares.flatMap(shareArgs),
        ...spec.disks.flatMap((disk, i) => diskArgs(disk, spec.volatile, daemon ? i : undefined)),
        ...networkArgs(spec, resolved),
        ...agentArgs(spec, daemon),
        ...(daemon ? daemonArgs(daemon) : []),
        ...spec.extraArgs,
    ];
}

function nameArgs(spec: VmSpec): string[] {
    return spec.name ? ["-name", escapeOptionValue(spec.name)] : [];
}

/** Guests block on an empty entropy pool at boot without a hardware RNG. */
function rngArgs(): string[] {
    return ["-object", "rng-random,filename=/dev/urandom,id=pq-rng", "-device", "virtio-rng-pci,rng=pq-rng"];
}

/**
 * A foreground serial VM takes over the terminal (-nographic). A daemon has no terminal:
 * its console goes to a log file and, unless graphic, it has no display at all.
 */
function consoleArgs(spec: VmSpec, daemon?: DaemonRuntime): string[] {
    if (!daemon) return spec.graphic ? [] : ["-nographic"];
    // `-serial file:` takes the rest of the string as the path, unparsed: no comma escaping.
    return [...(spec.graphic ? [] : ["-display", "none"]), "-serial", `file:${daemon.serialLog}`];
}

/**
 * Direct kernel boot. A serial-console guest gets `console=ttyS0` unless the user chose a
 * console, or its boot messages would go to a display nobody sees.
 */
function kernelArgs(spec: VmSpec, nics: readonly NicPlan[]): string[] {
    if (!spec.kernel) return [];
    const args = [...(spec.kernelArguments ?? []), ...nics.flatMap(nicKernelArgs)];
    if (!spec.graphic && !args.some((a) => a.startsWith("console="))) args.unshift("console=ttyS0");
    return [
        "-kernel", spec.kernel,
        ...(spec.initrd ? ["-initrd", spec.initrd] : []),
        ...(args.length ? ["-append", args.join(" ")] : []),
    ];
}

function shareArgs(share: ShareSpec): string[] {
    return [
        "-virtfs",
        optionString([
            "local",
            ["path", share.source],
            // The guest's uid mapping is its own business; the host keeps its own permissions.
            "security_model=none",
            ["mount_tag", share.mountTag ?? mountTag(share.source)],
            ...(share.readOnly ? ["readonly=on"] : []),
        ]),
    ];
}

/**
 * A daemonized VM's disks get block node names (pq-disk<N> for the format layer, pq-disk<N>-file
 * under it): QEMU can only `blockdev-reopen` named nodes, and that is how the test API puts a
 * failing-disk filter under a running disk (sdk/faults.ts). Like the daemon's paths they are
 * left out of the hash (it is made without `daemon`), so VMs started before keep their identity.
 */
function diskArgs(disk: DiskSpec, volatile: boolean, nodeIndex: number | undefined): string[] {
    const file = disk.overlay ?? disk.path;
    const format = disk.overlay ? "qcow2" : disk.format;
    const temporary = volatile && !disk.readOnly;
    return [
        "-drive",
        optionString([
            ["file", file],
            ["format", format],
            "if=virtio",
            ...(disk.readOnly ? ["readonly=on"] : []),
            // Volatile guests write to a temporary layer QEMU throws away on exit.
            ...(temporary ? ["snapshot=on"] : []),
            // A temporary layer would sit above the named node: faults there are not offered.
            ...(nodeIndex !== undefined && !temporary ? [`node-name=pq-disk${nodeIndex}`, `file.node-name=pq-disk${nodeIndex}-file`] : []),
        ]),
    ];
}

/**
 * How a direct-boot guest learns a private NIC's address, in dracut's syntax (which the test
 * guest's init follows too): `ifname=` names the NIC with this MAC, `ip=` configures it
 * statically. The kernel itself ignores both (Debian's has no IP_PNP). Values are validated
 * (address, MAC, hostname), so nothing needs quoting.
 */
function nicKernelArgs(nic: NicPlan, i: number): string[] {
    const dev = `pqnet${i}`;
    return [`ifname=${dev}:${nic.mac}`, `ip=${nic.ipv4}:::${nic.netmask}:${nic.hostname}:${dev}:off`];
}

function networkArgs(spec: VmSpec, resolved: Resolved): string[] {
    const user = spec.network === "none"
        ? ["-nic", "none"]
        : ["-nic", ["user", "model=virtio-net-pci", ...spec.portForwards.map((pf, i) => hostForward(pf, pf.host ?? resolved.hostPorts?.[i]))].join(",")];
    return [...user, ...(resolved.nics ?? []).flatMap(nicArgs)];
}

/** One virtio-net NIC on a VDE switch; the socket path is escaped as every option value. */
function nicArgs(nic: NicPlan, i: number): string[] {
    return [
        "-netdev", optionString(["vde", ["id", `pqnet${i}`], ["sock", nic.sock]]),
        "-device", optionString(["virtio-net-pci", ["netdev", `pqnet${i}`], ["mac", nic.mac]]),
    ];
}

/** Addresses are validated IPv4 and ports integers, so nothing here needs escaping. */
function hostForward(pf: PortForwardSpec, host: number | undefined): string {
    return `hostfwd=${pf.protocol}:${pf.hostAddress}:${host ?? "auto"}-:${pf.guest}`;
}

/** The virtio-serial port name each agent kind listens on. */
export const AGENT_PORT_NAMES = { qga: "org.qemu.guest_agent.0", shell: "org.pulumi-qemu.shell.0" } as const;
/** Where a foreground launcher's agent socket goes (its working directory): a daemon has its own. */
export const FOREGROUND_AGENT_SOCKET = "agent.sock";

/**
 * A virtio-serial controller and one port whose chardev is a unix socket with QEMU as the
 * server, so that any later process can connect (one at a time) and a guest reply written
 * while nobody listens is simply dropped.
 */
function agentArgs(spec: VmSpec, daemon?: DaemonRuntime): string[] {
    if (spec.agent === "none") return [];
    const socket = daemon?.agentSocket ?? FOREGROUND_AGENT_SOCKET;
    return [
        "-device", "virtio-serial-pci,id=pq-vser",
        "-chardev", `socket,id=pq-agent,path=${escapeOptionValue(socket)},server=on,wait=off`,
        "-device", `virtserialport,bus=pq-vser.0,chardev=pq-agent,name=${AGENT_PORT_NAMES[spec.agent]}`,
    ];
}

function daemonArgs(daemon: DaemonRuntime): string[] {
    return [
        "-daemonize",
        "-pidfile", daemon.pidfile,
        // The unix: chardev parses its path as an option value, so commas must be doubled.
        "-qmp", `unix:${escapeOptionValue(daemon.qmpSocket)},server=on,wait=off`,
    ];
}
