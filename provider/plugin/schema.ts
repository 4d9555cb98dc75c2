/**
 * The Pulumi package schema our plugin serves, so that Python, Go, .NET and YAML programs can
 * declare the same three resources. It describes the public contract of the inputs; the zod
 * specs in provider/core remain the one place where values are judged.
 */

import { RESOURCES, tokenOf, type ResourceName } from "../resources/registry";

type Prop = Record<string, unknown>;

const str = (description: string): Prop => ({ type: "string", description });
const int = (description: string): Prop => ({ type: "integer", description });
const bool = (description: string): Prop => ({ type: "boolean", description });
const ref = (name: string, description: string): Prop => ({ $ref: `#/types/qemu:index:${name}`, description });
const arrayOf = (name: string, description: string): Prop => ({ type: "array", items: { $ref: `#/types/qemu:index:${name}` }, description });
const any = (description: string): Prop => ({ $ref: "pulumi.json#/Any", description });
const strings = (description: string): Prop => ({ type: "array", items: { type: "string" }, description });

function object(description: string, properties: Record<string, Prop>, required: string[] = []): Prop {
    return { type: "object", description, properties, required };
}

const types = {
    "qemu:index:Disk": object("A disk image attached over virtio.", {
        path: str("Absolute path of the image file on the host (a DiskImage's `path` output)."),
        format: str('Image format: "raw" or "qcow2". Required.'),
        readOnly: bool("Attach read-only; default false."),
        overlay: str("Path of a qcow2 file the launcher creates over `path` when missing and boots instead, so the base stays unchanged; default none (boot `path` itself)."),
        inputHash: str("The DiskImage's inputHash output: a rebuilt image restarts the VM even at the same path; default none (only the path counts)."),
    }, ["path", "format"]),
    "qemu:index:Share": object("A host directory shared over virtio-9p.", {
        source: str("Absolute path of the host directory to share."),
        mountTag: str("9p mount tag the guest mounts by; default Guix's rule: \"TAG\" + base32 of the SHA-1 of the path, 31 bytes at most."),
        readOnly: bool("Share read-only; default false."),
    }, ["source"]),
    "qemu:index:PortForward": object("A user-networking port forward.", {
        host: int("Host port, 1-65535; left out, the provider picks a free one at create and keeps it (see the VM's ports output)."),
        guest: int("Guest port, 1-65535. Required."),
        hostAddress: str("IPv4 host address to bind; default 127.0.0.1 (loopback only). 0.0.0.0 listens on every interface."),
        protocol: str('Transport: "tcp" (default) or "udp".'),
    }, ["guest"]),
    "qemu:index:NetworkAttachment": object("A NIC on a private Network.", {
        network: str("The id of the Network to join (same stateDir as the VM). Required."),
        mac: str("MAC address; default locally administered, derived from the network and the NIC's address."),
        ipv4: str("IPv4 address in the network's subnet; default a stable host number derived from the VM's name."),
        hostname: str("Name in the hosts output; default the VM's name."),
    }, ["network"]),
    "qemu:index:VmSpec": object("A QEMU virtual machine; defaults follow Guix's <virtual-machine> record.", {
        name: str("Guest name shown by QEMU; default none. Needed on networks: default addresses, MACs and hostnames derive from it."),
        qemu: str("QEMU system emulator, a path or a name on PATH; default qemu-system-x86_64."),
        qemuImg: str("qemu-img, a path or a name on PATH, used by launchers that create overlays; default qemu-img."),
        accel: str('Accelerator: "auto" (default: KVM only where a probe boot proves it works, else TCG), "kvm" or "tcg".'),
        memoryMiB: int("Guest memory in MiB (1024 * 1024 bytes); default 256."),
        cpus: int("Virtual CPUs; default 1."),
        graphic: bool("Graphic console instead of the serial console; default false."),
        kernel: str("Path of a kernel to boot directly; default none (boot from the first disk)."),
        initrd: str("Path of the initial RAM disk for direct kernel boot; default none."),
        kernelArguments: strings("Kernel command line words, joined with spaces; default none. Only with `kernel`."),
        disks: arrayOf("Disk", "Disks attached over virtio, in order (the first is /dev/vda); default none."),
        volatile: bool("Discard disk writes when QEMU exits; default false."),
        shares: arrayOf("Share", "Host directories shared over virtio-9p; default none."),
        portForwards: arrayOf("PortForward", "Ports forwarded from the host into the guest over user-mode networking; default none."),
        network: str('User-mode NIC (host access and port forwards): "user" (default) or "none".'),
        networks: arrayOf("NetworkAttachment", "Private networks, one virtio-net NIC each, beside the user-mode NIC; default none."),
        extraArgs: strings("Arguments appended to the QEMU command line, for options the spec has no field for; default none. Options the provider manages and listeners off loopback are refused."),
        agent: str('Command channel into the guest: "none" (default), "shell" (our busybox agent) or "qga" (qemu-guest-agent).'),
        firmware: str('What boots a VM without kernel: "bios" (default, SeaBIOS) or "uefi" (OVMF from the ovmf package, with a variable store of the VM\'s own). Either boots the first disk.'),
        onReboot: str('What a reboot inside the guest does: "restart" (default: the machine resets in the same QEMU, the VM stays the same VM) or "stop" (QEMU exits, the VM is gone).'),
    }),
    "qemu:index:DiskImageSource": object("What an image is made from; `kind` picks the fields that apply.", {
        kind: str('What the image is made from: "blank", "file", "directory", "overlay", "cloudInit" or "url". Required.'),
        size: str('Virtual size: bytes, or with a suffix ("512M", "20G"; powers of 1024), whole 512-byte sectors. Required for blank and directory images; an overlay defaults to its backing image\'s size.'),
        format: str('"raw" or "qcow2" (blank images: required; file images: default detected from the file); "iso" (default) or "vfat" (cloudInit seeds).'),
        path: str("Absolute path of the source file (file) or directory (directory)."),
        fsType: str('Filesystem of a directory image: "ext4" (the default and only choice).'),
        label: str("Filesystem label of a directory image, 16 bytes at most; default none."),
        owners: str('Directory images: "root" (default, every file owned by 0:0) or "preserve" (keep owners and device nodes).'),
        backing: str("Absolute path of the backing image of an overlay. Required for overlays."),
        backingFormat: str('Format of the backing image: "raw" or "qcow2"; default detected by qemu-img.'),
        backingInputHash: str("inputHash of the backing DiskImage, so that rebuilding it replaces the overlay; default none."),
        userData: any("cloudInit: user data, a string or an object rendered as #cloud-config YAML. Required for cloudInit seeds."),
        metaData: any("cloudInit: meta-data object; instance-id defaults to one derived from the seed's content."),
        networkConfig: any("cloudInit: network configuration version 2 (an object); default none."),
        vendorData: any("cloudInit: vendor data, a string or an object; default none."),
        url: str("url: where the image is, an https:, http: or file: URL (.gz, .xz, .zst are decompressed); a user and password in it are never shown. Required for url images."),
        checksum: str('url: "sha256:<hex>" or "sha512:<hex>" of the file as downloaded, the image\'s identity; give this or checksumUrl.'),
        checksumUrl: str("url: a SHA256SUMS/SHA512SUMS file listing the URL's file name; read at create and remembered on the host; give this or checksum."),
        stallSeconds: int("url: seconds without a byte before the download stops (the bytes so far are kept for resume); default 60."),
    }, ["kind"]),
    "qemu:index:Ready": object("When a VM counts as started.", {
        serialPattern: str("Text the serial console must print: a substring, or an RE2 regular expression written /…/flags; default none."),
        tcpPort: int("Forwarded port that must answer with some bytes: the host port, or the guest port of an auto-picked forward; default none."),
        agent: bool("The guest agent channel (vm.agent) must answer; default false."),
        command: str("A shell command that must exit 0 inside the guest, over the agent channel; default none."),
        guestPort: int("A TCP port something must listen on inside the guest (seen over the agent channel); default none."),
        timeoutSeconds: int("Seconds to wait for readiness before stopping the VM and failing; default 120, at most 86400."),
    }),
    "qemu:index:VmReference": object("The VirtualMachine outputs a GuestCommand uses: its agent channel and the identity of the running QEMU.", {
        id: str("The VirtualMachine's id; optional."),
        agent: str('The VM\'s agent kind: "shell" or "qga".'),
        agentSocket: str("Host end of the agent channel (a unix socket path)."),
        qmpSocket: str("QMP control socket (a unix socket path)."),
        serialLog: str("Serial console log file."),
        pid: int("QEMU's process id."),
        processStartTime: str("Start time of the QEMU process (clock ticks since boot, from /proc), to recognise a reused pid."),
        bootId: str("Host boot the process belongs to (/proc/sys/kernel/random/boot_id)."),
        pidfile: str("QEMU's pidfile."),
    }, ["agent", "agentSocket", "qmpSocket", "serialLog", "pid", "processStartTime", "bootId", "pidfile"]),
    "qemu:index:Nic": object("A VM's NIC on a private Network, as attached.", {
        network: str("The Network's id."),
        switchIdentity: str("Which switch process the NIC joined (boot id/pid/start time)."),
        mac: str("The NIC's MAC address."),
        ipv4: str("The guest's IPv4 address on the network."),
        netmask: str("The network's netmask, dotted quad."),
        hostname: str("The guest's name on the network."),
    }, ["network", "switchIdentity", "mac", "ipv4", "netmask", "hostname"]),
    "qemu:index:Hosts": object("A VM's /etc/hosts entries on its private networks.", {
        text: str("/etc/hosts lines, one per address."),
        names: { type: "object", additionalProperties: { type: "string" }, description: "Hostname to IPv4 address." },
    }, ["text", "names"]),
};

