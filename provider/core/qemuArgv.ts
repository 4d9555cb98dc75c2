import { firmwareArgs, UEFI_VARS_FILE } from "./firmware";
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
    /** The network runs DHCP: a direct-boot guest is told to ask it (`ip=DEV:dhcp`) rather than given the address. */
    dhcp?: boolean;
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
    /** The VM's copy of OVMF's variable store, when `firmware` is "uefi". */
    uefiVars?: string;
    /**
     * An owner-only QEMU config file holding the VM's name (nameConfigText), read with
     * -readconfig instead of -name: every local user can read a process's command line.
     */
    nameConfig?: string;
}

/**
 * The user-mode NIC's MAC address, the same on every VM (each VM's user-mode network is its own
 * segment). It is QEMU's default for the first NIC without one, which is what every VM made
 * before it was written out had: see userNicArgs for why it stays out of the hash.
 */
export const USER_NIC_MAC = "52:54:00:12:34:56";

/**
 * The QEMU command line for `spec`, in a fixed order so that the same spec on the same host
 * facts always gives the same argv (and so the same hash). Without `daemon` it is the
 * foreground command a launcher execs; with it, QEMU detaches and is driven over QMP.
 */
export function buildQemuArgv(spec: VmSpec, host: HostFacts, daemon?: DaemonRuntime): string[] {
    if (spec.networks?.length && host.nics?.length !== spec.networks.length) {
        throw new Error(
            "vm.networks: NICs on private networks need their addresses resolved; only a VirtualMachine resource can run a VM on networks",
        );
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
        argv: argvWithAccel(spec, spec.accel, undefined, asAsked(spec), true),
        images: spec.disks.map((disk) => disk.inputHash ?? null),
    });
}

/**
 * The hashes a VM made from `spec` may carry and still be this VM. Before `onReboot` existed
 * every VM ran with `-no-reboot`: such a VM, whose program still leaves `onReboot` out (`vm` is
 * the user's input, before defaults), keeps its old hash — a no-op `up` must not replace every
 * VM of a stack because the provider was upgraded. It goes on stopping at a guest reboot until
 * it is replaced for another reason; writing `onReboot` in the program replaces it now.
 */
export function acceptedArgvHashes(spec: VmSpec, vm: unknown): string[] {
    const now = specArgvHash(spec);
    const asked =
        vm !== null &&
        typeof vm === "object" &&
        "onReboot" in vm &&
        (vm as { onReboot?: unknown }).onReboot !== undefined;
    return asked || spec.onReboot !== "restart" ? [now] : [now, specArgvHash({ ...spec, onReboot: "stop" })];
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

/** `forHash`: the argv as hashed, which leaves out what every VM has whether written or not (USER_NIC_MAC). */
function argvWithAccel(
    spec: VmSpec,
    accel: string,
    daemon: DaemonRuntime | undefined,
    resolved: Resolved,
    forHash = false,
): string[] {
    return [
        spec.qemu,
        "-accel",
        accel,
        ...nameArgs(spec, daemon),
        "-m",
        String(spec.memoryMiB),
        "-smp",
        String(spec.cpus),
        ...machineArgs(spec),
        // "stop": a guest reboot ends QEMU (Guix's launchers' choice); "restart" is QEMU's own reset.
        ...(spec.onReboot === "stop" ? ["-no-reboot"] : []),
        // Relative in the hashed argv: where the VM's directory is, is host detail.
        ...firmwareArgs(spec.firmware, daemon?.uefiVars ?? UEFI_VARS_FILE),
        ...rngArgs(),
        ...consoleArgs(spec, daemon),
        ...kernelArgs(spec, resolved.nics ?? []),
        ...spec.shares.flatMap(shareArgs),
        ...spec.disks.flatMap((disk, i) =>
            diskArgs(disk, spec.volatile, i === 0 && spec.firmware === "uefi", daemon ? i : undefined),
        ),
        ...networkArgs(spec, resolved, forHash),
        ...agentArgs(spec, daemon),
        ...(daemon ? daemonArgs(daemon) : []),
        ...spec.extraArgs,
    ];
}

/** "pc" is QEMU's own default and stays implicit, so VMs made before the field keep their argv and hash. */
function machineArgs(spec: VmSpec): string[] {
    if (spec.machine === "pc") return [];
    // microvm has no PCI bus unless asked; with one (PCIe), the virtio-pci devices below work as on q35.
    return ["-machine", spec.machine === "microvm" ? "microvm,pcie=on" : spec.machine];
}

/**
 * A daemon's name goes through its config file, out of `ps`; the hash (and a foreground
 * launcher, which writes no files) keeps `-name`, so the hash is what it always was.
 */
function nameArgs(spec: VmSpec, daemon?: DaemonRuntime): string[] {
    if (!spec.name) return [];
    if (daemon?.nameConfig && nameFitsConfig(spec.name)) return ["-readconfig", daemon.nameConfig];
    return ["-name", escapeOptionValue(spec.name)];
}

/** QEMU's config parser reads a value up to the next double quote: a name holding one cannot go in a file. */
export function nameFitsConfig(name: string): boolean {
    return !name.includes('"');
}

/** The config file that names the guest as `-name guest=NAME` would (QEMU's [name] group). */
export function nameConfigText(name: string): string {
    return `# Written by pulumi-qemu: the VM's name, kept off QEMU's command line.\n[name]\n  guest = "${name}"\n`;
}

/** The name nameConfigText wrote, read back (the debug command lists VMs by name); undefined if it holds none. */
export function nameFromConfigText(text: string): string | undefined {
    return /^\s*guest = "([^"]*)"\s*$/m.exec(text)?.[1];
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
        "-kernel",
        spec.kernel,
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
/**
 * One virtio disk. `bootFirst` (the first disk under OVMF) names it as the device to boot:
 * OVMF otherwise tries every bootable device in PCI order, network boot on the NICs included.
 * `-drive` cannot carry a boot index, so that disk is a `-drive if=none` and its own device.
 *
 * A daemonized VM's disks get block node names (pq-disk<N> for the format layer, pq-disk<N>-file
 * under it): QEMU can only `blockdev-reopen` named nodes, and that is how the test API puts a
 * failing-disk filter under a running disk (sdk/faults.ts). Like the daemon's paths they are
 * left out of the hash (it is made without `daemon`), so VMs started before keep their identity.
 */
