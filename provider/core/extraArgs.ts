/**
 * `vm.extraArgs` is for QEMU options the spec has no field for, not for taking over what the
 * provider runs itself nor for opening the VM to other users or machines. A list of options
 * refused would keep losing to the next one QEMU has (-qtest, -readconfig, -set, a udp chardev
 * were each found past the last one), so extraArgs are judged the way QEMU reads them: each item
 * is an option this module knows, with the value it takes, and an option whose value can open a
 * listener (a character device, a network backend, a display, an object) has that value parsed
 * and judged. Anything else is refused, named by its index, with the reason and the way out.
 *
 * Refused:
 * - options the provider manages for a running VM: -daemonize, -pidfile, -qmp, -qmp-pretty,
 *   -monitor, -mon, -serial, -incoming (a second pidfile, monitor or console would leave the
 *   provider blind to, or unable to stop, the QEMU it started);
 * - anything that gives control of QEMU or the guest to whoever connects: -gdb and -s (the gdb
 *   stub), -qtest, a `mon:` character device (a monitor multiplexed onto it);
 * - anything that makes QEMU read options from elsewhere, which could say any of the above:
 *   -readconfig, and -set on any group but device and drive;
 * - any listener not on loopback: a chardev or legacy character device that is a server
 *   (`tcp:`, `telnet:`, `websocket:`, `socket,…,server=on`) with no host or a host other than
 *   127.0.0.1/localhost/::1, a UDP chardev or network backend bound beyond loopback (`udp`,
 *   `localaddr=`, `dgram` `local.host=`, `l2tpv3` `src=`), a multicast network backend
 *   (`mcast=`, a `dgram` multicast `remote`), a `-netdev`/`-nic` socket `listen=` or `hostfwd=`
 *   so bound (use `portForwards`, which default to loopback), a VNC display or a SPICE port not
 *   on loopback. Unix sockets are fine;
 * - every option not in ALLOWED below, and object types, chardev backends, network backends and
 *   display kinds not in their lists: what is not known cannot be judged.
 * Every spelling QEMU or a user might write counts: `-opt`, `--opt`, `-opt=value`, and the JSON
 * form (`-netdev {"type":…}`) of the options that take one.
 */

/** An option and the value it takes; `check` judges the value (undefined when fine). */
interface Rule {
    value: boolean;
    check?: (value: string) => string | undefined;
}

const FLAG: Rule = { value: false };
const ANY: Rule = { value: true };

const MANAGED: Record<string, boolean> = {
    daemonize: false,
    pidfile: true,
    qmp: true,
    "qmp-pretty": true,
    monitor: true,
    mon: true,
    serial: true,
    incoming: true,
};

/** Refused outright, each with why; `true` when the option takes a value. */
const REFUSED: Record<string, { value: boolean; reason: string }> = {
    gdb: {
        value: true,
        reason: "starts QEMU's gdb stub, which gives whoever connects full control of the guest; remove it",
    },
    s: {
        value: false,
        reason: "starts QEMU's gdb stub on every interface (tcp::1234), which gives whoever connects full control of the guest; remove it",
    },
    qtest: {
        value: true,
        reason: "starts QEMU's qtest server, which gives whoever connects full control of the guest and its memory; remove it",
    },
    "qtest-log": { value: true, reason: "belongs to -qtest, which pulumi-qemu refuses; remove it" },
    readconfig: {
        value: true,
        reason: "reads options from a config file, which could add a monitor, a chardev server or anything else refused here, past this check; write the options in extraArgs instead",
    },
    writeconfig: { value: true, reason: "writes QEMU's configuration and exits; remove it" },
    preconfig: {
        value: false,
        reason: "makes QEMU wait for configuration over QMP, which the provider keeps for itself; remove it",
    },
    "add-fd": { value: true, reason: "passes a file descriptor the provider does not have; remove it" },
    chroot: {
        value: true,
        reason: "changes QEMU's root after start, where the provider's sockets and files are no longer found; remove it",
    },
    runas: {
        value: true,
        reason: "changes QEMU's user after start, which the provider (and its owner-only files) then no longer match; remove it",
    },
};

