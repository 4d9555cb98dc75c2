import { z } from "zod";
import { absolutePath, parseOrThrow, plainText, port } from "./validation";
import { MAX_MOUNT_TAG_BYTES, mountTag } from "./mountTag";
import { extraArgsProblems } from "./extraArgs";
import { HOSTNAME_RE, macProblem } from "./network";

/**
 * The virtual machine a user declares, modelled on Guix's <virtual-machine> record: every
 * default lives here, so the argv builder and the hashes only ever see a complete spec.
 */

const diskSchema = z
    .object({
        path: absolutePath("path").meta({
            description: "Absolute path of the image file on the host (a DiskImage's `path` output).",
        }),
        format: z
            .enum(["raw", "qcow2"], { error: 'format must be "raw" or "qcow2"' })
            .meta({ typeName: "ImageFormat", description: 'The image\'s format: "raw" or "qcow2".' }),
        readOnly: z
            .boolean({ error: "readOnly must be true or false" })
            .default(false)
            .meta({ description: "Attach the disk read-only." }),
        /** A qcow2 file the launcher creates over `path` when missing and boots instead (Guix's copy-image). */
        overlay: absolutePath("overlay").optional().meta({
            description:
                "Path of a qcow2 file the launcher creates over `path` when missing and boots instead (Guix's copy-image), so the base stays unchanged; default none (boot `path` itself).",
        }),
        /**
         * The image's identity (a DiskImage's inputHash). It never reaches the argv, but it is part
         * of the VM's hash: an image rebuilt in place at the same path must restart the VM.
         */
        inputHash: z
            .string({ error: "inputHash must be a string" })
            .regex(/^[0-9a-f]{16,128}$/, {
                error: "inputHash must be a lowercase hex digest (a DiskImage's inputHash output)",
            })
            .optional()
            .meta({
                description:
                    "The DiskImage's inputHash output: a rebuilt image restarts the VM even at the same path; default none (only the path counts).",
            }),
    })
    .strict()
    .refine((d) => !(d.overlay && d.readOnly), {
        error: "a disk with an overlay is booted read-write through the overlay; drop readOnly or the overlay",
        path: ["overlay"],
    })
    .refine((d) => d.overlay === undefined || d.overlay !== d.path, {
        error: "overlay must be another file than path: the base is never written",
        path: ["overlay"],
    })
    .meta({ typeName: "Disk", description: "A disk image attached over virtio." });

const mountTagSchema = z
    .string({ error: "mountTag must be a string" })
    .min(1, { error: "mountTag must not be empty" })
    .refine((s) => /^[\x21-\x7e]*$/.test(s), { error: "mountTag must be printable ASCII without spaces" })
    .refine((s) => Buffer.byteLength(s) <= MAX_MOUNT_TAG_BYTES, {
        error: `mountTag must be at most ${MAX_MOUNT_TAG_BYTES} bytes (QEMU's limit); leave it out to derive one from the path`,
    })
    .refine((s) => !s.includes("/") && !s.startsWith("_"), {
        error: 'mountTag must not contain "/" nor start with "_"',
    });

const shareSchema = z
    .object({
        source: absolutePath("source").meta({ description: "Absolute path of the host directory to share." }),
        mountTag: mountTagSchema.optional().meta({
            description:
                '9p mount tag the guest mounts by; default Guix\'s rule: "TAG" + base32 of the SHA-1 of the path, 31 bytes at most.',
        }),
        readOnly: z
            .boolean({ error: "readOnly must be true or false" })
            .default(false)
            .meta({ description: "Share the directory read-only." }),
    })
    .strict()
    .meta({ typeName: "Share", description: "A host directory shared over virtio-9p." });

/**
 * Why a forward cannot listen on `address`: broadcast, multicast (224.0.0.0/4) and the reserved
 * 240.0.0.0/4 are not addresses of this host. 0.0.0.0 stays allowed: it opens the port on every
 * interface, which a user may want on purpose.
 */
