import { readdir, readFile, rm, rmdir } from "node:fs/promises";
import * as path from "node:path";
import {
    openRecord,
    sealRecord,
    snapshotMismatch,
    snapshotNameProblem,
    snapshotProblems,
    snapshotTag,
    SNAPSHOT_TAG_PREFIX,
    type QemuSnapshotInfo,
    type SnapshotRecord,
} from "../../core/snapshotRules";
import { parseVmSpec } from "../../core/vmSpec";
import { writeFileAtomic } from "../files/atomicFile";
import { QmpClient, withQmp } from "./qmp";
import { ensureOwnDir, isOwnFileSync, ownDirChain } from "../files/stateDir";
import { runTool } from "../process/toolRun";

/**
 * Snapshots of a running VM: memory, devices and disks saved together and put back together,
 * for fast resets in tests. The rules and the record format are in core/snapshotRules.ts; this
 * drives QEMU's snapshot-save/-load/-delete jobs over QMP and keeps a checksummed record of each
 * snapshot in `<vmDir>/snapshots/` (owner-only). The disk and memory data live as internal
 * snapshots inside the VM's writable qcow2 files, so nothing is copied; they are deleted with
 * the snapshot, and with the VM.
 */

/** The VirtualMachine outputs snapshots need. */
export interface SnapshotTarget {
    qmpSocket: string;
    vmDir?: string;
    vm?: unknown;
    argvHash?: string;
}

export interface SnapshotInfo {
    name: string;
    createdAt: string;
    /** Bytes of memory and device state saved. */
    vmStateBytes: number;
    /** Why the snapshot cannot be restored (its record was damaged), when it cannot. */
    damaged?: string;
}

export class SnapshotError extends Error {
    constructor(message: string) {
        super(message);
        this.name = "SnapshotError";
    }
}

export const DEFAULT_SNAPSHOT_TIMEOUT_SECONDS = 120;
const JOB_POLL_MS = 50;
const SNAPSHOTS_DIR = "snapshots";

interface BlockNode {
    device: string;
    node: string;
    file: string;
    format: string;
    readOnly: boolean;
    snapshots: QemuSnapshotInfo[];
}

/** Saves the running guest as `name`. Refuses, having written nothing, what it cannot restore faithfully. */
export async function saveSnapshot(
    target: SnapshotTarget,
    name: string,
    opts: { timeoutSeconds?: number } = {},
): Promise<SnapshotInfo> {
    const dir = snapshotsDir(target);
    refuseBadName(name);
    refuseBySpec(target);
    const file = recordFile(dir, name);
    if (isOwnFileSync(file))
        throw new SnapshotError(
            `snapshot ${name} already exists; deleteSnapshot(${JSON.stringify(name)}) first to take it again`,
        );
    const timeoutMs = (opts.timeoutSeconds ?? DEFAULT_SNAPSHOT_TIMEOUT_SECONDS) * 1000;
    const tag = snapshotTag(name);
    return withQmp(target.qmpSocket, timeoutMs + 10_000, async (qmp) => {
        const blocked = await migrationBlockers(qmp);
        if (blocked.length)
            throw new SnapshotError(`QEMU cannot save this VM's state: ${blocked.join("; ")}. Nothing was written`);
        const disks = writableDisks(await queryBlock(qmp));
        for (const d of disks) {
            if (d.snapshots.some((s) => s.name === tag)) {
                throw new SnapshotError(
                    `disk ${d.file} already holds a qcow2 snapshot ${tag} with no record of it (left by an interrupted save?); deleteSnapshot(${JSON.stringify(name)}) removes it`,
                );
            }
        }
        const { saveMs, saved } = await saveTag(qmp, disks, tag, timeoutMs);
        const record: SnapshotRecord = {
            tool: "pulumi-qemu",
            kind: "snapshot",
            version: 1,
            name,
            tag,
            createdAt: new Date().toISOString(),
            ...(target.argvHash ? { argvHash: target.argvHash } : {}),
            vmstateFile: disks[0].file,
            disks: saved,
            saveMs,
        };
        await ensureOwnDir(dir);
        await writeFileAtomic(file, sealRecord(record), { durable: true });
        return infoOf(record);
    });
}

