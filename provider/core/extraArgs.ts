/**
 * `vm.extraArgs` is for QEMU options the spec has no field for, not for taking over what the
 * provider runs itself or for opening the VM to the network. Refused, with the item named:
 *
 * - options the provider manages for a running VM: -daemonize, -pidfile, -qmp, -qmp-pretty,
 *   -monitor, -mon, -serial, -incoming (a second pidfile, monitor or console would leave the
 *   provider blind to, or unable to stop, the QEMU it started);
 * - the gdb stub, -gdb and -s: whoever reaches it controls the guest (-s listens on every interface);
 * - any listener not on loopback: a chardev or legacy character device that is a server
 *   (`tcp:`, `telnet:`, `websocket:`, `socket,…,server=on`) with no host or a host other than
 *   127.0.0.1/localhost/::1, a `-netdev`/`-nic` socket `listen=` or `hostfwd=` so bound (use
 *   `portForwards`, which default to loopback), a VNC display or a SPICE port not on loopback.
 *   Unix sockets are fine.
 * Every spelling QEMU or a user might write counts: `-opt`, `--opt`, `-opt=value`.
 */

const MANAGED = new Set(["daemonize", "pidfile", "qmp", "qmp-pretty", "monitor", "mon", "serial", "incoming"]);
const GDB = new Set(["gdb", "s"]);
/** Options whose value is a character device or a network backend: a server among them listens. */
const VALUE_OPTIONS = new Set(["chardev", "netdev", "nic", "net", "parallel", "debugcon", "virtioconsole", "vnc", "spice", "device", "object", "audiodev", "display"]);

const LOOPBACK = new Set(["127.0.0.1", "localhost", "::1", "[::1]", "ip6-localhost"]);

export interface ExtraArgProblem {
    /** Index in `extraArgs` of the item at fault. */
    index: number;
    reason: string;
}

/** Every item of `args` that takes over what the provider manages or listens beyond loopback. */
export function extraArgsProblems(args: readonly string[]): ExtraArgProblem[] {
    const problems: ExtraArgProblem[] = [];
    for (let i = 0; i < args.length; i++) {
        const m = /^--?([A-Za-z][A-Za-z0-9_-]*)(?:=(.*))?$/s.exec(args[i]);
        if (!m) continue;
        const name = m[1];
        const inline = m[2];
        const shown = JSON.stringify(args[i].length > 60 ? `${args[i].slice(0, 60)}…` : args[i]);
        if (MANAGED.has(name)) {
            problems.push({ index: i, reason: `${shown} is managed by the provider (it sets -daemonize, -pidfile, -qmp and -serial itself and needs them to find, watch and stop QEMU); remove it` });
        } else if (GDB.has(name)) {
            problems.push({ index: i, reason: `${shown} starts QEMU's gdb stub, which gives whoever connects full control of the guest (-s listens on every interface); remove it` });
        } else if (VALUE_OPTIONS.has(name)) {
            const valueIndex = inline !== undefined ? i : i + 1;
            const value = inline ?? args[i + 1];
            if (value === undefined) continue;
            const why = listenerProblem(name, value);
            if (why) problems.push({ index: valueIndex, reason: `${JSON.stringify(`-${name}`)} ${why}` });
            if (inline === undefined) i++;
        }
    }
    return problems;
}