/** Whole-option allow-list: what pulumi-qemu lets through extraArgs, each with the value it takes. */
const ALLOWED: Record<string, Rule> = {
    // The machine, its CPUs, memory and firmware.
    machine: ANY,
    M: ANY,
    cpu: ANY,
    smp: ANY,
    m: ANY,
    accel: ANY,
    "enable-kvm": FLAG,
    numa: ANY,
    "mem-path": ANY,
    "mem-prealloc": FLAG,
    overcommit: ANY,
    icount: ANY,
    rtc: ANY,
    boot: ANY,
    bios: ANY,
    L: ANY,
    pflash: ANY,
    "option-rom": ANY,
    kernel: ANY,
    initrd: ANY,
    append: ANY,
    dtb: ANY,
    fw_cfg: ANY,
    smbios: ANY,
    acpitable: ANY,
    uuid: ANY,
    global: ANY,
    compat: ANY,
    name: ANY,
    k: ANY,
    "no-acpi": FLAG,
    "no-hpet": FLAG,
    "no-fd-bootchk": FLAG,
    "win2k-hack": FLAG,
    S: FLAG,
    snapshot: FLAG,
    "no-reboot": FLAG,
    "no-shutdown": FLAG,
    nodefaults: FLAG,
    "no-user-config": FLAG,
    action: ANY,
    "watchdog-action": ANY,
    loadvm: ANY,
    "only-migratable": FLAG,
    // Disks and shares.
    drive: ANY,
    blockdev: ANY,
    cdrom: ANY,
    hda: ANY,
    hdb: ANY,
    hdc: ANY,
    hdd: ANY,
    fda: ANY,
    fdb: ANY,
    sd: ANY,
    mtdblock: ANY,
    fsdev: ANY,
    virtfs: ANY,
    // Devices: a device reaches the host only through a chardev, netdev or object, each judged below.
    device: ANY,
    usb: FLAG,
    usbdevice: ANY,
    vga: ANY,
    audiodev: ANY,
    audio: ANY,
    tpmdev: ANY,
    set: { value: true, check: setProblem },
    object: { value: true, check: objectProblem },
    chardev: { value: true, check: chardevProblem },
    parallel: { value: true, check: legacyCharProblem },
    debugcon: { value: true, check: legacyCharProblem },
    netdev: { value: true, check: (v) => netProblem(v, "netdev") },
    nic: { value: true, check: (v) => netProblem(v, "nic") },
    net: { value: true, check: (v) => netProblem(v, "net") },
    display: { value: true, check: displayProblem },
    vnc: { value: true, check: vncProblem },
    spice: { value: true, check: spiceProblem },
    "full-screen": FLAG,
    portrait: FLAG,
    rotate: ANY,
    echr: ANY,
    // Diagnostics.
    d: ANY,
    D: ANY,
    dfilter: ANY,
    trace: ANY,
    msg: ANY,
    sandbox: ANY,
    plugin: ANY,
    singlestep: FLAG,
};

const OBJECT_TYPES = new Set([
    "rng-random",
    "rng-builtin",
    "rng-egd",
    "memory-backend-ram",
    "memory-backend-file",
    "memory-backend-memfd",
    "iothread",
    "main-loop",
    "thread-context",
    "secret",
    "secret_keyring",
    "throttle-group",
    "cryptodev-backend-builtin",
    "filter-buffer",
    "filter-dump",
    "filter-mirror",
    "filter-redirector",
    "filter-rewriter",
    "tls-creds-x509",
    "tls-creds-psk",
    "tls-creds-anon",
    "tls-cipher-suites",
    "authz-simple",
    "authz-list",
    "authz-listfile",
    "can-bus",
    "input-linux",
    "sev-guest",
]);
const CHARDEV_BACKENDS = new Set([
    "null",
    "socket",
    "udp",
    "file",
    "pipe",
    "pty",
    "stdio",
    "ringbuf",
    "memory",
    "serial",
    "tty",
    "parallel",
    "parport",
    "msmouse",
    "wctablet",
    "braille",
    "testdev",
    "spicevmc",
    "spiceport",
    "qemu-vdagent",
    "vc",
]);
const NET_BACKENDS = new Set([
    "user",
    "tap",
    "bridge",
    "vde",
    "socket",
    "stream",
    "dgram",
    "l2tpv3",
    "vhost-user",
    "vhost-vdpa",
    "hubport",
    "netmap",
    "none",
    "nic",
    "dump",
]);
const DISPLAYS = new Set(["none", "sdl", "gtk", "curses", "egl-headless", "cocoa", "spice-app", "vnc"]);
const SET_GROUPS = new Set(["device", "drive"]);

const LOOPBACK = new Set(["127.0.0.1", "localhost", "::1", "[::1]", "ip6-localhost"]);

export interface ExtraArgProblem {
    /** Index in `extraArgs` of the item at fault. */
    index: number;
    reason: string;
}

