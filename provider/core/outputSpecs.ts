import { z } from "zod";
import { vmReferenceSchema } from "./vmReference";

/**
 * What each resource outputs, declared once: the plugin's schema (`properties`), the SDK's output
 * properties and output name lists, the reference docs and the lifecycles' unknown-key checks are
 * all read from these objects. They describe, they do not validate: the lifecycles write the
 * values. A new output is one line here (with its description), appended at the end.
 */

const text = (description: string) => z.string().meta({ description });
const optionalText = (description: string) => z.string().optional().meta({ description });
const integer = (description: string) => z.number().int().meta({ description });

/** Where a resource lives; every resource has these (resources/placement.ts writes them). */
const processIdentity = z
    .object({
        pid: integer("Process id."),
        startTime: text("Field 22 of /proc/PID/stat: clock ticks after boot; a reused pid gets a later one."),
        bootId: text("/proc/sys/kernel/random/boot_id of the boot the process belongs to."),
    })
    .meta({ typeName: "ProcessIdentity" });

export const placementOutputs = z.object({
    host: optionalText(
        "The ssh:// URL (ssh://user@host:port) of the far host this resource lives on, from its `host` input or the provider's configuration; absent on this machine. Another host replaces the resource.",
    ),
    hostAccess: z
        .object({
            identityFile: optionalText("The private key ssh used."),
            knownHosts: optionalText("The known_hosts file holding the host's key."),
        })
        .meta({
            typeName: "HostAccess",
            description:
                "The key files a `host` named, kept so that refresh and delete reach the host the same way; absent on this machine.",
        })
        .optional(),
});

const imageFormat = z.enum(["raw", "qcow2"]).meta({ typeName: "ImageFormat" });
const accel = z.enum(["kvm", "tcg"]).meta({ typeName: "Accelerator" });

export const diskImageOutputs = z.object({
    path: text("Absolute path of the image file."),
    format: imageFormat.meta({ description: 'Image format: "raw" or "qcow2".' }),
    virtualSizeBytes: z.number().meta({ description: "Virtual size of the disk the guest sees.", unit: "bytes" }),
    inputHash: text(
        "Hash of everything the image is made from (file contents included); changes exactly when that does. Overlays and VMs key on it.",
    ),
    backingPath: optionalText("Backing image of an overlay; absent otherwise."),
    backingInputHash: optionalText("inputHash of the backing image of an overlay; absent otherwise."),
    mode: text('File mode as written, octal text ("0600").'),
    drift: optionalText(
        "What a refresh found changed behind the provider's back (content, mode, file gone); absent when nothing. The next up replaces the image.",
    ),
    ...placementOutputs.shape,
});

export const runScriptOutputs = z.object({
    path: text("Absolute path of the launcher script."),
    argv: z.array(z.string()).meta({ description: "The QEMU command line the launcher execs, one word per item." }),
    argvHash: text(
        "sha256 (hex) of the QEMU command line, leaving out host noise (state paths, resolved accelerator); a change replaces.",
    ),
    accel: accel.meta({ description: 'Accelerator written into the launcher on this host: "kvm" or "tcg".' }),
    contentHash: text("sha256 of the launcher text as written (hex)."),
    requestedPath: optionalText("The path asked for, when not the default; absent otherwise."),
    mode: text('File mode as written, octal text ("0500").'),
    drift: optionalText(
        "What a refresh found changed behind the provider's back (edited, removed, new mode); absent when nothing. The next up rewrites the launcher.",
    ),
    imported: z.boolean().optional().meta({
        description:
            "True on a launcher adopted by pulumi import until its first rewrite (its argvHash is not known until then); absent otherwise.",
    }),
    ...placementOutputs.shape,
});

const nicOutput = z
    .object({
        network: text("The Network's id."),
        switchIdentity: text("Which switch process the NIC joined (boot id/pid/start time)."),
        mac: text("The NIC's MAC address."),
        ipv4: text("The guest's IPv4 address on the network."),
        netmask: text("The network's netmask, dotted quad."),
        hostname: text("The guest's name on the network."),
        dhcp: z
            .boolean()
            .optional()
            .meta({ description: "The network runs DHCP/DNS: the guest can ask it for this address." }),
        fqdn: optionalText("hostname.<the network's domain>, answered by the network's DNS (with dhcp)."),
    })
    .meta({ typeName: "Nic", description: "A VM's NIC on a private Network, as attached." });

const hostsOutput = z
    .object({
        text: text("/etc/hosts lines, one per address."),
        names: z.record(z.string(), z.string()).meta({ description: "Hostname to IPv4 address." }),
    })
    .meta({ typeName: "Hosts", description: "A VM's /etc/hosts entries on its private networks." });