export function hostAddressProblem(address: string): string | undefined {
    const first = Number(address.split(".")[0]);
    if (address === "255.255.255.255")
        return "hostAddress 255.255.255.255 is the broadcast address, which no port can listen on; use 127.0.0.1 (the default), an address of this host, or 0.0.0.0 for every interface";
    if (first >= 224 && first <= 239)
        return `hostAddress ${address} is a multicast address (224.0.0.0/4), which a TCP or UDP forward cannot listen on; use 127.0.0.1 (the default), an address of this host, or 0.0.0.0`;
    if (first >= 240)
        return `hostAddress ${address} is in the reserved range 240.0.0.0/4, which no host uses; use 127.0.0.1 (the default), an address of this host, or 0.0.0.0`;
    return undefined;
}

const portForwardSchema = z
    .object({
        /** Left out, the provider picks a free port at create and keeps it (outputs `ports`, `endpoints`). */
        host: port("host").optional().meta({
            description:
                "Host port, 1-65535; left out, the provider picks a free one at create and keeps it (the VM's `ports` and `endpoints` outputs).",
        }),
        guest: port("guest").meta({ description: "Guest port, 1-65535." }),
        /** Loopback unless the user opens the port wider on purpose. */
        hostAddress: z
            .ipv4({ error: 'hostAddress must be an IPv4 address such as "127.0.0.1"' })
            .refine((a) => hostAddressProblem(a) === undefined, {
                error: (iss) => hostAddressProblem(iss.input as string),
            })
            .default("127.0.0.1")
            .meta({
                description:
                    "IPv4 host address to listen on: loopback unless you open the port wider on purpose (0.0.0.0 listens on every interface).",
            }),
        protocol: z
            .enum(["tcp", "udp"], { error: 'protocol must be "tcp" or "udp"' })
            .default("tcp")
            .meta({ description: 'Transport: "tcp" or "udp".' }),
    })
    .strict()
    .meta({
        typeName: "PortForward",
        description: "A port forwarded from the host into the guest over user-mode networking.",
    });

/** One NIC on a private Network, beside the user-mode NIC. */
const nicSchema = z
    .object({
        /** The Network's `id` output; the network is looked up in the VM's state directory. */
        network: z
            .string({ error: "network must be a Network's id (a string)" })
            .regex(/^[A-Za-z0-9_.-]{1,80}$/, { error: 'network must be a Network\'s id output, such as "lan-a1b2c3"' })
            .meta({ description: "The id of the Network to join (a Network's `id` output; same stateDir as the VM)." }),
        mac: z
            .string({ error: "mac must be a string" })
            .superRefine((m, ctx) => {
                const why = macProblem(m);
                if (why) ctx.addIssue({ code: "custom", message: why });
            })
            .transform((m) => m.toLowerCase())
            .optional()
            .meta({
                description:
                    "MAC address; default locally administered, derived from the network and the NIC's address.",
            }),
        ipv4: z.ipv4({ error: 'ipv4 must be an IPv4 address such as "10.77.1.5"' }).optional().meta({
            description:
                "IPv4 address in the network's subnet; default a stable host number derived from the VM's name.",
        }),
        hostname: z
            .string({ error: "hostname must be a string" })
            .regex(HOSTNAME_RE, { error: "hostname must be letters, digits and inner hyphens, at most 63" })
            .optional()
            .meta({ description: "Name in the `hosts` output; default the VM's name." }),
    })
    .strict()
    .meta({ typeName: "NetworkAttachment", description: "A NIC on a private Network." });