/** Every item of `args` that QEMU would read as something extraArgs may not do. */
export function extraArgsProblems(args: readonly string[]): ExtraArgProblem[] {
    const problems: ExtraArgProblem[] = [];
    for (let i = 0; i < args.length; i++) {
        const m = /^--?([A-Za-z][A-Za-z0-9_-]*)(?:=(.*))?$/s.exec(args[i]);
        // Not an option: QEMU takes a lone word as the first hard disk's image, as -hda would.
        if (!m) continue;
        const name = m[1];
        const inline = m[2];
        const shown = JSON.stringify(args[i].length > 60 ? `${args[i].slice(0, 60)}…` : args[i]);
        const takesValue = MANAGED[name] ?? REFUSED[name]?.value ?? ALLOWED[name]?.value;
        if (takesValue === undefined) {
            problems.push({
                index: i,
                reason: `${shown} is not an option pulumi-qemu lets through extraArgs: it judges each option by what QEMU would do with it, and does not know this one (docs/security.md lists those it does); use a field of the VM's spec, or ask for the option to be added`,
            });
            continue;
        }
        const at = i;
        const valueIndex = inline !== undefined ? i : i + 1;
        const value = inline ?? (takesValue ? args[i + 1] : undefined);
        if (takesValue && inline === undefined) i++;
        if (name in MANAGED) {
            problems.push({
                index: at,
                reason: `${shown} is managed by the provider (it sets -daemonize, -pidfile, -qmp and -serial itself and needs them to find, watch and stop QEMU); remove it`,
            });
        } else if (name in REFUSED) {
            problems.push({ index: at, reason: `${shown} ${REFUSED[name].reason}` });
        } else if (value !== undefined) {
            const why = ALLOWED[name].check?.(value);
            if (why) problems.push({ index: valueIndex, reason: `${JSON.stringify(`-${name}`)} ${why}` });
        }
    }
    return problems;
}

/** Why `-name value` opens a listener beyond loopback or escapes the checks, or undefined. Kept for callers judging one option. */
export function listenerProblem(option: string, value: string): string | undefined {
    return ALLOWED[option]?.check?.(value);
}

/** `-set group.id.property=value`: only for devices and drives, whose values open nothing by themselves. */
function setProblem(value: string): string | undefined {
    const group = value.split(".")[0];
    if (SET_GROUPS.has(group)) return undefined;
    return `${JSON.stringify(`-set ${value.length > 40 ? value.slice(0, 40) + "…" : value}`)} changes a -${group || "?"} option after it was judged, which could make it listen or add a monitor; write the -${group || "option"} in full instead`;
}

function objectProblem(value: string): string | undefined {
    const { kind } = parseValue(value, "qom-type");
    if (OBJECT_TYPES.has(kind)) return undefined;
    return `object type ${JSON.stringify(kind)} is not one pulumi-qemu lets through extraArgs (allowed: ${[...OBJECT_TYPES].join(", ")})`;
}

function chardevProblem(value: string): string | undefined {
    const { kind, opts } = parseValue(value, "backend");
    if (!CHARDEV_BACKENDS.has(kind))
        return `chardev backend ${JSON.stringify(kind)} is not one pulumi-qemu lets through extraArgs (allowed: ${[...CHARDEV_BACKENDS].join(", ")})`;
    if (kind === "socket" || opts.has("websocket")) {
        if (opts.has("path") || opts.has("fd") || !isServer(opts)) return undefined;
        return hostProblem(
            opts.get("host"),
            "a chardev socket server",
            "set host=127.0.0.1 or use path= (a unix socket)",
        );
    }
    if (kind === "udp")
        return hostProblem(opts.get("localaddr"), "a UDP chardev bound", "set localaddr=127.0.0.1", "UDP");
    return undefined;
}

/** The legacy character device syntax of -parallel, -debugcon (and -serial): `tcp:…`, `udp:…`, `mon:…`, a host device. */
function legacyCharProblem(value: string): string | undefined {
    if (value.startsWith("mon:"))
        return "multiplexes a QEMU monitor onto this character device, which gives whoever reaches it control of QEMU; remove the mon: prefix";
    const legacy = /^(tcp|telnet|websocket):(.*)$/s.exec(value);
    if (legacy) return legacyServerProblem(legacy[1], legacy[2]);
    const udp = /^udp:(.*)$/s.exec(value);
    if (udp) {
        // udp:[remote_host]:remote_port[@[src_ip]:src_port]; without a source it binds every interface.
        const at = udp[1].lastIndexOf("@");
        const local = at < 0 ? "" : udp[1].slice(at + 1);
        const host = local.includes(":") ? local.slice(0, local.lastIndexOf(":")) : "";
        return hostProblem(host, "a UDP character device bound", "write udp:HOST:PORT@127.0.0.1:PORT", "UDP");
    }
    return undefined;
}

