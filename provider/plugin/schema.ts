/**
 * The Pulumi package schema our plugin serves, so that Python, Go, .NET and YAML programs can
 * declare the same three resources. It describes the public contract of the inputs; the zod
 * specs in provider/core remain the one place where values are judged.
 */

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
        path: str("Absolute path of the image."),
        format: str('"raw" or "qcow2".'),
        readOnly: bool("Attach read-only."),
        overlay: str("A qcow2 file the launcher creates over `path` when missing and boots instead."),
        inputHash: str("The DiskImage's inputHash: a rebuilt image restarts the VM even at the same path."),
    }, ["path", "format"]),
    "qemu:index:Share": object("A host directory shared over virtio-9p.", {
        source: str("Absolute host path."),
        mountTag: str("9p mount tag; default derived from the path as Guix does."),
        readOnly: bool("Share read-only."),
    }, ["source"]),
    "qemu:index:PortForward": object("A user-networking port forward.", {
        host: int("Host port; left out, the provider picks a free one at create and keeps it (see the VM's ports output)."),
        guest: int("Guest port."),
        hostAddress: str("Host address to bind; default 127.0.0.1."),
        protocol: str('"tcp" (default) or "udp".'),
    }, ["guest"]),
    "qemu:index:NetworkAttachment": object("A NIC on a private Network.", {
        network: str("The Network's id."),
        mac: str("MAC address; default locally administered, derived from the network and the NIC's address."),
        ipv4: str("IPv4 address in the network's subnet; default a stable host number derived from the VM's name."),
        hostname: str("Name in the hosts output; default the VM's name."),
    }, ["network"]),
    "qemu:index:VmSpec": object("A QEMU virtual machine.", {
        name: str("Guest name shown by QEMU."),
        qemu: str("QEMU binary; default qemu-system-x86_64."),
        qemuImg: str("qemu-img binary; default qemu-img."),
        accel: str('"auto" (default), "kvm" or "tcg".'),
        memoryMiB: int("Memory in MiB; default 256."),
        cpus: int("Virtual CPUs; default 1."),
        graphic: bool("Graphic console instead of serial; default false."),
        kernel: str("Kernel for direct boot."),
        initrd: str("Initial RAM disk for direct boot."),
        kernelArguments: strings("Kernel command line words."),
        disks: arrayOf("Disk", "Disks, in order."),
        volatile: bool("Discard disk writes when QEMU exits; default false."),
        shares: arrayOf("Share", "Shared folders."),
        portForwards: arrayOf("PortForward", "Forwarded ports."),
        network: str('"user" (default) or "none".'),
        networks: arrayOf("NetworkAttachment", "Private networks, one virtio-net NIC each, beside the user-mode NIC."),
        extraArgs: strings("Arguments appended to the QEMU command line."),
        agent: str('Command channel into the guest: "none" (default), "shell" (our busybox agent) or "qga" (qemu-guest-agent).'),
    }),
    "qemu:index:DiskImageSource": object("What an image is made from; `kind` picks the fields that apply.", {
        kind: str('"blank", "file", "directory", "overlay" or "cloudInit".'),
        size: str('Size in bytes or with a suffix ("512M", "20G") for blank, directory and overlay images.'),
        format: str('"raw" or "qcow2" (blank and file images); "iso" (default) or "vfat" (cloudInit seeds).'),
        path: str("Source file (file) or directory (directory)."),
        fsType: str('Filesystem of a directory image: "ext4".'),
        label: str("Filesystem label of a directory image."),
        owners: str('Directory images: "root" (default, every file owned by 0:0) or "preserve" (keep owners and device nodes).'),
        backing: str("Backing image of an overlay."),
        backingFormat: str("Format of the backing image."),
        backingInputHash: str("inputHash of the backing DiskImage, so that rebuilding it replaces the overlay."),
        userData: any("cloudInit: user data, a string or an object rendered as #cloud-config YAML."),
        metaData: any("cloudInit: meta-data object; instance-id defaults to one derived from the seed's content."),
        networkConfig: any("cloudInit: network configuration version 2."),
        vendorData: any("cloudInit: vendor data, a string or an object."),
    }, ["kind"]),
    "qemu:index:Ready": object("When a VM counts as started.", {
        serialPattern: str("Text the serial console must print: a substring, or a regular expression written /…/flags."),
        tcpPort: int("Forwarded host port that must answer with some bytes."),
        agent: bool("The guest agent channel (vm.agent) must answer."),
        command: str("A command that must exit 0 inside the guest, over the agent channel."),
        guestPort: int("A TCP port something must listen on inside the guest."),
        timeoutSeconds: int("Give up, stop the VM and fail after this long."),
    }),
    "qemu:index:VmReference": object("The VirtualMachine outputs a GuestCommand uses: its agent channel and the identity of the running QEMU.", {
        id: str("The VirtualMachine's id."),
        agent: str('"shell" or "qga".'),
        agentSocket: str("Host end of the agent channel."),
        qmpSocket: str("QMP control socket."),
        serialLog: str("Serial console log."),
        pid: int("QEMU's process id."),
        processStartTime: str("Start time of the QEMU process."),
        bootId: str("Host boot the process belongs to."),
        pidfile: str("QEMU's pidfile."),
    }, ["agent", "agentSocket", "qmpSocket", "serialLog", "pid", "processStartTime", "bootId", "pidfile"]),
};