/**
 * Saves the guest as qcow2 snapshot `tag` on every disk of `disks`, its memory and devices on the
 * first, and returns each disk's snapshot as QEMU then lists it, for the record. A save that
 * failed half-way may have left the tag on some disks: it is taken off again. Named snapshots
 * and warmStart's both save this way.
 */
export async function saveTag(
    qmp: QmpClient,
    disks: BlockNode[],
    tag: string,
    timeoutMs: number,
): Promise<{ saveMs: number; saved: SnapshotRecord["disks"] }> {
    const devices = disks.map((d) => d.node);
    const started = Date.now();
    try {
        await runJob(qmp, "snapshot-save", { tag, vmstate: disks[0].node, devices }, timeoutMs);
    } catch (err) {
        await runJob(qmp, "snapshot-delete", { tag, devices }, 30_000).catch(() => undefined);
        throw err;
    }
    const saveMs = Date.now() - started;
    const saved = writableDisks(await queryBlock(qmp)).map((d) => {
        const s = d.snapshots.find((x) => x.name === tag);
        if (!s) throw new SnapshotError(`snapshot-save reported success but disk ${d.file} has no snapshot ${tag}`);
        return {
            file: d.file,
            id: s.id,
            dateSec: s["date-sec"],
            dateNsec: s["date-nsec"],
            vmStateSize: s["vm-state-size"],
        };
    });
    return { saveMs, saved };
}

/** Puts the guest back as it was at `name`: memory, devices and disks. It runs on from there. */
export async function restoreSnapshot(
    target: SnapshotTarget,
    name: string,
    opts: { timeoutSeconds?: number } = {},
): Promise<{ loadMs: number }> {
    refuseBadName(name);
    const record = await readRecord(snapshotsDir(target), name);
    if (record.argvHash && target.argvHash && record.argvHash !== target.argvHash) {
        throw new SnapshotError(
            `snapshot ${name} was taken of a VM with another argv (argvHash ${record.argvHash.slice(0, 12)}…, this one ${target.argvHash.slice(0, 12)}…); it cannot be restored here`,
        );
    }
    const timeoutMs = (opts.timeoutSeconds ?? DEFAULT_SNAPSHOT_TIMEOUT_SECONDS) * 1000;
    return withQmp(target.qmpSocket, timeoutMs + 10_000, async (qmp) => {
        const nodes = await queryBlock(qmp);
        const listed = new Map(nodes.map((n) => [n.file, n.snapshots]));
        const mismatch = snapshotMismatch(record, listed);
        if (mismatch)
            throw new SnapshotError(
                `snapshot ${name} is damaged and was not restored: ${mismatch}. deleteSnapshot(${JSON.stringify(name)}) and take it again`,
            );
        const byFile = new Map(nodes.map((n) => [n.file, n.node]));
        const started = Date.now();
        await runJob(
            qmp,
            "snapshot-load",
            {
                tag: record.tag,
                vmstate: byFile.get(record.vmstateFile),
                devices: record.disks.map((d) => byFile.get(d.file)),
            },
            timeoutMs,
        );
        return { loadMs: Date.now() - started };
    });
}

/** Deletes `name`: its qcow2 snapshots and its record. A damaged snapshot is deleted too. */
export async function deleteSnapshot(
    target: SnapshotTarget,
    name: string,
    opts: { timeoutSeconds?: number } = {},
): Promise<void> {
    refuseBadName(name);
    const dir = snapshotsDir(target);
    const file = recordFile(dir, name);
    const tag = snapshotTag(name);
    await withQmp(
        target.qmpSocket,
        (opts.timeoutSeconds ?? DEFAULT_SNAPSHOT_TIMEOUT_SECONDS) * 1000 + 10_000,
        async (qmp) => {
            const holding = (await queryBlock(qmp)).filter(
                (n) => !n.readOnly && n.snapshots.some((s) => s.name === tag),
            );
            const hasRecord = isOwnFileSync(file);
            if (!holding.length && !hasRecord)
                throw new SnapshotError(
                    `there is no snapshot ${name} (snapshots: ${(await listRecords(dir)).map((s) => s.name).join(", ") || "none"})`,
                );
            if (holding.length)
                await runJob(
                    qmp,
                    "snapshot-delete",
                    { tag, devices: holding.map((n) => n.node) },
                    (opts.timeoutSeconds ?? DEFAULT_SNAPSHOT_TIMEOUT_SECONDS) * 1000,
                );
        },
    );
    if (isOwnFileSync(file)) await rm(file, { force: true });
}