function legacyServerProblem(kind: string, rest: string): string | undefined {
    // tcp:[host]:port[,server=on|,server][,…]
    const [address, ...flags] = splitOptions(rest);
    const opts = toOptions(
        flags.map((f) => (f.includes("=") ? [f.slice(0, f.indexOf("=")), f.slice(f.indexOf("=") + 1)] : [f, "on"])),
    );
    if (!isServer(opts)) return undefined;
    const host = address.includes(":") ? address.slice(0, address.lastIndexOf(":")) : "";
    return hostProblem(host, `a ${kind}: server`, `write ${kind}:127.0.0.1:PORT,server=on`);
}

function netProblem(value: string, option: "netdev" | "nic" | "net"): string | undefined {
    const { kind, opts } = parseValue(value, "type");
    if (!NET_BACKENDS.has(kind))
        return `network backend ${JSON.stringify(kind)} is not one pulumi-qemu lets through extraArgs (allowed: ${[...NET_BACKENDS].join(", ")})`;
    for (const [key, v] of opts.all) {
        if (key === "listen") {
            const host = v.includes(":") ? v.slice(0, v.lastIndexOf(":")) : "";
            const why = hostProblem(host, "a socket network backend listening", "write listen=127.0.0.1:PORT");
            if (why) return why;
        }
        if (key === "hostfwd") {
            // hostfwd=[tcp|udp]:[hostaddr]:hostport-[guestaddr]:guestport; an empty hostaddr is every interface.
            const h = /^(?:(?:tcp|udp):)?([^:]*):/.exec(v);
            const why = hostProblem(
                h?.[1],
                "a host forward",
                "use portForwards (loopback by default) or write hostfwd=tcp:127.0.0.1:PORT-:PORT",
            );
            if (why) return why;
        }
        if (key === "mcast") {
            return `joins the multicast group ${v} on the host's network: any machine there can send into this guest's NIC; use a Network resource for private networks between VMs`;
        }
    }
    if (kind === "socket" && opts.has("udp")) {
        const local = opts.get("localaddr") ?? "";
        return hostProblem(
            local.includes(":") ? local.slice(0, local.lastIndexOf(":")) : "",
            "a UDP network backend bound",
            "set localaddr=127.0.0.1:PORT",
            "UDP",
        );
    }
    if ((kind === "stream" || kind === "dgram") && isServer(opts) && opts.get("addr.type") !== "unix") {
        return hostProblem(
            opts.get("addr.host"),
            `a ${kind} network backend server`,
            "set addr.host=127.0.0.1 or use addr.type=unix",
        );
    }
    if (kind === "dgram") {
        const remote = opts.get("remote.host");
        if (remote !== undefined && isMulticast(remote))
            return `joins the multicast group ${remote} on the host's network: any machine there can send into this guest's NIC; use a Network resource`;
        if (opts.has("local.host") || opts.get("local.type") === "inet") {
            return hostProblem(
                opts.get("local.host"),
                "a dgram network backend bound",
                "set local.host=127.0.0.1 or use local.type=unix",
                "UDP",
            );
        }
    }
    if (kind === "l2tpv3")
        return hostProblem(opts.get("src"), "an L2TPv3 network backend bound", "set src=127.0.0.1", "UDP");
    void option;
    return undefined;
}

function displayProblem(value: string): string | undefined {
    const vnc = /^vnc=([^,]*(?:,.*)?)$/s.exec(value);
    if (vnc) return vncProblem(vnc[1]);
    const kind = splitOptions(value)[0];
    if (DISPLAYS.has(kind)) return undefined;
    return `display ${JSON.stringify(kind)} is not one pulumi-qemu lets through extraArgs (allowed: ${[...DISPLAYS].join(", ")})`;
}

