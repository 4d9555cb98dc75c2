import { identify, readBootId, readProcStat, type ProcessIdentity } from "../qemu/qemuProcess";

/**
 * The process doing a create, recorded before it acts: if it is killed half-way, whatever it
 * left is provably a leftover once this identity names no live process, and the next run may
 * clean it. Identity is pid, start time and boot, as for QEMU, so a reused pid is not mistaken
 * for the creator still at work.
 */

let self: Promise<ProcessIdentity> | undefined;

export function selfIdentity(): Promise<ProcessIdentity> {
    self ??= identify(process.pid).then((id) => {
        if (!id) throw new Error("cannot read this process's own /proc entry");
        return id;
    });
    return self;
}

/** Whether the process `id` names still runs (a zombie counts as gone). */
export async function stillRunning(id: ProcessIdentity): Promise<boolean> {
    if ((await readBootId()) !== id.bootId) return false;
    const st = await readProcStat(id.pid);
    return st !== undefined && st.startTime === id.startTime && st.state !== "Z" && st.state !== "X";
}

export function isProcessIdentity(v: unknown): v is ProcessIdentity {
    const r = v as Partial<ProcessIdentity> | null;
    return (
        typeof r === "object" &&
        r !== null &&
        Number.isSafeInteger(r.pid) &&
        typeof r.startTime === "string" &&
        typeof r.bootId === "string"
    );
}
