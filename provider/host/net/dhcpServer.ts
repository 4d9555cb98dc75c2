import { spawn } from "node:child_process";
import { mkdir, open, readdir, readFile, rm, rmdir } from "node:fs/promises";
import * as path from "node:path";
import { dhcpHostLine, dnsHostLine, dnsmasqArgv, hostEntryName, serverAddress, type DhcpHost } from "../../core/dhcp";
import type { Subnet } from "../../core/network";
import { writeFileAtomic } from "../files/atomicFile";
import { runTool } from "../process/toolRun";
import {
    checkOurDaemon,
    identify,
    readCmdline,
    readPidfile,
    waitUntilGone,
    type Liveness,
    type ProcessIdentity,
} from "../qemu/qemuProcess";

/**
 * The DHCP and DNS server of a Network, rootless: Debian's dnsmasq (dnsmasq-base) in an
 * unprivileged user + network namespace of its own, whose only interface is a tap that
 * `vde_plug2tap` plugs into the network's switch. Nothing binds in the host's own network
 * namespace and no root is needed: `unshare --user --map-root-user --net` gives the namespace,
 * and a user may create a tap inside a namespace it owns.
 *
 * Two processes live in that namespace and hold it: the plug and dnsmasq. Each writes a pidfile
 * into `<networkDir>/dhcp/` and is remembered by pid + start time + boot id and recognised by
 * its command line naming that pidfile, as the switch is. When both exit the namespace is gone
 * with them; a plug or a dnsmasq left by a crash is found again through its pidfile.
 *
 * VMs join DNS and DHCP by writing one file per NIC into the host directories
 * (`--dhcp-hostsdir`, `--hostsdir`), which dnsmasq watches with inotify: a new VM is known at
 * once, without a restart. Removed files are forgotten on SIGHUP (`reloadDhcp`).
 */

const TAP = "tap0";
const APT_HINT =
    "install Debian's dnsmasq-base, vde2 and iproute2 packages (apt-get install dnsmasq-base vde2 iproute2)";

export interface DhcpPaths {
    dhcpDir: string;
    /** dnsmasq's pid, written by the shell that execs it (dnsmasq writes none in the foreground). */
    pidfile: string;
    plugPidfile: string;
    hostsDir: string;
    dnsDir: string;
    leaseFile: string;
    /** stdout/stderr of the namespace's setup and dnsmasq's log: why a start failed, what it answered. */
    logFile: string;
}

export function dhcpPaths(networkDir: string): DhcpPaths {
    const dhcpDir = path.join(networkDir, "dhcp");
    return {
        dhcpDir,
        pidfile: path.join(dhcpDir, "dnsmasq.pid"),
        plugPidfile: path.join(dhcpDir, "plug.pid"),
        hostsDir: path.join(dhcpDir, "hosts"),
        dnsDir: path.join(dhcpDir, "dns"),
        leaseFile: path.join(dhcpDir, "leases"),
        logFile: path.join(dhcpDir, "dnsmasq.log"),
    };
}

/** The two processes that make a network's DHCP/DNS. */
export interface DhcpIdentity {
    server: ProcessIdentity;
    plug: ProcessIdentity;
}

export interface DhcpPlan {
    subnet: Subnet;
    /** The server's MAC (core/dhcp.ts serverMac): the same after a restart, so guests' ARP caches stay right. */
    mac: string;
    /** The DNS domain: VM `web` answers as `web` and `web.<domain>`. */
    domain: string;
}

/**
 * The shell run as root of the new namespace: bring the tap up with the server's address, then
 * become dnsmasq. umask 077: the leases and log dnsmasq creates are owner-only. Arguments come
 * positionally ($1…), never spliced into the script, so no path needs shell quoting.
 */