/** The snapshots recorded for this VM, oldest first; a damaged record is listed with why. */
export async function listSnapshots(target: SnapshotTarget): Promise<SnapshotInfo[]> {
    return listRecords(snapshotsDir(target));
}

/**
 * With the VM's QEMU stopped: deletes this VM's snapshots — every `pq-snap-` tag in its
 * writable qcow2 files (`diskFiles`, from its spec, and the files its records name), which also
 * catches a tag left by an interrupted save or a damaged record — and then the records.
 * warmStart's `pq-warm` is left alone: it outlives the VM on purpose. Best effort: a disk
 * already gone is fine.
 */
export async function removeSnapshotsOf(
    vmDir: string,
    opts: { qemuImg?: string; diskFiles?: string[] } = {},
): Promise<void> {
    const qemuImg = opts.qemuImg ?? "qemu-img";
    const dir = path.join(vmDir, SNAPSHOTS_DIR);
    const ours = (await ownDirChain(path.dirname(path.dirname(vmDir)), dir)).ok;
    const records = ours
        ? (await readdir(dir).catch(() => [] as string[]))
              .filter((x) => x.endsWith(".json"))
              .map((n) => path.join(dir, n))
              .filter(isOwnFileSync)
        : [];
    const files = new Set(opts.diskFiles ?? []);
    for (const file of records) {
        const opened = openRecord(await readFile(file, "utf8").catch(() => ""));
        if ("record" in opened) for (const d of opened.record.disks) files.add(d.file);
    }
    const run = (args: string[]) => runTool(qemuImg, args, { timeoutMs: 60_000, label: `qemu-img ${args.join(" ")}` });
    for (const f of files) {
        const listed = await run(["snapshot", "-l", f]).catch(() => undefined);
        if (!listed || listed.exitCode !== 0) continue;
        const tags = listed.stdout
            .split("\n")
            .slice(2)
            .map((l) => l.trim().split(/\s+/)[1])
            .filter((t) => t?.startsWith(SNAPSHOT_TAG_PREFIX));
        for (const tag of new Set(tags)) await run(["snapshot", "-d", tag, f]).catch(() => undefined);
    }
    for (const file of records) await rm(file, { force: true });
    if (ours) await rmdir(dir).catch(() => undefined);
}

function snapshotsDir(target: SnapshotTarget): string {
    if (typeof target.vmDir !== "string")
        throw new SnapshotError(
            "snapshots need the VM's vmDir output (pass a VirtualMachine's outputs): they are recorded in its directory",
        );
    return path.join(target.vmDir, SNAPSHOTS_DIR);
}

function recordFile(dir: string, name: string): string {
    return path.join(dir, `${name}.json`);
}

function refuseBadName(name: string): void {
    const problem = snapshotNameProblem(name);
    if (problem) throw new SnapshotError(problem);
}

function refuseBySpec(target: SnapshotTarget): void {
    if (target.vm === undefined) return;
    const problems = snapshotProblems(parseVmSpec(target.vm, "vm"));
    if (problems.length)
        throw new SnapshotError(
            `this VM cannot be snapshotted, nothing was written: ${problems.map((p) => `${p.property}: ${p.reason}`).join("; ")}`,
        );
}

async function readRecord(dir: string, name: string): Promise<SnapshotRecord> {
    const file = recordFile(dir, name);
    if (!isOwnFileSync(file))
        throw new SnapshotError(
            `there is no snapshot ${name} (snapshots: ${(await listRecords(dir)).map((s) => s.name).join(", ") || "none"})`,
        );
    const opened = openRecord(await readFile(file, "utf8"));
    if ("problem" in opened)
        throw new SnapshotError(
            `snapshot ${name} is damaged and was not restored: ${opened.problem}. deleteSnapshot(${JSON.stringify(name)}) and take it again`,
        );
    if (opened.record.name !== name)
        throw new SnapshotError(
            `snapshot ${name} is damaged and was not restored: its record names ${opened.record.name}`,
        );
    return opened.record;
}

