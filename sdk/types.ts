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
    /** Initial RAM disk for direct kernel boot. */
    initrd?: string;
    /** Kernel command line words, joined with spaces (only with `kernel`). */
    kernelArguments?: string[];
    /** Disks attached over virtio, in order (the first is /dev/vda). */
    disks?: {
        /** Absolute path of the image (a DiskImage's `path`). */
        path: string;
        /** The image's format. */
        format: "raw" | "qcow2";
        /** Attach read-only; default false. */
        readOnly?: boolean;
        /** A qcow2 file the launcher creates over `path` when missing and boots instead. */
        overlay?: string;
        /** The DiskImage's inputHash output, so a rebuilt image restarts the VM even at the same path. */
        inputHash?: string;
    }[];
    /** Throw away what the guest writes to its disks when QEMU exits. Default false. */
    volatile?: boolean;
    /** Host directories shared over virtio-9p; the mount tag defaults to Guix's rule. */
    shares?: {
        /** Absolute path of the host directory. */
        source: string;
        /** 9p mount tag; default Guix's rule ("TAG" + base32 of the SHA-1 of the path, 31 bytes). */
        mountTag?: string;
        /** Share read-only; default false. */
        readOnly?: boolean;
    }[];
    /**
     * User-networking forwards; hostAddress defaults to 127.0.0.1. Without `host`, the provider
     * picks a free port at create and keeps it (the VM's `ports` and `endpoints` outputs).
     */
    portForwards?: {
        /** Host port (1-65535); left out, one is picked at create and kept. */
        host?: number;
        /** Guest port (1-65535). */
        guest: number;
        /** Host address to listen on; default 127.0.0.1. */
        hostAddress?: string;
        /** Default "tcp". */
        protocol?: "tcp" | "udp";
    }[];
    /** The user-mode NIC (host access, port forwards): "user" (default) or "none". */
    network?: "user" | "none";
    /**
     * Private networks (a Network's `id`), one virtio-net NIC each beside the user-mode NIC.
     * Defaults: the address is a stable host number from the VM's name, the MAC is locally
     * administered and derived from the network and address, the hostname is the VM's name.
     */
    networks?: {
        /** The Network's `id` (same stateDir as the VM). */
        network: string;
        /** MAC address; default locally administered, derived from the network and the address. */
        mac?: string;
        /** IPv4 address in the network's subnet; default a stable host number from the VM's name. */
        ipv4?: string;
        /** Name in the `hosts` output; default the VM's name. */
        hostname?: string;
    }[];
    /** Arguments appended to the QEMU command line, for options the spec has no field for (managed options and off-loopback listeners are refused). */
    extraArgs?: string[];
    /**
     * A command channel into the guest (a virtio-serial port; its host end is the `agentSocket`
     * output): "shell" for guests running pulumi-qemu's shell-agent.sh, "qga" for guests with
     * qemu-guest-agent. Default "none".
     */
    agent?: "qga" | "shell" | "none";
    /**
     * What boots a VM without `kernel`: "bios" (default, SeaBIOS) or "uefi" (OVMF from Debian's
     * `ovmf` package, with a variable store of the VM's own). Either boots the first disk.
     */
    firmware?: "bios" | "uefi";
    /**
     * What a reboot inside the guest does: "restart" (default) resets the machine in the same
     * QEMU, so the VM stays the same VM; "stop" ends QEMU (the VM is gone).
     */
    onReboot?: "restart" | "stop";
}