const NAMESPACE_SCRIPT = [
    "umask 077",
    "set -e",
    // dnsmasq and ip live in sbin, which an ordinary user's PATH (e.g. over SSH) often lacks.
    'PATH="$PATH:/usr/sbin:/sbin"',
    'pidfile="$1"; plugpid="$2"; sw="$3"; tap="$4"; cidr="$5"; mac="$6"; shift 6',
    "ip link set lo up",
    'vde_plug2tap --daemon --pidfile "$plugpid" --sock "$sw" "$tap"',
    // The plug creates the tap after it forks (and exits when the switch is not there): wait for it, bounded (2 s).
    'i=0; until ip link show "$tap" >/dev/null 2>&1; do i=$((i+1)); [ $i -lt 200 ] || { echo "the tap $tap did not appear" >&2; exit 1; }; sleep 0.01; done',
    'ip link set "$tap" address "$mac"',
    'ip addr add "$cidr" dev "$tap"',
    'ip link set "$tap" up',
    'echo $$ > "$pidfile"',
    'exec "$@"',
].join("\n");

/**
 * Starts dnsmasq for the network in `networkDir` (0700), joined to the switch at `switchDir`,
 * and returns once it answers DHCP and DNS (its sockets are bound) or throws, leaving nothing
 * running. Anything a crashed earlier start left (a plug, a dnsmasq) is stopped first.
 */
export async function startDhcp(
    networkDir: string,
    switchDir: string,
    plan: DhcpPlan,
    opts: { timeoutMs?: number } = {},
): Promise<DhcpIdentity> {
    const p = dhcpPaths(networkDir);
    await stopDhcp(undefined, networkDir);
    await mkdir(p.dhcpDir, { mode: 0o700, recursive: true });
    for (const d of [p.hostsDir, p.dnsDir]) await mkdir(d, { mode: 0o700, recursive: true });
    await rm(p.pidfile, { force: true });
    await rm(p.plugPidfile, { force: true });
    // dnsmasq sets its own umask (022) before it opens the lease file: make it owner-only first.
    const lease = await open(p.leaseFile, "a", 0o600);
    await lease.chmod(0o600).finally(() => lease.close());
    const cidr = `${serverAddress(plan.subnet)}/${plan.subnet.prefix}`;
    const dnsmasq = dnsmasqArgv(
        { pidfile: p.pidfile, hostsDir: p.hostsDir, dnsDir: p.dnsDir, leaseFile: p.leaseFile },
        plan.subnet,
        plan.domain,
        TAP,
    );
    const argv = [
        "--user",
        "--map-root-user",
        "--net",
        "--",
        "sh",
        "-c",
        NAMESPACE_SCRIPT,
        "dhcp-namespace",
        p.pidfile,
        p.plugPidfile,
        switchDir,
        TAP,
        cidr,
        plan.mac,
        ...dnsmasq,
    ];
    const out = await open(p.logFile, "w", 0o600);
    const deadline = Date.now() + (opts.timeoutMs ?? 10_000);
    let exited: string | undefined;
    try {
        // detached: its own session, so it outlives this process and no terminal signal reaches it.
        const child = spawn("unshare", argv, { detached: true, stdio: ["ignore", out.fd, out.fd] });
        child.on(
            "error",
            (err) =>
                (exited =
                    (err as NodeJS.ErrnoException).code === "ENOENT"
                        ? `unshare was not found: ${APT_HINT}`
                        : String(err)),
        );
        child.on("exit", (code, sig) => (exited = `exited with ${code ?? sig}`));
        child.unref();
        while (Date.now() < deadline && exited === undefined) {
            const ids = await readyIdentity(p);
            if (ids) return ids;
            await sleep(20);
        }
    } finally {
        await out.close();
    }
    await stopDhcp(undefined, networkDir);
    const log = (await readFile(p.logFile, "utf8").catch(() => "")).trim().split("\n").slice(-5).join("\n");
    const why = exited ?? `was not answering within ${opts.timeoutMs ?? 10_000} ms`;
    throw new Error(
        `the DHCP/DNS server of ${networkDir} ${why}${log ? `: ${log}` : ""}${/not found|No such file/.test(log) ? `; ${APT_HINT}` : ""}`,
    );
}

