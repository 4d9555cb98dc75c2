import { existsSync } from "node:fs";
import { readdir, readFile, rm } from "node:fs/promises";
import * as path from "node:path";
import { openRecord, sealRecord, snapshotMismatch, type SnapshotRecord } from "../../core/snapshotRules";
import { writeFileAtomic } from "../files/atomicFile";
import { withQmp } from "./qmp";
import { migrationBlockers, queryBlock, runJob, saveTag, SnapshotError, writableDisks } from "./snapshots";
import { ensureOwnDir, isOwnFileSync, ownDirChain } from "../files/stateDir";

/**
 * `VirtualMachine.warmStart`: one snapshot per VM identity, taken once the VM is ready and
 * restored the next time the provider starts that same VM (after refresh found it dead, or a
 * replace that ends with the same argv and disks). It is keyed by the argvHash, which holds the
 * disks' input hashes, so a changed disk or argv never restores a stale state; the record lives
 * in `<stateDir>/warm/<argvHash>.json` (owner-only) rather than in the VM's directory, because
 * the directory goes with the VM that is being replaced. The data are the qcow2 tag `pq-warm`
 * inside the VM's writable disks, so they go with those disks.
 */

export const WARM_TAG = "pq-warm";
const WARM_NAME = "warm";

export interface WarmTarget {
    qmpSocket: string;
    /** The resolved state directory. */
    stateDir: string;
    argvHash: string;
}

function warmFile(t: WarmTarget): string {
    return path.join(t.stateDir, "warm", `${t.argvHash}.json`);
}

/**
 * In a QEMU just started from the launcher: restores the warm snapshot when a valid one exists.
 * Returns why not otherwise (undefined: there was none, so a cold boot is expected).
 * A failed load (not a refusal) throws: the guest's state is then unknown.
 */
export async function tryWarmRestore(
    t: WarmTarget,
    timeoutMs: number,
): Promise<{ restored: true; loadMs: number } | { restored: false; why?: string }> {
    const file = warmFile(t);
    if (!isOwnFileSync(file)) return { restored: false };
    const opened = openRecord(await readFile(file, "utf8").catch(() => ""));
    if ("problem" in opened) return { restored: false, why: `the warm snapshot is damaged (${opened.problem})` };
    const record = opened.record;
    if (record.argvHash !== t.argvHash || record.tag !== WARM_TAG)
        return { restored: false, why: "the warm snapshot's record belongs to another VM identity" };
    return withQmp(t.qmpSocket, timeoutMs + 10_000, async (qmp) => {
        const nodes = await queryBlock(qmp);
        const mismatch = snapshotMismatch(record, new Map(nodes.map((n) => [n.file, n.snapshots])));
        if (mismatch) return { restored: false, why: `the warm snapshot is damaged (${mismatch})` };
        const byFile = new Map(nodes.map((n) => [n.file, n.node]));
        const started = Date.now();
        await runJob(
            qmp,
            "snapshot-load",
            {
                tag: WARM_TAG,
                vmstate: byFile.get(record.vmstateFile),
                devices: record.disks.map((d) => byFile.get(d.file)),
            },
            timeoutMs,
        );
        return { restored: true as const, loadMs: Date.now() - started };
    });
}

/** Takes (or retakes) the warm snapshot of a VM that is ready. */
export async function saveWarm(t: WarmTarget, timeoutMs: number): Promise<void> {
    await withQmp(t.qmpSocket, timeoutMs + 10_000, async (qmp) => {
        const blocked = await migrationBlockers(qmp);
        if (blocked.length)
            throw new SnapshotError(`warmStart: QEMU cannot save this VM's state: ${blocked.join("; ")}`);
        const disks = writableDisks(await queryBlock(qmp));
        // A stale warm tag (from an earlier identity, or a damaged one) is ours: replace it.
        const stale = disks.filter((d) => d.snapshots.some((s) => s.name === WARM_TAG));
        if (stale.length)
            await runJob(qmp, "snapshot-delete", { tag: WARM_TAG, devices: stale.map((d) => d.node) }, timeoutMs);
        const { saveMs, saved } = await saveTag(qmp, disks, WARM_TAG, timeoutMs);
        const record: SnapshotRecord = {
            tool: "pulumi-qemu",
            kind: "snapshot",
            version: 1,
            name: WARM_NAME,
            tag: WARM_TAG,
            createdAt: new Date().toISOString(),
            argvHash: t.argvHash,
            vmstateFile: disks[0].file,
            disks: saved,
            saveMs,
        };
        await ensureOwnDir(path.dirname(warmFile(t)));
        await writeFileAtomic(warmFile(t), sealRecord(record), { durable: true });
    });
}

/**
 * Forgets warm snapshots whose disks are gone (their data went with them) or whose records are
 * damaged: the records would otherwise pile up in the state directory as disks come and go.
 */
export async function pruneWarmRecords(stateDir: string): Promise<string[]> {
    const dir = path.join(stateDir, "warm");
    if (!(await ownDirChain(stateDir, dir)).ok) return [];
    const pruned: string[] = [];
    for (const n of (await readdir(dir).catch(() => [] as string[])).filter((x) => /^[0-9a-f]{64}\.json$/.test(x))) {
        const file = path.join(dir, n);
        if (!isOwnFileSync(file)) continue;
        const opened = openRecord(await readFile(file, "utf8").catch(() => ""));
        if ("record" in opened && opened.record.disks.every((d) => existsSync(d.file))) continue;
        await rm(file, { force: true });
        pruned.push(n);
    }
    return pruned;
}
