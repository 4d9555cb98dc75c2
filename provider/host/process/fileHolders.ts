import { readdir, readlink, realpath } from "node:fs/promises";
import { readCmdline } from "../qemu/qemuProcess";

/**
 * Which processes hold a file open, read from /proc/PID/fd: to name the QEMU that keeps a disk
 * locked rather than pass on QEMU's "Failed to get write lock", which says nothing of who.
 * Only processes this user may look into are seen (root sees all).
 */

export interface FileHolder {
    pid: number;
    argv: string[];
}

export async function processesHolding(file: string): Promise<FileHolder[]> {
    const target = await realpath(file).catch(() => file);
    const holders: FileHolder[] = [];
    for (const entry of await readdir("/proc")) {
        if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
        const fds = await readdir(`/proc/${entry}/fd`).catch(() => [] as string[]);
        for (const fd of fds) {
            if ((await readlink(`/proc/${entry}/fd/${fd}`).catch(() => "")) !== target) continue;
            holders.push({ pid: Number(entry), argv: (await readCmdline(Number(entry))) ?? [] });
            break;
        }
    }
    return holders;
}