async function listRecords(dir: string): Promise<SnapshotInfo[]> {
    const names = await readdir(dir).catch(() => [] as string[]);
    const out: SnapshotInfo[] = [];
    for (const n of names.filter((x) => x.endsWith(".json"))) {
        const file = path.join(dir, n);
        if (!isOwnFileSync(file)) continue;
        const opened = openRecord(await readFile(file, "utf8").catch(() => ""));
        const name = n.slice(0, -".json".length);
        out.push(
            "record" in opened
                ? infoOf(opened.record)
                : { name, createdAt: "", vmStateBytes: 0, damaged: opened.problem },
        );
    }
    return out.sort((a, b) => a.createdAt.localeCompare(b.createdAt) || a.name.localeCompare(b.name));
}

function infoOf(r: SnapshotRecord): SnapshotInfo {
    return { name: r.name, createdAt: r.createdAt, vmStateBytes: r.disks.reduce((sum, d) => sum + d.vmStateSize, 0) };
}

/** Why QEMU would refuse to save this VM's state right now (query-migrate's blocked-reasons). */
export async function migrationBlockers(qmp: QmpClient): Promise<string[]> {
    const info = (await qmp.execute("query-migrate")) as { "blocked-reasons"?: string[] };
    return info["blocked-reasons"] ?? [];
}

export async function queryBlock(qmp: QmpClient): Promise<BlockNode[]> {
    const devices = (await qmp.execute("query-block")) as Array<{
        device: string;
        inserted?: {
            "node-name": string;
            file: string;
            ro: boolean;
            drv: string;
            image?: { filename: string; format: string; snapshots?: QemuSnapshotInfo[] };
        };
    }>;
    return devices
        .filter((d) => d.inserted)
        .map((d) => {
            const i = d.inserted!;
            return {
                device: d.device,
                node: i["node-name"],
                file: i.image?.filename ?? i.file,
                format: i.drv,
                readOnly: i.ro,
                snapshots: i.image?.snapshots ?? [],
            };
        });
}

/** The writable disks, every one of which must be qcow2 (checked here too: extraArgs may add drives the spec does not show). */
export function writableDisks(nodes: BlockNode[]): BlockNode[] {
    const writable = nodes.filter((n) => !n.readOnly);
    const raw = writable.filter((n) => n.format !== "qcow2");
    if (raw.length) {
        throw new SnapshotError(
            `writable disk ${raw.map((n) => `${n.file} (${n.format})`).join(", ")} cannot hold an internal snapshot; give it a qcow2 overlay or make it read-only. Nothing was written`,
        );
    }
    if (!writable.length) {
        throw new SnapshotError(
            'the VM\'s memory and device state is saved inside a writable qcow2 disk and this VM has none; add one to vm.disks, e.g. a small blank qcow2 DiskImage (source: { blank: { size: "64M", format: "qcow2" } }). Nothing was written',
        );
    }
    return writable;
}

/**
 * Runs a QMP job command and polls query-jobs until it concludes, within `timeoutMs`; a job
 * still running at the deadline is cancelled and reported, never waited on forever.
 */
export async function runJob(
    qmp: QmpClient,
    command: string,
    args: Record<string, unknown>,
    timeoutMs: number,
): Promise<void> {
    const id = `pq-${command}-${Date.now().toString(36)}`;
    const deadline = Date.now() + timeoutMs;
    await qmp.execute(command, { "job-id": id, ...args }, { timeoutMs: Math.max(1000, deadline - Date.now()) });
    for (;;) {
        const jobs = (await qmp.execute("query-jobs", undefined, {
            timeoutMs: Math.max(1000, deadline - Date.now()),
        })) as Array<{ id: string; status: string; error?: string }>;
        const job = jobs.find((j) => j.id === id);
        if (!job) throw new SnapshotError(`QMP ${command}: job ${id} disappeared before it concluded`);
        if (job.status === "concluded" || job.status === "null") {
            await qmp.execute("job-dismiss", { id }).catch(() => undefined);
            if (job.error) throw new SnapshotError(`QMP ${command} failed: ${job.error}`);
            return;
        }
        if (Date.now() >= deadline) {
            await qmp.execute("job-cancel", { id }).catch(() => undefined);
            throw new SnapshotError(
                `QMP ${command} did not finish within ${Math.round(timeoutMs / 1000)} s (job ${id} was ${job.status}); it was cancelled`,
            );
        }
        await new Promise((r) => setTimeout(r, JOB_POLL_MS));
    }
}