export const virtualMachineOutputs = z.object({
    pid: integer("QEMU's process id."),
    qmpSocket: text("QMP control socket (a unix socket path, 0600)."),
    serialLog: text("Serial console log file (0600)."),
    launcherPath: text("The launcher script the VM was started from, in its private directory."),
    argvHash: text(
        "sha256 (hex) of the QEMU command line, leaving out host noise (state paths, resolved accelerator); a change replaces the VM.",
    ),
    status: text('Run state reported by QMP ("running"), or what a refresh found ("gone").'),
    accel: accel.meta({ description: 'The accelerator this host really used: "kvm" or "tcg".' }),
    accelReason: optionalText("Why that accelerator was chosen (for auto: why KVM was or was not usable)."),
    startedAt: text("When QEMU was started (ISO 8601, UTC)."),
    readySeconds: z
        .number()
        .meta({ description: "Time from starting QEMU until the ready condition held.", unit: "seconds" }),
    vmDir: text("The VM's private state directory (0700): launcher, pidfile, sockets, serial log."),
    nics: z
        .array(nicOutput)
        .optional()
        .meta({ description: "Each private NIC as attached, in the order of vm.networks; absent without networks." }),
    hosts: hostsOutput.optional().meta({
        description: "This VM's /etc/hosts entries; absent without networks. Combine a fleet's with mergeHosts.",
    }),
    networkDrift: optionalText(
        "Why a network this VM joined is no longer the one it joined; absent when nothing. The next up replaces the VM.",
    ),
    ports: z
        .record(z.string(), z.number().int())
        .optional()
        .meta({ description: 'Host port of each forward, keyed by guest port ("80", or "53/udp").' }),
    endpoints: z
        .record(z.string(), z.string())
        .optional()
        .meta({ description: 'ADDRESS:PORT on the host of each forward ("127.0.0.1:40123"), keyed as ports.' }),
    portsNote: optionalText("Which auto-picked ports could not be the ones used before; absent when all were."),
    agent: z.enum(["qga", "shell"]).optional().meta({
        typeName: "AgentKind",
        description: 'The guest agent kind ("shell" or "qga"); absent when vm.agent is "none".',
    }),
    agentSocket: optionalText("Host end of the guest agent's channel (a unix socket)."),
    pidfile: text("QEMU's pidfile."),
    processStartTime: text(
        "Start time of the QEMU process (clock ticks since boot, from /proc): with pid and bootId, what tells this run of QEMU from any other process.",
    ),
    bootId: text("Host boot the process belongs to (/proc/sys/kernel/random/boot_id)."),
    start: z.enum(["cold", "restored"]).optional().meta({
        typeName: "StartKind",
        description: 'With warmStart: "cold" (booted, then snapshotted) or "restored" (from the warm snapshot).',
    }),
    startNote: optionalText("With warmStart: why a warm snapshot present was not used."),
    userNicMac: optionalText(
        'MAC of the user-mode NIC, 52:54:00:12:34:56 on every VM (what a cloud-init networkConfig matches it by); absent when vm.network is "none".',
    ),
    ...placementOutputs.shape,
});

export const networkOutputs = z.object({
    subnet: text(
        "Subnet in use, IPv4 CIDR: the one asked for, or a /24 in 10.64.0.0/10 derived from the network's id.",
    ),
    netmask: text('Its netmask, dotted quad ("255.255.255.0").'),
    networkDir: text("The network's private directory (0700), holding the switch and address leases."),
    switchDir: text("The vde_switch control directory VMs attach to (0700; what `-netdev vde,sock=` connects to)."),
    pidfile: optionalText("The switch's pidfile."),
    pid: integer("The vde_switch process id."),
    processStartTime: optionalText(
        "Start time of the switch process (clock ticks since boot), to recognise a reused pid.",
    ),
    bootId: optionalText("Host boot the switch belongs to (/proc/sys/kernel/random/boot_id)."),
    switchIdentity: text("Which switch process this is (boot id/pid/start time)."),
    dhcp: z.boolean().optional().meta({
        description:
            "Whether the network runs DHCP/DNS (false for a network made before the field existed, until the next up).",
    }),
    domain: optionalText("The DNS domain VMs answer under: VM `web` is `web` and `web.<domain>`."),
    dhcpServer: optionalText("The DHCP/DNS server's address on the network (the subnet's last host), with dhcp."),
    dhcpIdentity: z
        .object({
            server: processIdentity.meta({ description: "The dnsmasq process." }),
            plug: processIdentity.meta({ description: "The vde_plug2tap process joining it to the switch." }),
        })
        .optional()
        .meta({
            typeName: "DhcpIdentity",
            description: "Which dnsmasq and vde_plug2tap processes serve the network (pid, start time, boot id each).",
        }),
    dhcpDrift: optionalText(
        "Set by refresh when the DHCP/DNS server died or was replaced; the next up starts it again in place.",
    ),
    ...placementOutputs.shape,
});

export const guestCommandOutputs = z.object({
    stdout: text("What the last command run printed on stdout (secret when any command input is)."),
    stderr: text("What it printed on stderr (secret when any command input is)."),
    exitCode: integer("Its exit status: always 0, since a failing command fails the resource."),
    vmIdentity: text("Which run of which VM it ran on (boot id, pid and start time of its QEMU)."),
    drift: optionalText("Set by a refresh whose check failed: its exit status and output; absent otherwise."),
    vmTarget: vmReferenceSchema.optional().meta({
        description: "With vm given by id: the channel and QEMU run the id resolved to at create; absent otherwise.",
    }),
    ...placementOutputs.shape,
});

/** A resource's output names, for the SDK (declared as undefined inputs) and the unknown-key checks. */
export function outputNames(outputs: z.ZodObject): string[] {
    return Object.keys(outputs.shape);
}