/** Both processes identified, and dnsmasq's DNS (53) and DHCP (67) sockets bound in its namespace; else undefined. */
async function readyIdentity(p: DhcpPaths): Promise<DhcpIdentity | undefined> {
    const server = await identifyFrom(p.pidfile, "dnsmasq");
    const plug = await identifyFrom(p.plugPidfile, "vde_plug2tap");
    if (!server || !plug) return undefined;
    // /proc/PID/net/udp lists the sockets of that process's network namespace, not ours.
    const udp = await readFile(`/proc/${server.pid}/net/udp`, "utf8").catch(() => "");
    const ports = boundUdpPorts(udp);
    return ports.has(53) && ports.has(67) ? { server, plug } : undefined;
}

/** The process a pidfile names, when it is still `program` writing that pidfile. */
async function identifyFrom(pidfile: string, program: string): Promise<ProcessIdentity | undefined> {
    const pid = await readPidfile(pidfile);
    if (pid === undefined) return undefined;
    const cmd = await readCmdline(pid);
    if (!cmd || path.basename(cmd[0] ?? "") !== program || !cmd.includes(pidfile)) return undefined;
    return identify(pid);
}

/** The local UDP ports bound in a /proc/net/udp text (local_address is HEXADDR:HEXPORT). */
export function boundUdpPorts(procNetUdp: string): Set<number> {
    const ports = new Set<number>();
    for (const line of procNetUdp.split("\n")) {
        const m = /^\s*\d+:\s+[0-9A-Fa-f]+:([0-9A-Fa-f]{4})\s/.exec(line);
        if (m) ports.add(parseInt(m[1], 16));
    }
    return ports;
}

/** Whether both processes are still ours; the reason names the first that is not. */
export async function checkDhcp(id: DhcpIdentity, networkDir: string): Promise<Liveness> {
    const p = dhcpPaths(networkDir);
    const server = await checkOurDaemon(id.server, p.pidfile);
    if (!server.alive) return { alive: false, reason: `dnsmasq: ${server.reason.replace("QEMU", "dnsmasq")}` };
    const plug = await checkOurDaemon(id.plug, p.plugPidfile);
    if (!plug.alive)
        return { alive: false, reason: `its plug into the switch: ${plug.reason.replace("QEMU", "vde_plug2tap")}` };
    return { alive: true };
}

/**
 * Stops the network's dnsmasq and plug: those `id` names, and whatever the pidfiles name that is
 * still dnsmasq / vde_plug2tap writing them (what a crash left). Never signals anything else.
 */
export async function stopDhcp(id: DhcpIdentity | undefined, networkDir: string): Promise<void> {
    const p = dhcpPaths(networkDir);
    const targets: Array<[ProcessIdentity | undefined, string]> = [
        [id?.server, p.pidfile],
        [await identifyFrom(p.pidfile, "dnsmasq"), p.pidfile],
        // A shell that died before exec'ing dnsmasq leaves only the plug.
        [id?.plug, p.plugPidfile],
        [await identifyFrom(p.plugPidfile, "vde_plug2tap"), p.plugPidfile],
    ];
    for (const [identity, pidfile] of targets) if (identity) await stopIdentified(identity, pidfile);
}

/** SIGTERM, then SIGKILL, each only after checking the process is still ours; every wait bounded. */
async function stopIdentified(identity: ProcessIdentity, pidfile: string): Promise<void> {
    if (!(await checkOurDaemon(identity, pidfile)).alive) return;
    signal(identity.pid, "SIGTERM");
    if (await waitUntilGone(identity, pidfile, 3000)) return;
    if ((await checkOurDaemon(identity, pidfile)).alive) signal(identity.pid, "SIGKILL");
    if (!(await waitUntilGone(identity, pidfile, 5000)))
        throw new Error(`pid ${identity.pid} (${pidfile}) is still running after SIGKILL`);
}