export const vmSpecSchema = z
    .object({
        name: plainText("name")
            .min(1, { error: "name must not be empty" })
            .max(64, { error: "name must be at most 64 characters" })
            .optional()
            .meta({
                description:
                    "Guest name shown by QEMU; default none. Needed on networks: default addresses, MACs and hostnames derive from it.",
            }),
        qemu: plainText("qemu")
            .min(1, { error: "qemu must not be empty (leave it out for qemu-system-x86_64)" })
            .default("qemu-system-x86_64")
            .meta({ description: "QEMU system emulator, a path or a name on PATH." }),
        qemuImg: plainText("qemuImg")
            .min(1, { error: "qemuImg must not be empty (leave it out for qemu-img)" })
            .default("qemu-img")
            .meta({ description: "qemu-img, a path or a name on PATH, used by launchers that create overlays." }),
        accel: z.enum(["auto", "kvm", "tcg"], { error: 'accel must be "auto", "kvm" or "tcg"' }).default("auto").meta({
            typeName: "Accel",
            description: 'Accelerator: "auto" (KVM only where a probe boot proves it works, else TCG), "kvm" or "tcg".',
        }),
        memoryMiB: z
            .number({ error: "memoryMiB must be a number of MiB" })
            .int({ error: "memoryMiB must be a whole number of MiB" })
            .min(16, { error: "memoryMiB must be at least 16" })
            .max(1024 * 1024, { error: "memoryMiB must be at most 1048576 (1 TiB)" })
            .default(256)
            .meta({ description: "Guest memory.", unit: "MiB" }),
        cpus: z
            .number({ error: "cpus must be a number" })
            .int({ error: "cpus must be a whole number" })
            .min(1, { error: "cpus must be between 1 and 255" })
            .max(255, { error: "cpus must be between 1 and 255" })
            .default(1)
            .meta({ description: "Virtual CPUs." }),
        graphic: z
            .boolean({ error: "graphic must be true or false" })
            .default(false)
            .meta({ description: "A graphic console instead of the serial console." }),
        kernel: absolutePath("kernel")
            .optional()
            .meta({ description: "Path of a kernel to boot directly; default none (boot from the first disk)." }),
        initrd: absolutePath("initrd").optional().meta({
            description: "Path of the initial RAM disk for direct kernel boot; default none. Only with `kernel`.",
        }),
        kernelArguments: z
            .array(plainText("kernelArguments item"))
            .optional()
            .meta({ description: "Kernel command line words, joined with spaces; default none. Only with `kernel`." }),
        disks: z
            .array(diskSchema)
            .default([])
            .meta({ description: "Disks attached over virtio, in order (the first is /dev/vda)." }),
        /** Writes to disks are thrown away when QEMU exits (QEMU's snapshot mode), as Guix's volatile VMs. */
        volatile: z.boolean({ error: "volatile must be true or false" }).default(false).meta({
            description:
                "Throw away what the guest writes to its disks when QEMU exits (QEMU's snapshot mode), as Guix's volatile VMs.",
        }),
        shares: z.array(shareSchema).default([]).meta({ description: "Host directories shared over virtio-9p." }),
        portForwards: z
            .array(portForwardSchema)
            .default([])
            .meta({ description: "Ports forwarded from the host into the guest over user-mode networking." }),
        network: z.enum(["user", "none"], { error: 'network must be "user" or "none"' }).default("user").meta({
            typeName: "UserNetwork",
            description: 'The user-mode NIC (host access and port forwards): "user" or "none".',
        }),
        /** Private networks, one virtio-net NIC each; absent keeps the argv exactly as before. */
        networks: z
            .array(nicSchema)
            .optional()
            .meta({ description: "Private networks, one virtio-net NIC each beside the user-mode NIC; default none." }),
        extraArgs: z.array(plainText("extraArgs item")).default([]).meta({
            description:
                "Arguments appended to the QEMU command line, for options the spec has no field for. An allow-list, judged as QEMU would read them: options the provider manages, options it does not know, and anything that listens off loopback, reads another config or adds a monitor are refused (docs/security.md).",
        }),
        /**
         * A command channel into the guest: a virtio-serial port whose host end is a unix socket in
         * the VM's private directory. "qga" for qemu-guest-agent, "shell" for our busybox agent.
         */
        agent: z
            .enum(["qga", "shell", "none"], { error: 'agent must be "qga", "shell" or "none"' })
            .default("none")
            .meta({
                typeName: "Agent",
                description:
                    'A command channel into the guest (a virtio-serial port whose host end is the `agentSocket` output): "shell" for guests running pulumi-qemu\'s shell-agent.sh, "qga" for guests with qemu-guest-agent, or "none".',
            }),
        firmware: z
            .enum(["bios", "uefi"], {
                error: 'firmware must be "bios" (SeaBIOS, the default) or "uefi" (OVMF, from Debian\'s ovmf package)',
            })
            .default("bios")
            .meta({
                typeName: "Firmware",
                description:
                    'What boots a VM without `kernel`: "bios" (default) is SeaBIOS; "uefi" is OVMF (/usr/share/OVMF, package ovmf) with a variable store of the VM\'s own. Either boots the first disk. Set "uefi" for images that only boot under UEFI. A change replaces the VM.',
            }),
        onReboot: z
            .enum(["restart", "stop"], {
                error: 'onReboot must be "restart" (the guest boots again in the same QEMU) or "stop" (QEMU exits)',
            })
            .default("restart")
            .meta({
                typeName: "OnReboot",
                description:
                    'What a reboot inside the guest does: "restart" (default) resets the machine in the same QEMU process, so the VM stays the same VM; "stop" ends QEMU (-no-reboot), so the VM is gone. A change replaces the VM.',
            }),
        machine: z
            .enum(["pc", "q35", "microvm"], { error: 'machine must be "pc", "q35" or "microvm"' })
            .default("pc")
            .meta({
                typeName: "Machine",
                description:
                    'QEMU machine type: "pc" (i440FX, QEMU\'s own default), "q35" (PCI Express, what current firmware and guests expect) or "microvm" (no firmware, boots a kernel directly in a fraction of the time; needs kernel and accel "kvm", no graphic).',
            }),
    })
    .strict()
    .superRefine((spec, ctx) => {
        if (!spec.kernel) {
            if (spec.initrd)
                ctx.addIssue({ code: "custom", path: ["initrd"], message: "initrd needs kernel: set kernel too" });
            if (spec.kernelArguments?.length) {
                ctx.addIssue({
                    code: "custom",
                    path: ["kernelArguments"],
                    message: "kernelArguments need kernel: set kernel too, or boot from a disk without them",
                });
            }
        }
        spec.disks.forEach((disk, i) => {
            if (spec.volatile && disk.overlay) {
                ctx.addIssue({
                    code: "custom",
                    path: ["disks", i, "overlay"],
                    message: "an overlay keeps the guest's writes and volatile throws them away: drop one of them",
                });
            }
        });
        if (spec.network === "none" && spec.portForwards.length > 0) {
            ctx.addIssue({
                code: "custom",
                path: ["portForwards"],
                message:
                    'port forwards reach the guest through the user-mode NIC, which network "none" drops: remove portForwards, or leave network "user" (the default)',
            });
        }
        const seenPorts = new Map<string, number>();
        spec.portForwards.forEach((pf, i) => {
            if (pf.host === undefined) return;
            const key = `${pf.protocol}:${pf.host}`;
            const first = seenPorts.get(key);
            if (first !== undefined) {
                ctx.addIssue({
                    code: "custom",
                    path: ["portForwards", i, "host"],
                    message: `host port ${pf.host}/${pf.protocol} is already forwarded by portForwards[${first}]`,
                });
            } else seenPorts.set(key, i);
        });
        nicProblems(spec, ctx);
        const seenTags = new Map<string, number>();
        spec.shares.forEach((share, i) => {
            const tag = share.mountTag ?? mountTag(share.source);
            const first = seenTags.get(tag);
            if (first !== undefined) {
                ctx.addIssue({
                    code: "custom",
                    path: ["shares", i, share.mountTag ? "mountTag" : "source"],
                    message: `mount tag ${tag} is already used by shares[${first}]; each share needs its own tag`,
                });
            } else seenTags.set(tag, i);
        });
        for (const reason of microvmProblems(spec))
            ctx.addIssue({ code: "custom", path: ["machine"], message: reason });
        for (const p of extraArgsProblems(spec.extraArgs))
            ctx.addIssue({ code: "custom", path: ["extraArgs", p.index], message: p.reason });
        forwardsByGuestPort(spec.portForwards, ctx);
        const cmdline = kernelCommandLineBytes(spec);
        if (cmdline > MAX_KERNEL_CMDLINE_BYTES) {
            ctx.addIssue({
                code: "custom",
                path: ["kernelArguments"],
                message: `kernelArguments make a kernel command line of ${cmdline} bytes (with what the provider adds: console=ttyS0 and the private NICs' ip=), more than the ${MAX_KERNEL_CMDLINE_BYTES} an x86 kernel keeps (COMMAND_LINE_SIZE 2048, with its NUL); the rest would be cut off silently. Pass long configuration in a cloud-init seed or a share instead`,
            });
        }
        const seenDisks = new Map<string, number>();
        spec.disks.forEach((disk, i) => {
            for (const file of [disk.path, disk.overlay]) {
                if (file === undefined) continue;
                const first = seenDisks.get(file);
                if (first !== undefined && first !== i) {
                    ctx.addIssue({
                        code: "custom",
                        path: ["disks", i],
                        message: `disks[${first}] already uses ${file}; one image cannot be opened twice`,
                    });
                } else seenDisks.set(file, i);
            }
        });
    })
    .meta({
        typeName: "VmSpec",
        description: "A QEMU virtual machine; defaults follow Guix's <virtual-machine> record.",
    });