export type DiskImageSource =
    | {
          /** An empty image. */
          kind: "blank";
          /** Virtual size: bytes, or text with a suffix ("512M", "20G"), whole 512-byte sectors. */
          size: number | string;
          /** The image's format. */
          format: "raw" | "qcow2";
      }
    | {
          /** A copy of an existing image file. */
          kind: "file";
          /** Absolute path of the source image. */
          path: string;
          /** Its format; default detected from the file. */
          format?: "raw" | "qcow2";
      }
    | {
          /** A filesystem image built from a host directory. */
          kind: "directory";
          /** Absolute path of the directory. */
          path: string;
          /** Virtual size: bytes, or text with a suffix ("1G"), whole 512-byte sectors. */
          size: number | string;
          /** Filesystem; "ext4", the default and only choice. */
          fsType?: "ext4";
          /** Filesystem label, 16 bytes at most. */
          label?: string;
          /** "root" (default: every file owned by 0:0) or "preserve" (owners and device nodes kept). */
          owners?: "root" | "preserve";
      }
    | {
          /** A qcow2 overlay over another image. */
          kind: "overlay";
          /** Absolute path of the backing image. */
          backing: string;
          /** Format of the backing image; default detected by qemu-img. */
          backingFormat?: "raw" | "qcow2";
          /** Virtual size; default the backing image's. */
          size?: number | string;
          /** The backing DiskImage's inputHash, so rebuilding it replaces the overlay. */
          backingInputHash?: string;
      }
    | CloudInitSource
    | UrlSource;

/** An image downloaded from a URL and verified by its checksum (docs/images-from-urls.md). */
export interface UrlSource {
    /** An image fetched by URL; read-only, a base for overlays. */
    kind: "url";
    /** https:, http: or file: URL; .gz, .xz and .zst are decompressed. A user and password in it are never shown (pass it as a secret). */
    url: string;
    /** "sha256:<hex>" or "sha512:<hex>" of the file as downloaded: the image's identity. Give this or checksumUrl. */
    checksum?: string;
    /** A SHA256SUMS/SHA512SUMS file listing the URL's file name; read at create and remembered on the host. Give this or checksum. */
    checksumUrl?: string;
    /** "raw" or "qcow2"; default detected from the image's first bytes. */
    format?: "raw" | "qcow2";
    /** Seconds without a byte before the download stops (kept for resume); default 60. */
    stallSeconds?: number;
}

/** A cloud-init NoCloud seed (volume `cidata`); objects are rendered as YAML, user data as `#cloud-config`. */
export interface CloudInitSource {
    /** A cloud-init NoCloud seed. */
    kind: "cloudInit";
    /** User data: text (a script or #cloud-config), or an object rendered as #cloud-config YAML. */
    userData: string | Record<string, unknown>;
    /** The seed's meta-data; other keys are passed through. */
    metaData?: {
        /** Default one derived from the seed's content. */
        "instance-id"?: string;
        /** Names the guest. */
        "local-hostname"?: string;
        [key: string]: unknown;
    };
    /** Network configuration version 2. */
    networkConfig?: Record<string, unknown>;
    /** Vendor data, text or an object. */
    vendorData?: string | Record<string, unknown>;
    /** "iso" (default) or "vfat". */
    format?: "iso" | "vfat";
}

/** A far host: its ssh:// URL, or the URL with the key files ssh should use. */
export type HostArgs =
    | string
    | {
          /** "ssh://user@host:port" (port 22 when left out). No password: use a key or your ssh agent. */
          url: string;
          /** Absolute path of the private key; default your ssh agent and ~/.ssh/config. */
          identityFile?: string;
          /** Absolute path of a known_hosts file with the host's key; default ~/.ssh/known_hosts. */
          knownHosts?: string;
      };

export interface DiskImageArgs {
    /**
     * Where this resource lives: a far host's "ssh://user@host:port" (or `{ url, identityFile, knownHosts }`),
     * reached with OpenSSH, host keys checked strictly; its lifecycle runs there with that host's
     * node, qemu-img and QEMU. Default: this machine. Another host replaces the resource.
     */
    host?: pulumi.Input<HostArgs>;
    /** Where the image goes; default a file under the state directory named after its input hash. */
    path?: pulumi.Input<string>;
    /** State directory for default paths; default $PULUMI_QEMU_STATE_DIR, else $XDG_STATE_HOME/pulumi-qemu, else ~/.local/state/pulumi-qemu. */
    stateDir?: pulumi.Input<string>;
    /** What the image is made from; any change replaces the image. */
    source: DeepInput<DiskImageSource>;
    /** The image file's mode, as octal text ("0640"); default "0600". No execute bits; a new mode replaces the image. */
    mode?: pulumi.Input<string>;
}