/** Each resource's schema by its registry name; the type makes a missing or extra one fail to compile. */
const resourceSchemas: Record<ResourceName, object> = {
    DiskImage: {
        description: "A disk image: blank, imported from a file, built from a directory, a qcow2 overlay, or a cloud-init seed. Its id is its path; `pulumi import` adopts an image pulumi-qemu made by that path.",
        inputProperties: {
            path: str("Absolute path where the image goes; default a file under the state directory's images/ named after the input hash."),
            stateDir: str("State directory for default paths; default $PULUMI_QEMU_STATE_DIR, else $XDG_STATE_HOME/pulumi-qemu, else ~/.local/state/pulumi-qemu."),
            source: ref("DiskImageSource", "What the image is made from. Required; any change replaces the image."),
            mode: str('File mode as octal text, e.g. "0640"; default "0600". No execute bits; a new mode replaces the image.'),
        },
        requiredInputs: ["source"],
        properties: {
            path: str("Absolute path of the image file."),
            format: str('Image format: "raw" or "qcow2".'),
            virtualSizeBytes: { type: "number", description: "Virtual size of the disk the guest sees, in bytes." },
            inputHash: str("Hash of everything the image is made from (file contents included); overlays and VMs key on it."),
            backingPath: str("Backing image of an overlay; absent otherwise."),
            backingInputHash: str("inputHash of the backing image of an overlay; absent otherwise."),
            mode: str('File mode as written, octal text ("0600").'),
            drift: str("What a refresh found changed behind the provider's back (content, mode, file gone); absent when nothing. The next up replaces the image."),
        },
        required: ["path", "format", "virtualSizeBytes", "inputHash"],
    },
    RunScript: {
        description: "A launcher script that execs one QEMU command line. Its id is its path; `pulumi import` adopts a launcher pulumi-qemu wrote by that path.",
        inputProperties: {
            vm: ref("VmSpec", "The virtual machine the launcher starts. Required."),
            path: str("Absolute path where the launcher goes; default under the state directory's launchers/, named after the argv hash."),
            stateDir: str("State directory for default paths; default $PULUMI_QEMU_STATE_DIR, else $XDG_STATE_HOME/pulumi-qemu, else ~/.local/state/pulumi-qemu."),
            mode: str('File mode as octal text, e.g. "0755"; default "0500". No group or other write.'),
        },
        requiredInputs: ["vm"],
        properties: {
            path: str("Absolute path of the launcher script."),
            argv: strings("The QEMU command line the launcher execs, one word per item."),
            argvHash: str("sha256 (hex) of the QEMU command line, leaving out host noise (state paths, resolved accelerator); a change replaces."),
            accel: str('Accelerator written into the launcher on this host: "kvm" or "tcg".'),
            contentHash: str("sha256 of the launcher text as written (hex)."),
            requestedPath: str("The path asked for, when not the default; absent otherwise."),
            mode: str('File mode as written, octal text ("0500").'),
            drift: str("What a refresh found changed behind the provider's back (edited, removed, new mode); absent when nothing. The next up rewrites the launcher."),
            imported: bool("True on a launcher adopted by pulumi import until its first rewrite (its argvHash is not known until then); absent otherwise."),
        },
        required: ["path", "argv", "argvHash", "accel", "contentHash"],
    },
    VirtualMachine: {
        description: "A running QEMU guest controlled over QMP. Its id is the name of its directory under <stateDir>/vms (vm-AbC123); `pulumi import` adopts a running VM pulumi-qemu started by that id (or by the directory's absolute path, for a VM outside the default state directory).",
        inputProperties: {
            vm: ref("VmSpec", "The virtual machine. Required; a change to what QEMU runs replaces the VM."),
            ready: ref("Ready", "When the VM counts as started; default as soon as QEMU runs. Changes update in place."),
            stateDir: str("State directory for the VM's private directory; default $PULUMI_QEMU_STATE_DIR, else $XDG_STATE_HOME/pulumi-qemu, else ~/.local/state/pulumi-qemu."),
            warmStart: { type: "boolean", description: "Snapshot the VM once ready, and start this same VM (argv and disk identities) again by restoring that snapshot instead of booting. Default false; changes update in place." },
        },
        requiredInputs: ["vm"],
        properties: {
            pid: int("QEMU's process id."),
            qmpSocket: str("QMP control socket (a unix socket path, 0600)."),
            serialLog: str("Serial console log file (0600)."),
            launcherPath: str("The launcher script the VM was started from, in its private directory."),
            argvHash: str("sha256 (hex) of the QEMU command line, leaving out host noise (state paths, resolved accelerator); a change replaces."),
            status: str('Run state reported by QMP ("running"), or what a refresh found ("gone").'),
            accel: str('Accelerator in use: "kvm" or "tcg".'),
            accelReason: str("Why that accelerator was chosen (for auto: why KVM was or was not usable)."),
            startedAt: str("When QEMU was started (ISO 8601, UTC)."),
            readySeconds: { type: "number", description: "Seconds from starting QEMU until the ready condition held." },
            vmDir: str("The VM's private state directory (0700): launcher, pidfile, sockets, serial log."),
            pidfile: str("QEMU's pidfile."),
            processStartTime: str("Start time of the QEMU process (clock ticks since boot, from /proc), to recognise a reused pid."),
            bootId: str("Host boot the process belongs to (/proc/sys/kernel/random/boot_id)."),
            nics: arrayOf("Nic", "Each private NIC as attached, in the order of vm.networks; absent without networks."),
            hosts: ref("Hosts", "This VM's /etc/hosts entries; absent without networks. Combine a fleet's with mergeHosts."),
            networkDrift: str("Why a network this VM joined is no longer the one it joined; absent when nothing. The next up replaces the VM."),
            ports: { type: "object", additionalProperties: { type: "integer" }, description: 'Host port of each forward, keyed by guest port ("80", or "53/udp").' },
            endpoints: { type: "object", additionalProperties: { type: "string" }, description: 'ADDRESS:PORT on the host of each forward ("127.0.0.1:40123"), keyed as ports.' },
            portsNote: str("Which auto-picked ports could not be the ones used before; absent when all were."),
            agent: str('The guest agent kind ("shell" or "qga"); absent when vm.agent is "none".'),
            agentSocket: str("Host end of the guest agent's channel (a unix socket)."),
            start: str('With warmStart: "cold" or "restored".'),
            startNote: str("With warmStart: why a warm snapshot present was not used."),
            userNicMac: str("MAC of the user-mode NIC, 52:54:00:12:34:56 on every VM (for a cloud-init networkConfig to match it by); absent when vm.network is \"none\"."),
        },
        required: ["pid", "qmpSocket", "serialLog", "launcherPath", "argvHash", "status", "accel", "startedAt"],
    },
    Network: {
        description: "A private Ethernet segment on this host (a vde_switch only this user can join).",
        inputProperties: {
            name: str("Label of the network's directory; default none (two networks with one name are still two networks)."),
            subnet: str("IPv4 CIDR (\"10.77.1.0/24\"); default a /24 in 10.64.0.0/10 derived from the network's id, moved on when it overlaps a live network."),
            stateDir: str("State directory; VMs that join must use the same. Default $PULUMI_QEMU_STATE_DIR, else $XDG_STATE_HOME/pulumi-qemu, else ~/.local/state/pulumi-qemu."),
        },
        properties: {
            subnet: str("Subnet in use, IPv4 CIDR."),
            netmask: str("Its netmask, dotted quad (\"255.255.255.0\")."),
            networkDir: str("The network's private directory (0700), holding the switch and address leases."),
            switchDir: str("The vde_switch control directory VMs attach to (0700)."),
            pidfile: str("The switch's pidfile."),
            pid: int("The vde_switch process id."),
            processStartTime: str("Start time of the switch process (clock ticks since boot), to recognise a reused pid."),
            bootId: str("Host boot the switch belongs to (/proc/sys/kernel/random/boot_id)."),
            switchIdentity: str("Which switch process this is (boot/pid/start time)."),
        },
        required: ["subnet", "netmask", "networkDir", "switchDir", "switchIdentity"],
    },
    GuestCommand: {
        description: "A command run inside a VM over its agent channel: create, update, delete, and a check at refresh that reports drift.",
        inputProperties: {
            vm: {
                oneOf: [{ type: "string" }, { $ref: "#/types/qemu:index:VmReference" }],
                description: "The VirtualMachine (created with vm.agent set): its id (the name of its directory under <stateDir>/vms), or its outputs. Required; a replaced or restarted VM runs create again.",
            },
            stateDir: str("State directory a vm given by id is looked up in; default as for the other resources ($PULUMI_QEMU_STATE_DIR, else $XDG_STATE_HOME/pulumi-qemu, else ~/.local/state/pulumi-qemu)."),
            create: str("Shell text run in the guest at create, and again after drift. Required."),
            update: str("Run instead of create when the commands, environment or stdin change; default create."),
            delete: str("Run at delete; skipped when the VM is gone. Default none."),
            check: str("Run at refresh: a non-zero exit reports drift, and the next up runs create again. Default none."),
            environment: { type: "object", additionalProperties: { type: "string" }, description: "Environment variables for the commands; default none." },
            stdin: str("Text fed to each command's stdin; default empty."),
            triggers: { type: "array", items: { $ref: "pulumi.json#/Any" }, description: "Arbitrary values; any change replaces the resource. Default none." },
            timeoutSeconds: int("Seconds after which each command is killed in the guest; default 300, at most 86400."),
        },
        requiredInputs: ["vm", "create"],
        properties: {
            stdout: str("What the last command run printed on stdout (secret when any command input is)."),
            stderr: str("What it printed on stderr (secret when any command input is)."),
            exitCode: int("Its exit status: always 0, since a failing command fails the resource."),
            vmIdentity: str("Which run of which VM it ran on (boot id, pid and start time of its QEMU)."),
            drift: str("Set by a refresh whose check failed: its exit status and output; absent otherwise."),
            vmTarget: ref("VmReference", "With vm given by id: the channel and QEMU run the id resolved to at create; absent otherwise."),
        },
        required: ["stdout", "stderr", "exitCode", "vmIdentity"],
    },
};