/**
 * What microvm cannot do. It has no firmware that boots a disk, no display, and under TCG its
 * guest finds no clock to calibrate against (no kvmclock, PIT or HPET) and hangs early in boot:
 * measured with QEMU 7.2 and Debian's kernel. "auto" may turn out TCG, so KVM must be asked for.
 */
function microvmProblems(spec: {
    machine: string;
    kernel?: string;
    accel: string;
    graphic: boolean;
    firmware: string;
}): string[] {
    if (spec.machine !== "microvm") return [];
    const problems: string[] = [];
    if (!spec.kernel)
        problems.push(
            'microvm has no firmware to boot a disk: set kernel (direct kernel boot), or use machine "q35" or "pc"',
        );
    if (spec.accel !== "kvm")
        problems.push(
            `microvm needs accel "kvm" (got "${spec.accel}"): under TCG its guest finds no clock and hangs at boot; set accel "kvm" on a host with KVM, or use machine "q35"`,
        );
    if (spec.graphic) problems.push('microvm has no display device: drop graphic, or use machine "q35" or "pc"');
    if (spec.firmware === "uefi")
        problems.push('microvm has no flash for UEFI firmware: drop firmware "uefi", or use machine "q35" or "pc"');
    return problems;
}

/** x86's COMMAND_LINE_SIZE is 2048 bytes with the terminating NUL; the kernel cuts off whatever is beyond. */
export const MAX_KERNEL_CMDLINE_BYTES = 2047;