export interface RunScriptArgs {
    /**
     * Where this resource lives: a far host's "ssh://user@host:port" (or `{ url, identityFile, knownHosts }`),
     * reached with OpenSSH, host keys checked strictly; its lifecycle runs there with that host's
     * node, qemu-img and QEMU. Default: this machine. Another host replaces the resource.
     */
    host?: pulumi.Input<HostArgs>;
    /** The virtual machine the launcher starts. */
    vm: DeepInput<VmSpecArgs>;
    /** Where the launcher goes; default under the state directory, named after the argv hash. */
    path?: pulumi.Input<string>;
    /** State directory for default paths (default as for DiskImage). */
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
    /** Give up, stop the VM and fail after this many seconds; default 120. */
    timeoutSeconds?: number;
}

export interface NetworkArgs {
    /**
     * Where this resource lives: a far host's "ssh://user@host:port" (or `{ url, identityFile, knownHosts }`),
     * reached with OpenSSH, host keys checked strictly; its lifecycle runs there with that host's
     * node, qemu-img and QEMU. Default: this machine. Another host replaces the resource.
     */
    host?: pulumi.Input<HostArgs>;
    /** A label for the network's directory (two networks with one name are still two networks). */
    name?: pulumi.Input<string>;
    /** IPv4 CIDR such as "10.77.1.0/24"; default a /24 in 10.64.0.0/10 derived from the network's id. */
    subnet?: pulumi.Input<string>;
    /** VMs that join must use the same state directory. */
    stateDir?: pulumi.Input<string>;
}

export interface VirtualMachineArgs {
    /**
     * Where this resource lives: a far host's "ssh://user@host:port" (or `{ url, identityFile, knownHosts }`),
     * reached with OpenSSH, host keys checked strictly; its lifecycle runs there with that host's
     * node, qemu-img and QEMU. Default: this machine. Another host replaces the resource.
     */
    host?: pulumi.Input<HostArgs>;
    /** The virtual machine; a change to what QEMU runs replaces it. */
    vm: DeepInput<VmSpecArgs>;
    /** When the VM counts as started; default as soon as QEMU runs. Changes update in place. */
    ready?: DeepInput<ReadyArgs>;
    /** State directory for the VM's private directory (default as for DiskImage). */
    stateDir?: pulumi.Input<string>;
    /** Snapshot the VM once ready, and start this same VM again by restoring it (needs a writable qcow2 disk, no shares, not volatile). */
    warmStart?: pulumi.Input<true>;
}

/** The VirtualMachine outputs a GuestCommand uses (a stack output of the VM has them all). */
export interface VmReferenceArgs {
    /** The VirtualMachine's id. */
    id?: string;
    /** Its agent kind. */
    agent: "qga" | "shell";
    /** Host end of the agent channel (a unix socket). */
    agentSocket: string;
    /** QMP control socket. */
    qmpSocket: string;
    /** Serial console log. */
    serialLog: string;
    /** QEMU's process id. */
    pid: number;
    /** Start time of the QEMU process, to recognise a reused pid. */
    processStartTime: string;
    /** Host boot the process belongs to. */
    bootId: string;
    /** QEMU's pidfile. */
    pidfile: string;
}

export interface GuestCommandArgs {
    /**
     * Where this resource lives: a far host's "ssh://user@host:port" (or `{ url, identityFile, knownHosts }`),
     * reached with OpenSSH, host keys checked strictly; its lifecycle runs there with that host's
     * node, qemu-img and QEMU. Default: this machine. Another host replaces the resource.
     */
    host?: pulumi.Input<HostArgs>;
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
    /** Environment variables for the commands. */
    environment?: pulumi.Input<Record<string, pulumi.Input<string>>>;
    /** Text fed to each command's stdin; default empty. */
    stdin?: pulumi.Input<string>;
    /** Any change replaces the resource (runs `delete`, then `create`). */
    triggers?: pulumi.Input<unknown[]>;
    /** Each command is killed in the guest after this long; default 300. */
    timeoutSeconds?: pulumi.Input<number>;
}
