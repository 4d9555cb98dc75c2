import { chmod, readdir, rm, rmdir, lstat } from "node:fs/promises";
import * as path from "node:path";
import {
    checkOurDaemon,
    QemuStartError,
    startDaemonized,
    waitUntilGone,
    type Liveness,
    type ProcessIdentity,
} from "../qemu/qemuProcess";

/**
 * The `vde_switch` behind a Network (Debian's vde2): a user-space Ethernet switch whose
 * control directory is the attachment point QEMU's `-netdev vde,sock=` connects to.
 *
 * Privacy comes from the file system: the switch's directory is created 0700 (`--dirmode`) and
 * its sockets 0600 (`--mode`), inside a network directory that is 0700 too, so only this user
 * can connect, listen or inject. The process is managed like QEMU: started daemonized with a
 * pidfile, remembered by pid + start time + boot id, and recognised by its command line naming
 * that pidfile (the same checks as provider/host/qemu/qemuProcess.ts, which are not QEMU-specific).
 */

export const VDE_SWITCH = "vde_switch";
const APT_HINT = "install Debian's vde2 package (apt-get install vde2)";

export interface SwitchPaths {
    /** The control directory VMs attach to. */
    switchDir: string;
    pidfile: string;
    /** The management console's socket (owner-only), for partitions (host/switchControl.ts). */
    mgmt: string;
}

export function switchPaths(networkDir: string): SwitchPaths {
    return {
        switchDir: path.join(networkDir, "switch"),
        pidfile: path.join(networkDir, "switch.pid"),
        mgmt: path.join(networkDir, "mgmt"),
    };
}

/** Starts a switch for `networkDir` (which must exist, 0700) and returns its identity. */
export async function startSwitch(networkDir: string, opts: { timeoutMs?: number } = {}): Promise<ProcessIdentity> {
    const { switchDir, pidfile, mgmt } = switchPaths(networkDir);
    const argv = [
        VDE_SWITCH,
        "--daemon",
        "--sock",
        switchDir,
        "--pidfile",
        pidfile,
        "--dirmode",
        "0700",
        "--mode",
        "0600",
        "--mgmt",
        mgmt,
        "--mgmtmode",
        "0600",
    ];
    try {
        const identity = await startDaemonized(argv, pidfile, { timeoutMs: opts.timeoutMs ?? 10000 });
        // vde_switch writes its pidfile with the umask (0644 as a rule): the state directory's files are the owner's alone.
        await chmod(pidfile, 0o600);
        return identity;
    } catch (err) {
        const e = err as NodeJS.ErrnoException & { stderr?: string };
        if (e.code === "ENOENT" || /ENOENT/.test(String(e.message)))
            throw new Error(`${VDE_SWITCH} was not found: ${APT_HINT}`);
        if (err instanceof QemuStartError)
            throw new Error(`${VDE_SWITCH} could not start in ${networkDir}: ${err.message}`);
        throw err;
    }
}

/** Whether `identity` is still our switch (same boot, pid, start time, and its command line names our pidfile). */
export function checkOurSwitch(identity: ProcessIdentity, pidfile: string): Promise<Liveness> {
    return checkOurDaemon(identity, pidfile);
}

/** SIGTERM, then SIGKILL, each only after checking the process is still our switch; every wait bounded. */
export async function stopSwitch(
    identity: ProcessIdentity,
    pidfile: string,
    opts: { termMs?: number; killMs?: number } = {},
): Promise<"not-running" | "term" | "kill"> {
    if (!(await checkOurSwitch(identity, pidfile)).alive) return "not-running";
    signal(identity.pid, "SIGTERM");
    if (await waitUntilGone(identity, pidfile, opts.termMs ?? 3000)) return "term";
    if ((await checkOurSwitch(identity, pidfile)).alive) signal(identity.pid, "SIGKILL");
    if (await waitUntilGone(identity, pidfile, opts.killMs ?? 5000)) return "kill";
    throw new Error(`${VDE_SWITCH} pid ${identity.pid} is still running after SIGKILL`);
}

function signal(pid: number, sig: NodeJS.Signals): void {
    try {
        process.kill(pid, sig);
    } catch {
        // Gone between the check and the signal: what we wanted.
    }
}

/**
 * Removes what a stopped switch leaves: its pidfile, and in its directory the control socket
 * and the per-port sockets libvdeplug names `.NNNNN-NNNNN` and the switch `NNN.FD`. Anything else keeps the directory.
 */
export async function removeSwitchFiles(networkDir: string): Promise<void> {
    const { switchDir, pidfile, mgmt } = switchPaths(networkDir);
    await rm(pidfile, { force: true });
    if ((await lstat(mgmt).catch(() => undefined))?.isSocket()) await rm(mgmt, { force: true });
    let entries: string[];
    try {
        entries = await readdir(switchDir);
    } catch {
        return;
    }
    for (const name of entries) {
        // QEMU's libvdeplug names its socket `.PID-N`; the switch's per-port data sockets are NNN.FD
        // (001.5, which a killed switch leaves behind), vde_plug2tap's (the DHCP server's plug) NNN.N.
        if (name !== "ctl" && !/^\.\d+-\d+$/.test(name) && !/^\d+\.\d+$/.test(name)) continue;
        const st = await lstat(path.join(switchDir, name)).catch(() => undefined);
        if (st?.isSocket()) await rm(path.join(switchDir, name), { force: true });
    }
    await rmdir(switchDir).catch(() => undefined);
}