// Every resource records where it lives; the provider's configuration says where that is.
for (const r of Object.values(resourceSchemas) as Array<{ properties: Record<string, unknown> }>) {
    r.properties.host = str("The ssh:// URL (ssh://user@host:port) of the far host this resource lives on, from the provider's host configuration; absent on this machine. Another host replaces the resource.");
}

/** Provider configuration: `new qemu.Provider("lab-2", { host: "ssh://lab@lab-2:22" })`, or `pulumi config set qemu:host …`. */
const providerConfig = {
    host: str('Where this provider instance\'s resources live: "ssh://user@host:port" of a far host reached with OpenSSH (host keys checked strictly; its `node` runs the lifecycles there). Default: this machine. Changing it replaces every resource of the provider.'),
    identityFile: str("Absolute path of the private key ssh uses for host; default: your ssh agent and ~/.ssh/config."),
    knownHosts: str("Absolute path of a known_hosts file holding host's key; default ~/.ssh/known_hosts. An unknown key is refused, never trusted on first use."),
};

const resources = Object.fromEntries(RESOURCES.map((r) => [tokenOf(r.name), resourceSchemas[r.name]]));

export const RESOURCE_TOKENS = Object.keys(resources);

export function packageSchema(version: string): string {
    return JSON.stringify({
        name: "qemu",
        displayName: "QEMU",
        version,
        description: "Local QEMU virtual machines, disk images and launchers.",
        keywords: ["pulumi", "qemu", "kind/native"],
        license: "Apache-2.0",
        config: { variables: providerConfig },
        provider: { description: "The qemu provider: one instance per host its resources live on.", inputProperties: providerConfig },
        types,
        resources,
        language: { nodejs: { packageName: "pulumi-qemu" } },
    });
}