/** Why `-name value` opens a listener beyond loopback, or undefined. */
export function listenerProblem(option: string, value: string): string | undefined {
    if (option === "vnc") return vncProblem(value);
    if (option === "spice") return spiceProblem(value);
    if (option === "display") {
        const vnc = /^vnc=([^,]*(?:,.*)?)$/s.exec(value);
        return vnc ? vncProblem(vnc[1]) : undefined;
    }
    const legacy = /^(tcp|telnet|websocket):(.*)$/s.exec(value);
    if (legacy) return legacyCharProblem(legacy[1], legacy[2]);
    const { kind, opts } = parseOptions(value);
    if (option === "chardev" && (kind === "socket" || kind === "websocket" || opts.has("websocket"))) {
        if (opts.has("path") || !isServer(opts)) return undefined;
        return hostProblem(opts.get("host"), "a chardev socket server", 'set host=127.0.0.1 or use path= (a unix socket)');
    }
    if (option === "netdev" || option === "nic" || option === "net") {
        for (const [key, v] of opts.all) {
            if (key === "listen") {
                const host = v.includes(":") ? v.slice(0, v.lastIndexOf(":")) : "";
                const why = hostProblem(host, "a socket network backend listening", 'write listen=127.0.0.1:PORT');
                if (why) return why;
            }
            if (key === "hostfwd") {
                // hostfwd=[tcp|udp]:[hostaddr]:hostport-[guestaddr]:guestport; an empty hostaddr is every interface.
                const h = /^(?:(?:tcp|udp):)?([^:]*):/.exec(v);
                const why = hostProblem(h?.[1], "a host forward", "use portForwards (loopback by default) or write hostfwd=tcp:127.0.0.1:PORT-:PORT");
                if (why) return why;
            }
        }
        if ((kind === "stream" || kind === "dgram") && isServer(opts) && opts.get("addr.type") !== "unix") {
            return hostProblem(opts.get("addr.host"), "a stream network backend server", "set addr.host=127.0.0.1 or use addr.type=unix");
        }
    }
    return undefined;
}

function legacyCharProblem(kind: string, rest: string): string | undefined {
    // tcp:[host]:port[,server=on|,server][,…]
    const [address, ...flags] = splitOptions(rest);
    const opts = new Map(flags.map((f) => (f.includes("=") ? [f.slice(0, f.indexOf("=")), f.slice(f.indexOf("=") + 1)] : [f, "on"])));
    if (!isServer({ has: (k: string) => opts.has(k), get: (k: string) => opts.get(k) })) return undefined;
    const host = address.includes(":") ? address.slice(0, address.lastIndexOf(":")) : "";
    return hostProblem(host, `a ${kind}: server`, `write ${kind}:127.0.0.1:PORT,server=on`);
}

function vncProblem(value: string): string | undefined {
    const [display, ...rest] = splitOptions(value);
    const opts = new Map(rest.map((f) => (f.includes("=") ? [f.slice(0, f.indexOf("=")), f.slice(f.indexOf("=") + 1)] : [f, "on"])));
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
    const { opts } = parseOptions(`spice,${value}`);
    if (!opts.has("port") && !opts.has("tls-port")) return undefined; // a unix socket or none
    return hostProblem(opts.get("addr"), "a SPICE server", "set addr=127.0.0.1 or use unix=on");
}

function isServer(opts: { has(k: string): boolean; get(k: string): string | undefined }): boolean {
    if (!opts.has("server")) return false;
    const v = opts.get("server");
    return v === undefined || v === "" || v === "on" || v === "yes" || v === "true";
}

/** A problem unless `host` is a loopback address; an empty or missing host is every interface. */
function hostProblem(host: string | undefined, what: string, fix: string): string | undefined {
    const h = (host ?? "").trim();
    if (LOOPBACK.has(h)) return undefined;
    const where = h === "" || h === "0.0.0.0" || h === "::" || h === "[::]" ? "on every interface" : `on ${h}`;
    return `opens ${what} ${where}, reachable from other machines; ${fix}`;
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

/** `kind,key=value,flag,…`, with the first item as the kind when it has no "=". */
function parseOptions(value: string): { kind: string; opts: Options } {
    const items = splitOptions(value);
    const kind = items[0].includes("=") ? "" : items.shift()!;
    const all = items.map((f): [string, string] => (f.includes("=") ? [f.slice(0, f.indexOf("=")), f.slice(f.indexOf("=") + 1)] : [f, ""]));
    const map = new Map(all);
    return { kind, opts: { has: (k) => map.has(k), get: (k) => map.get(k), all } };
}