/**
 * The longest command line `-append` could get from this spec: the user's arguments, the
 * console the provider adds, and each private NIC's `ifname=`/`ip=` at their longest (the
 * address and MAC are picked at create).
 */
function kernelCommandLineBytes(spec: {
    kernel?: string;
    graphic: boolean;
    kernelArguments?: string[];
    name?: string;
    networks?: Array<{ hostname?: string }>;
}): number {
    if (!spec.kernel) return 0;
    const args = [...(spec.kernelArguments ?? [])];
    if (!spec.graphic && !args.some((a) => a.startsWith("console="))) args.push("console=ttyS0");
    (spec.networks ?? []).forEach((nic, i) => {
        args.push(
            `ifname=pqnet${i}:00:00:00:00:00:00`,
            `ip=255.255.255.255:::255.255.255.255:${nic.hostname ?? spec.name ?? ""}:pqnet${i}:off`,
        );
    });
    return Buffer.byteLength(args.join(" "));
}

/**
 * `ports` and `endpoints` are keyed by guest port (and protocol): two forwards of one guest
 * port would share a key, and a port the provider picks would be nowhere to be found. Both
 * with a host port given is fine: the user knows them.
 */
function forwardsByGuestPort(
    forwards: ReadonlyArray<{ guest: number; host?: number; protocol: string }>,
    ctx: z.RefinementCtx,
): void {
    const first = new Map<string, number>();
    forwards.forEach((pf, i) => {
        const key = `${pf.guest}/${pf.protocol}`;
        const j = first.get(key);
        if (j === undefined) return void first.set(key, i);
        if (pf.host !== undefined && forwards[j].host !== undefined) return;
        ctx.addIssue({
            code: "custom",
            path: ["portForwards", i],
            message: `guest port ${pf.guest}/${pf.protocol} is already forwarded by portForwards[${j}], and a port the provider picks could not be told apart in the ports and endpoints outputs (keyed by guest port); give both a host port, or drop one`,
        });
    });
}