function signal(pid: number, sig: NodeJS.Signals): void {
    try {
        process.kill(pid, sig);
    } catch {
        // Gone between the check and the signal: what we wanted.
    }
}

/** Makes dnsmasq forget removed host files (it picks up new and changed ones by itself). */
export async function reloadDhcp(id: DhcpIdentity, networkDir: string): Promise<boolean> {
    if (!(await checkOurDaemon(id.server, dhcpPaths(networkDir).pidfile)).alive) return false;
    signal(id.server.pid, "SIGHUP");
    return true;
}

/**
 * Registers one VM NIC with the network's DHCP and DNS: owner-only files written atomically
 * (dnsmasq must never read half a line). Works whether or not dnsmasq runs: it reads the
 * directories when it starts.
 */
export async function writeDhcpHost(networkDir: string, host: DhcpHost, domain: string): Promise<void> {
    const p = dhcpPaths(networkDir);
    const name = hostEntryName(host.mac);
    for (const d of [p.hostsDir, p.dnsDir]) await mkdir(d, { mode: 0o700, recursive: true });
    // DNS first: a guest that got its lease can resolve its peers' names at once.
    await writeFileAtomic(path.join(p.dnsDir, name), dnsHostLine(host, domain));
    await writeFileAtomic(path.join(p.hostsDir, name), dhcpHostLine(host));
}

/**
 * Ends a deleted VM's lease: dnsmasq answers a leased address's name from the lease itself, and a
 * reload never forgets leases. `dhcp_release` (dnsmasq-utils) sends the DHCPRELEASE the guest
 * never will, from inside the server's namespace (its owner may enter it, no root needed).
 * Best effort: a server that is gone has no lease to end.
 */
export async function releaseDhcpLease(
    id: DhcpIdentity,
    networkDir: string,
    host: Pick<DhcpHost, "mac" | "ipv4">,
): Promise<void> {
    if (!(await checkOurDaemon(id.server, dhcpPaths(networkDir).pidfile)).alive) return;
    const r = await runTool(
        "nsenter",
        [
            "--target",
            String(id.server.pid),
            "--user",
            "--net",
            "--preserve-credentials",
            "dhcp_release",
            TAP,
            host.ipv4,
            host.mac,
        ],
        { timeoutMs: 5000, label: "dhcp_release" },
    );
    if (r.exitCode !== 0)
        throw new Error(
            `dhcp_release ${host.ipv4} failed: ${(r.spawnError ?? r.stderr).trim()}; ${APT_HINT.replace("dnsmasq-base", "dnsmasq-base dnsmasq-utils")}`,
        );
}

/** Drops one VM NIC's entries; the caller reloads dnsmasq so that it forgets them. */
export async function removeDhcpHost(networkDir: string, mac: string): Promise<void> {
    const p = dhcpPaths(networkDir);
    const name = hostEntryName(mac);
    await rm(path.join(p.hostsDir, name), { force: true });
    await rm(path.join(p.dnsDir, name), { force: true });
}

/** The files a stopped server leaves, removed only where they are ours by name; the directory goes when empty. */
export async function removeDhcpFiles(networkDir: string): Promise<void> {
    const p = dhcpPaths(networkDir);
    for (const dir of [p.hostsDir, p.dnsDir]) {
        const names = await readdir(dir).catch(() => [] as string[]);
        await Promise.all(
            names.filter((n) => /^mac-[0-9a-f-]{17}$/.test(n)).map((n) => rm(path.join(dir, n), { force: true })),
        );
        await rmdir(dir).catch(() => undefined);
    }
    for (const f of [p.pidfile, p.plugPidfile, p.leaseFile, p.logFile]) await rm(f, { force: true });
    await rmdir(p.dhcpDir).catch(() => undefined);
}

function sleep(ms: number): Promise<void> {
    return new Promise((r) => setTimeout(r, ms));
}