const resources = {
    "qemu:index:DiskImage": {
        description: "A disk image: blank, imported from a file, built from a directory, or a qcow2 overlay.",
        inputProperties: {
            path: str("Where the image goes; default under the state directory."),
            stateDir: str("State directory for default paths."),
            source: ref("DiskImageSource", "What the image is made from."),
            mode: str('File mode as octal text, e.g. "0640"; default "0600". No execute bits; a new mode replaces the image.'),
        },
        requiredInputs: ["source"],
        properties: {
            path: str("Image path."),
            format: str("Image format."),
            virtualSizeBytes: { type: "number", description: "Virtual size in bytes." },
            inputHash: str("Hash of everything the image is made from."),
            backingPath: str("Backing image of an overlay."),
            backingInputHash: str("Identity of the backing image."),
            mode: str("File mode as written, octal."),
            drift: str("What changed behind the provider's back, if anything."),
        },
        required: ["path", "format", "virtualSizeBytes", "inputHash"],
    },
    "qemu:index:RunScript": {
        description: "A launcher script that execs one QEMU command line.",
        inputProperties: {
            vm: ref("VmSpec", "The virtual machine."),
            path: str("Where the launcher goes; default under the state directory."),
            stateDir: str("State directory for default paths."),
            mode: str('File mode as octal text, e.g. "0755"; default "0500". No group or other write.'),
        },
        requiredInputs: ["vm"],
        properties: {
            path: str("Launcher path."),
            argv: strings("The QEMU command line."),
            argvHash: str("Hash of the command line, independent of the host."),
            accel: str("Accelerator written into the launcher on this host."),
            contentHash: str("sha256 of the launcher text as written."),
            requestedPath: str("The path asked for, when not the default."),
            mode: str("File mode as written, octal."),
            drift: str("What changed behind the provider's back, if anything."),
        },
        required: ["path", "argv", "argvHash", "accel", "contentHash"],
    },
    "qemu:index:VirtualMachine": {
        description: "A running QEMU guest controlled over QMP.",
        inputProperties: {
            vm: ref("VmSpec", "The virtual machine."),
            ready: ref("Ready", "When the VM counts as started."),
            stateDir: str("State directory."),
            warmStart: { type: "boolean", description: "Snapshot the VM once ready; start this same VM (argv and disk identities) again by restoring the snapshot instead of booting." },
        },
        requiredInputs: ["vm"],
        properties: {
            pid: int("QEMU's process id."),
            qmpSocket: str("QMP control socket."),
            serialLog: str("Serial console log."),
            launcherPath: str("The VM's launcher."),
            argvHash: str("Hash of the command line, independent of the host."),
            status: str("Run state reported by QMP."),
            accel: str("Accelerator in use."),
            accelReason: str("Why that accelerator was chosen."),
            startedAt: str("Start time (ISO 8601)."),
            readySeconds: { type: "number", description: "Seconds from start to ready." },
            vmDir: str("The VM's private state directory."),
            pidfile: str("QEMU's pidfile."),
            processStartTime: str("Start time of the QEMU process, to recognise a reused pid."),
            bootId: str("Host boot the process belongs to."),
            nics: { type: "array", items: { type: "object", additionalProperties: { $ref: "pulumi.json#/Any" } }, description: "Each private NIC: network, switchIdentity, mac, ipv4, netmask, hostname." },
            hosts: { type: "object", additionalProperties: { $ref: "pulumi.json#/Any" }, description: "This VM's /etc/hosts entries: text and names (hostname to address)." },
            networkDrift: str("Why a network this VM joined is no longer the one it joined; the next up replaces the VM."),
            ports: { type: "object", additionalProperties: { type: "integer" }, description: 'Host port of each forward, keyed by guest port ("80", or "53/udp").' },
            endpoints: { type: "object", additionalProperties: { type: "string" }, description: 'ADDRESS:PORT on the host of each forward, keyed as ports.' },
            portsNote: str("Which auto-picked ports could not be the ones used before."),
            agent: str('The guest agent kind, when vm.agent is not "none".'),
            agentSocket: str("Host end of the guest agent's channel (a unix socket)."),
            start: str('With warmStart: "cold" or "restored".'),
            startNote: str("With warmStart: why a warm snapshot present was not used."),
        },
        required: ["pid", "qmpSocket", "serialLog", "launcherPath", "argvHash", "status", "accel", "startedAt"],
    },
    "qemu:index:Network": {
        description: "A private Ethernet segment on this host (a vde_switch only this user can join).",
        inputProperties: {
            name: str("Label of the network's directory."),
            subnet: str("IPv4 CIDR; default a /24 in 10.64.0.0/10 derived from the network's id."),
            stateDir: str("State directory; VMs that join must use the same."),
        },
        properties: {
            subnet: str("Subnet in use."),
            netmask: str("Its netmask."),
            networkDir: str("The network's private directory."),
            switchDir: str("The switch's control directory VMs attach to."),
            pidfile: str("The switch's pidfile."),
            pid: int("The switch's process id."),
            processStartTime: str("Start time of the switch, to recognise a reused pid."),
            bootId: str("Host boot the switch belongs to."),
            switchIdentity: str("Which switch process this is (boot/pid/start time)."),
        },
        required: ["subnet", "netmask", "networkDir", "switchDir", "switchIdentity"],
    },
};