function vncProblem(value: string): string | undefined {
    const [display, ...rest] = splitOptions(value);
    const opts = new Map(
        rest.map((f) => (f.includes("=") ? [f.slice(0, f.indexOf("=")), f.slice(f.indexOf("=") + 1)] : [f, "on"])),
    );
    const ws = opts.get("websocket");
    if (ws !== undefined && ws !== "off" && ws !== "on") {
        const host = ws.includes(":") ? ws.slice(0, ws.lastIndexOf(":")) : "";
        const why = hostProblem(host, "a VNC websocket", "write websocket=127.0.0.1:PORT");
        if (why) return why;
    } else if (ws === "on") {
        return "opens a VNC websocket on every interface; write websocket=127.0.0.1:PORT";
    }
    if (display === "none" || display.startsWith("unix:")) return undefined;
    const host = display.includes(":") ? display.slice(0, display.lastIndexOf(":")) : "";
    return hostProblem(host, "a VNC server", "write 127.0.0.1:DISPLAY or unix:PATH");
}

function spiceProblem(value: string): string | undefined {
    const { opts } = parseValue(`spice,${value}`, "");
    if (!opts.has("port") && !opts.has("tls-port")) return undefined; // a unix socket or none
    return hostProblem(opts.get("addr"), "a SPICE server", "set addr=127.0.0.1 or use unix=on");
}

function isServer(opts: Options): boolean {
    if (!opts.has("server")) return false;
    const v = opts.get("server");
    return v === undefined || v === "" || v === "on" || v === "yes" || v === "true";
}

function isMulticast(host: string): boolean {
    const first = Number(host.split(".")[0]);
    return first >= 224 && first <= 239;
}

/** A problem unless `host` is a loopback address; an empty or missing host is every interface. */
function hostProblem(host: string | undefined, what: string, fix: string, proto?: "UDP"): string | undefined {
    const h = (host ?? "").trim();
    if (LOOPBACK.has(h)) return undefined;
    const where = h === "" || h === "0.0.0.0" || h === "::" || h === "[::]" ? "on every interface" : `on ${h}`;
    const opens = proto === "UDP" ? `opens ${what} (UDP)` : `opens ${what}`;
    return `${opens} ${where}, reachable from other machines; ${fix}`;
}

/** QEMU's option syntax: comma-separated, ",," for a literal comma. */
function splitOptions(value: string): string[] {
    const out: string[] = [];
    let cur = "";
    for (let i = 0; i < value.length; i++) {
        if (value[i] === ",") {
            if (value[i + 1] === ",") {
                cur += ",";
                i++;
                continue;
            }
            out.push(cur);
            cur = "";
        } else cur += value[i];
    }
    out.push(cur);
    return out;
}

interface Options {
    has(k: string): boolean;
    get(k: string): string | undefined;
    all: [string, string][];
}

function toOptions(all: [string, string][]): Options {
    const map = new Map(all);
    return { has: (k) => map.has(k), get: (k) => map.get(k), all };
}

/**
 * An option's value as QEMU reads it: `kind,key=value,flag,…` (the first item the kind when it
 * has no "="), or, for the options that take one, JSON (`{"type":"socket",…}`), whose nested
 * objects become dotted keys (`addr.host`) and whose lists repeat their key, as QEMU's keyval does.
 */
function parseValue(value: string, kindKey: string): { kind: string; opts: Options } {
    if (value.trimStart().startsWith("{")) {
        let parsed: unknown;
        try {
            parsed = JSON.parse(value);
        } catch {
            return { kind: "(JSON that does not parse)", opts: toOptions([]) };
        }
        const all: [string, string][] = [];
        flatten(parsed, "", all);
        const kind = all.find(([k]) => k === kindKey || k === "type" || k === "driver" || k === "qom-type")?.[1] ?? "";
        return { kind, opts: toOptions(all) };
    }
    const items = splitOptions(value);
    const kind = items[0].includes("=") ? "" : items.shift()!;
    const all = items.map((f): [string, string] =>
        f.includes("=") ? [f.slice(0, f.indexOf("=")), f.slice(f.indexOf("=") + 1)] : [f, ""],
    );
    return { kind, opts: toOptions(all) };
}

function flatten(v: unknown, prefix: string, into: [string, string][], depth = 0): void {
    if (depth > 16) return;
    if (Array.isArray(v)) {
        for (const item of v) flatten(item, prefix, into, depth + 1);
    } else if (v !== null && typeof v === "object") {
        const rec = v as Record<string, unknown>;
        // A list item such as hostfwd's { "str": "tcp::2222-:22" } stands for its string.
        if (prefix && Object.keys(rec).length === 1 && typeof rec.str === "string") into.push([prefix, rec.str]);
        else for (const [k, x] of Object.entries(rec)) flatten(x, prefix ? `${prefix}.${k}` : k, into, depth + 1);
    } else if (prefix) {
        into.push([prefix, String(v)]);
    }
}
