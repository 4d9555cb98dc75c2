import { mkdir, open, readdir, readFile, rm, rmdir } from "node:fs/promises";
import * as path from "node:path";
import { writeFileAtomic } from "../files/atomicFile";
import { checkOurSwitch } from "./vdeSwitch";
import { checkOurDaemon, identify, readPidfile, type ProcessIdentity } from "../qemu/qemuProcess";
import type { DhcpIdentity } from "./dhcpServer";

/**
 * What a Network leaves on disk for the VMs that join it, under `<stateDir>/networks/<id>/`:
 * `network.json` (its subnet, switch and the switch's identity) and `leases/`, one file per
 * address and per MAC taken on it. A lease is created with O_EXCL, so two VMs created at once
 * can never take one address; it names the VM directory that holds it, so a lease whose VM
 * directory is gone, or whose QEMU was killed (its pidfile names a process that is no longer
 * that QEMU), can be taken over.
 */

export interface NetworkRecord {
    format: 1;
    id: string;
    subnet: string;
    networkDir: string;
    switchDir: string;
    pidfile: string;
    switchIdentity: ProcessIdentity;
    /** The network's DHCP/DNS server, when it has one (`dhcp`): VMs register with it and reload it. */
    dhcp?: { domain: string; identity: DhcpIdentity };
}

export function networksDir(stateDir: string): string {
    return path.join(stateDir, "networks");
}

export function recordPath(networkDir: string): string {
    return path.join(networkDir, "network.json");
}

export async function writeNetworkRecord(record: NetworkRecord): Promise<void> {
    await writeFileAtomic(recordPath(record.networkDir), JSON.stringify(record, null, 2) + "\n", { durable: true });
}

/** The record of network `id` in `stateDir`, or undefined when there is none. */
export async function readNetworkRecord(stateDir: string, id: string): Promise<NetworkRecord | undefined> {
    return readRecordAt(path.join(networksDir(stateDir), id));
}

export async function readRecordAt(networkDir: string): Promise<NetworkRecord | undefined> {
    let text: string;
    try {
        text = await readFile(recordPath(networkDir), "utf8");
    } catch (err) {
        if ((err as NodeJS.ErrnoException).code === "ENOENT" || (err as NodeJS.ErrnoException).code === "ENOTDIR")
            return undefined;
        throw err;
    }
    const rec = JSON.parse(text) as NetworkRecord;
    if (rec.format !== 1)
        throw new Error(`${recordPath(networkDir)} has an unknown format ${JSON.stringify(rec.format)}`);
    return rec;
}

/** Networks in `stateDir` whose switch is still running, except `exceptId`. */
export async function liveNetworks(stateDir: string, exceptId?: string): Promise<NetworkRecord[]> {
    let names: string[];
    try {
        names = await readdir(networksDir(stateDir));
    } catch {
        return [];
    }
    const out: NetworkRecord[] = [];
    for (const name of names) {
        if (name === exceptId) continue;
        const rec = await readRecordAt(path.join(networksDir(stateDir), name)).catch(() => undefined);
        if (rec && (await checkOurSwitch(rec.switchIdentity, rec.pidfile)).alive) out.push(rec);
    }
    return out;
}

/** How VMs record which switch process they joined: boot id / pid / start time. */
export function identityString(identity: ProcessIdentity): string {
    return `${identity.bootId}/${identity.pid}/${identity.startTime}`;
}

/** Why network `id` is no longer the switch a VM joined (`joined`, an identityString), or undefined when it still is and runs. */
export async function switchProblem(
    rec: NetworkRecord | undefined,
    id: string,
    joined: string,
): Promise<string | undefined> {
    if (!rec) return `network ${id} no longer exists (its record is gone)`;
    if (identityString(rec.switchIdentity) !== joined) return `network ${id} was recreated since this VM joined it`;
    const live = await checkOurSwitch(rec.switchIdentity, rec.pidfile);
    return live.alive ? undefined : `the switch of network ${id} is gone (${live.reason})`;
}