Object.assign(resources, {
    "qemu:index:GuestCommand": {
        description: "A command run inside a VM over its agent channel: create, update, delete, and a check at refresh that reports drift.",
        inputProperties: {
            vm: {
                oneOf: [{ type: "string" }, { $ref: "#/types/qemu:index:VmReference" }],
                description: "The VirtualMachine (created with vm.agent set): its id (the name of its directory under <stateDir>/vms), or its outputs.",
            },
            stateDir: str("State directory a vm given by id is looked up in."),
            create: str("Shell text run in the guest at create, and again after drift."),
            update: str("Run instead of create when the commands, environment or stdin change."),
            delete: str("Run at delete; skipped when the VM is gone."),
            check: str("Run at refresh: a non-zero exit reports drift, and the next up runs create again."),
            environment: { type: "object", additionalProperties: { type: "string" }, description: "Environment variables for the commands." },
            stdin: str("Text fed to each command's stdin."),
            triggers: { type: "array", items: { $ref: "pulumi.json#/Any" }, description: "Any change replaces the resource." },
            timeoutSeconds: int("Each command is killed in the guest after this long; default 300."),
        },
        requiredInputs: ["vm", "create"],
        properties: {
            stdout: str("What the last command run printed on stdout."),
            stderr: str("What it printed on stderr."),
            exitCode: int("Its exit status (0: a failing command fails the resource)."),
            vmIdentity: str("Which run of which VM it ran on."),
            drift: str("Set by a refresh whose check failed."),
            vmTarget: ref("VmReference", "With vm given by id: the channel and QEMU run the id resolved to at create."),
        },
        required: ["stdout", "stderr", "exitCode", "vmIdentity"],
    },
});

export const RESOURCE_TOKENS = Object.keys(resources);

export function packageSchema(version: string): string {
    return JSON.stringify({
        name: "qemu",
        displayName: "QEMU",
        version,
        description: "Local QEMU virtual machines, disk images and launchers.",
        keywords: ["pulumi", "qemu", "kind/native"],
        license: "Apache-2.0",
        types,
        resources,
        language: { nodejs: { packageName: "pulumi-qemu" } },
    });
}