function diskArgs(disk: DiskSpec, volatile: boolean, bootFirst: boolean, nodeIndex: number | undefined): string[] {
    const file = disk.overlay ?? disk.path;
    const format = disk.overlay ? "qcow2" : disk.format;
    const temporary = volatile && !disk.readOnly;
    const drive = [
        ["file", file] as [string, string],
        ["format", format] as [string, string],
        ...(disk.readOnly ? ["readonly=on"] : []),
        // Volatile guests write to a temporary layer QEMU throws away on exit.
        ...(temporary ? ["snapshot=on"] : []),
        // A temporary layer would sit above the named node: faults there are not offered.
        ...(nodeIndex !== undefined && !temporary
            ? [`node-name=pq-disk${nodeIndex}`, `file.node-name=pq-disk${nodeIndex}-file`]
            : []),
    ];
    // The drive's id shares QEMU's namespace with node names: pq-boot, never a pq-diskN.
    if (bootFirst)
        return [
            "-drive",
            optionString([...drive, "if=none", "id=pq-boot"]),
            "-device",
            "virtio-blk-pci,drive=pq-boot,bootindex=0",
        ];
    return ["-drive", optionString([drive[0], drive[1], "if=virtio", ...drive.slice(2)])];
}

/**
 * How a direct-boot guest learns a private NIC's address, in dracut's syntax (which the test
 * guest's init follows too): `ifname=` names the NIC with this MAC, `ip=` configures it
 * statically, or on a DHCP network `ip=DEV:dhcp` asks the network's server (which hands out the
 * same address). The kernel itself ignores both (Debian's has no IP_PNP). Values are validated
 * (address, MAC, hostname), so nothing needs quoting.
 */
function nicKernelArgs(nic: NicPlan, i: number): string[] {
    const dev = `pqnet${i}`;
    return [
        `ifname=${dev}:${nic.mac}`,
        nic.dhcp ? `ip=${dev}:dhcp` : `ip=${nic.ipv4}:::${nic.netmask}:${nic.hostname}:${dev}:off`,
    ];
}

function networkArgs(spec: VmSpec, resolved: Resolved, forHash: boolean): string[] {
    const user = spec.network === "none" ? ["-nic", "none"] : userNicArgs(spec, resolved, forHash);
    return [...user, ...(resolved.nics ?? []).flatMap(nicArgs)];
}

/**
 * The user-mode NIC with its fixed MAC written out, so no NIC added in extraArgs can take it.
 * The hash leaves the MAC out: it is the address QEMU gave this NIC before it was written, so
 * VMs made then have it too and keep their hash.
 */
function userNicArgs(spec: VmSpec, resolved: Resolved, forHash: boolean): string[] {
    const forwards = spec.portForwards.map((pf, i) => hostForward(pf, pf.host ?? resolved.hostPorts?.[i]));
    const mac = forHash ? [] : [`mac=${USER_NIC_MAC}`];
    // microvm plugs no NIC for -nic: the user-mode NIC is a netdev and a device on its PCIe bus.
    if (spec.machine === "microvm") {
        return [
            "-netdev",
            ["user", "id=pq-user", ...forwards].join(","),
            "-device",
            ["virtio-net-pci", "netdev=pq-user", ...mac].join(","),
        ];
    }
    return ["-nic", ["user", "model=virtio-net-pci", ...mac, ...forwards].join(",")];
}

/** One virtio-net NIC on a VDE switch; the socket path is escaped as every option value. */
function nicArgs(nic: NicPlan, i: number): string[] {
    return [
        "-netdev",
        optionString(["vde", ["id", `pqnet${i}`], ["sock", nic.sock]]),
        "-device",
        optionString(["virtio-net-pci", ["netdev", `pqnet${i}`], ["mac", nic.mac]]),
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
        "-device",
        "virtio-serial-pci,id=pq-vser",
        "-chardev",
        `socket,id=pq-agent,path=${escapeOptionValue(socket)},server=on,wait=off`,
        "-device",
        `virtserialport,bus=pq-vser.0,chardev=pq-agent,name=${AGENT_PORT_NAMES[spec.agent]}`,
    ];
}

function daemonArgs(daemon: DaemonRuntime): string[] {
    return [
        "-daemonize",
        "-pidfile",
        daemon.pidfile,
        // The unix: chardev parses its path as an option value, so commas must be doubled.
        "-qmp",
        `unix:${escapeOptionValue(daemon.qmpSocket)},server=on,wait=off`,
    ];
}