/** What a VM's NICs can be judged on without the networks themselves (those checks need their subnets). */
function nicProblems(spec: { name?: string; networks?: z.output<typeof nicSchema>[] }, ctx: z.RefinementCtx): void {
    const nics = spec.networks ?? [];
    if (nics.length === 0) return;
    if (spec.name === undefined) {
        ctx.addIssue({
            code: "custom",
            path: ["name"],
            message: "a VM on networks needs a name: its default address, MAC and hostname derive from it",
        });
    }
    const seenMacs = new Map<string, number>();
    const seenAddrs = new Map<string, number>();
    nics.forEach((nic, i) => {
        if (nic.hostname === undefined && spec.name !== undefined && !HOSTNAME_RE.test(spec.name)) {
            ctx.addIssue({
                code: "custom",
                path: ["networks", i, "hostname"],
                message: `the VM's name ${JSON.stringify(spec.name)} is not a valid hostname; set hostname (letters, digits, inner hyphens)`,
            });
        }
        if (nic.mac !== undefined) {
            const first = seenMacs.get(nic.mac);
            if (first !== undefined)
                ctx.addIssue({
                    code: "custom",
                    path: ["networks", i, "mac"],
                    message: `mac ${nic.mac} is already used by networks[${first}]; each NIC needs its own`,
                });
            else seenMacs.set(nic.mac, i);
        }
        if (nic.ipv4 !== undefined) {
            const key = `${nic.network} ${nic.ipv4}`;
            const first = seenAddrs.get(key);
            if (first !== undefined)
                ctx.addIssue({
                    code: "custom",
                    path: ["networks", i, "ipv4"],
                    message: `ipv4 ${nic.ipv4} on network ${nic.network} is already taken by networks[${first}]`,
                });
            else seenAddrs.set(key, i);
        }
    });
}

export type VmSpecInput = z.input<typeof vmSpecSchema>;
export type VmSpec = z.output<typeof vmSpecSchema>;
export type DiskSpec = VmSpec["disks"][number];
export type ShareSpec = VmSpec["shares"][number];
export type PortForwardSpec = VmSpec["portForwards"][number];
export type NicSpec = NonNullable<VmSpec["networks"]>[number];

/** Validates and completes a user's VM description; errors name fields under `field` (e.g. `vm.memoryMiB`). */
export function parseVmSpec(input: unknown, field = "vm"): VmSpec {
    return parseOrThrow(vmSpecSchema, input, field);
}