export interface LeaseHolder {
    /** The VM's private directory: a lease whose holder directory is gone is stale. */
    vmDir: string;
    vm: string;
    /** The VM's QEMU pidfile: once it names a process that is not that QEMU, the lease is stale. */
    pidfile?: string;
    /** When the lease was taken (ms since the epoch): a VM that never wrote its pidfile gave up long ago. */
    takenAt?: number;
}

/** How long a holder may go without a pidfile (between taking its lease and QEMU starting, or a crash there). */
export const STARTING_GRACE_MS = 10 * 60 * 1000;

export function addressLease(address: string): string {
    return `ipv4-${address}`;
}

export function macLease(mac: string): string {
    return `mac-${mac.replace(/:/g, "-")}`;
}

function leasesDir(networkDir: string): string {
    return path.join(networkDir, "leases");
}

/**
 * Takes lease `key` for `holder`; returns undefined on success or the name of the VM that holds
 * it. A lease of a VM directory that no longer exists is taken over.
 */
export async function acquireLease(networkDir: string, key: string, holder: LeaseHolder): Promise<string | undefined> {
    const dir = leasesDir(networkDir);
    await mkdir(dir, { mode: 0o700, recursive: true });
    const file = path.join(dir, key);
    for (let attempt = 0; attempt < 2; attempt++) {
        try {
            const fh = await open(file, "wx", 0o600);
            try {
                await fh.writeFile(JSON.stringify({ takenAt: Date.now(), ...holder }));
            } finally {
                await fh.close();
            }
            return undefined;
        } catch (err) {
            if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
        }
        const other = await readHolder(file);
        if (other && other.vmDir === holder.vmDir) return undefined;
        if (other && (await holderAlive(other))) return other.vm;
        // Stale (its VM directory is gone) or half-written by a crash: take it over once.
        await rm(file, { force: true });
    }
    return (await readHolder(file))?.vm ?? "another VM";
}

/** Drops lease `key` if `vmDir` holds it (then true); a missing lease or network is fine. */
export async function releaseLease(networkDir: string, key: string, vmDir: string): Promise<boolean> {
    const file = path.join(leasesDir(networkDir), key);
    const holder = await readHolder(file);
    if (holder?.vmDir !== vmDir) return false;
    await rm(file, { force: true });
    return true;
}

/** Removes the leases directory of a network being deleted. */
export async function removeLeases(networkDir: string): Promise<void> {
    const dir = leasesDir(networkDir);
    const names = await readdir(dir).catch(() => [] as string[]);
    await Promise.all(
        names.filter((n) => /^(ipv4|mac)-[0-9a-f.-]+$/.test(n)).map((n) => rm(path.join(dir, n), { force: true })),
    );
    await rmdir(dir).catch(() => undefined);
}

async function readHolder(file: string): Promise<LeaseHolder | undefined> {
    try {
        const h = JSON.parse(await readFile(file, "utf8")) as LeaseHolder;
        return typeof h.vmDir === "string" ? h : undefined;
    } catch {
        return undefined;
    }
}

/**
 * A holder is alive while its directory exists and its QEMU has not died. No pidfile yet means
 * it is starting (the lease is taken before QEMU runs), so it counts as alive for a while: a
 * create that crashed there never comes back for it.
 */
async function holderAlive(h: LeaseHolder): Promise<boolean> {
    if (!(await exists(h.vmDir))) return false;
    if (!h.pidfile) return true;
    const pid = await readPidfile(h.pidfile);
    if (pid === undefined) return h.takenAt === undefined || Date.now() - h.takenAt < STARTING_GRACE_MS;
    const id = await identify(pid);
    return id !== undefined && (await checkOurDaemon(id, h.pidfile)).alive;
}

async function exists(p: string): Promise<boolean> {
    try {
        await readdir(p);
        return true;
    } catch (err) {
        return (err as NodeJS.ErrnoException).code !== "ENOENT";
    }
}
