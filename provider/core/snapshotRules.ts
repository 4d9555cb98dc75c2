import { hashValue } from "./hash";
import type { FieldProblem } from "./validation";
import type { VmSpec } from "./vmSpec";

/**
 * What a snapshot of a running VM needs, judged from its spec before anything is written.
 *
 * Design: a snapshot is QEMU's own `snapshot-save` job (QMP, QEMU ≥ 6.0): the guest is paused,
 * an internal qcow2 snapshot named by `tag` is taken of every writable disk at that instant, and
 * the memory and device state (vmstate) is written into one of those qcow2 files; then the
 * guest runs on. `snapshot-load` pauses it and puts disks and memory back together. Disk and
 * memory therefore always match — one job, one pause, one tag on every writable disk — and
 * nothing is copied: a snapshot costs the guest's used memory plus the disk blocks written since.
 *
 * It follows that every writable disk must be qcow2 (raw files hold no internal snapshots), that
 * there must be one to hold the vmstate, that writes must reach those files (volatile's
 * `snapshot=on` writes to a temporary layer QEMU throws away), and that nothing blocks migration
 * (virtio-9p with a mounted export does: its state lives on the host's filesystem, not in QEMU).
 */

/** The spec-level reasons a VM cannot be snapshotted, each naming the field and the way out. */
export function snapshotProblems(spec: VmSpec, root = "vm"): FieldProblem[] {
    const problems: FieldProblem[] = [];
    if (spec.shares.length) {
        problems.push({
            property: `${root}.shares`,
            reason: "a virtio-9p share blocks QEMU from saving the VM's state (a mounted export's state lives in the host's filesystem, not in QEMU); snapshots need a VM without shares — bring files in with copyToGuest or a DiskImage instead",
        });
    }
    if (spec.volatile) {
        problems.push({
            property: `${root}.volatile`,
            reason: "a volatile VM writes to a temporary layer QEMU throws away (snapshot=on), which holds no snapshot; drop volatile and give writable disks a qcow2 overlay instead",
        });
    }
    if (spec.firmware === "uefi") {
        problems.push({
            property: `${root}.firmware`,
            reason: 'OVMF\'s variable store is a raw flash image the guest writes to, which holds no internal snapshot, so QEMU refuses to save the VM; snapshots need firmware "bios"',
        });
    }
    spec.disks.forEach((disk, i) => {
        if (!disk.readOnly && !disk.overlay && disk.format !== "qcow2") {
            problems.push({
                property: `${root}.disks[${i}]`,
                reason: `a writable ${disk.format} disk cannot hold an internal snapshot, so its state could not be restored with the memory; give it an overlay (qcow2), make it readOnly, or use a qcow2 image`,
            });
        }
    });
    if (!spec.volatile && !spec.disks.some((d) => !d.readOnly && (d.overlay || d.format === "qcow2"))) {
        problems.push({
            property: `${root}.disks`,
            reason: 'the VM\'s memory and device state is saved inside a writable qcow2 disk and this VM has none; add one, e.g. a small blank qcow2 DiskImage (source: { blank: { size: "64M", format: "qcow2" } }) in vm.disks',
        });
    }
    return problems;
}

const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

/** A snapshot name is a file name in the VM's directory and part of a qcow2 tag: kept plain. */
export function snapshotNameProblem(name: unknown): string | undefined {
    if (typeof name !== "string" || !NAME_RE.test(name)) {
        return `snapshot name must be 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit (got ${JSON.stringify(name)})`;
    }
    return undefined;
}

/** Tags of the test API's snapshots start so; warmStart's tag (`pq-warm`) is another. */
export const SNAPSHOT_TAG_PREFIX = "pq-snap-";

/** The qcow2 snapshot tag of a snapshot name; the prefix marks the tags the provider made. */
export function snapshotTag(name: string): string {
    return `${SNAPSHOT_TAG_PREFIX}${name}`;
}

/** One disk's part of a snapshot, as QEMU reported it right after the save. */
export interface SnapshotDisk {
    /** The image file (the overlay, or the qcow2 disk itself). */
    file: string;
    /** The qcow2 snapshot's id and time stamp: a same-named snapshot made later differs in them. */
    id: string;
    dateSec: number;
    dateNsec: number;
    vmStateSize: number;
}

/** What is kept outside qcow2 (`snapshots/<name>.json` in the VM's directory). */
export interface SnapshotRecord {
    tool: "pulumi-qemu";
    kind: "snapshot";
    version: 1;
    name: string;
    tag: string;
    createdAt: string;
    /** The VM identity it belongs to; a snapshot never restores into another argv. */
    argvHash?: string;
    /** The file holding the vmstate (one of `disks`). */
    vmstateFile: string;
    disks: SnapshotDisk[];
    saveMs: number;
}

/** A record with its checksum, as stored. */
export function sealRecord(record: SnapshotRecord): string {
    return JSON.stringify({ ...record, sha256: hashValue(record) }, null, 2) + "\n";
}

/** The record from its stored text, or why it cannot be believed. */
export function openRecord(text: string): { record: SnapshotRecord } | { problem: string } {
    let raw: Record<string, unknown>;
    try {
        raw = JSON.parse(text);
    } catch {
        return { problem: "its record is not JSON" };
    }
    const { sha256, ...rest } = raw;
    if (rest.tool !== "pulumi-qemu" || rest.kind !== "snapshot" || rest.version !== 1)
        return { problem: "its record is not a pulumi-qemu snapshot record" };
    if (typeof sha256 !== "string" || hashValue(rest) !== sha256)
        return { problem: "its record's checksum does not match its content" };
    return { record: rest as unknown as SnapshotRecord };
}

/** A qcow2 snapshot as QMP query-block lists it. */
export interface QemuSnapshotInfo {
    id: string;
    name: string;
    "vm-state-size": number;
    "date-sec": number;
    "date-nsec": number;
}

/**
 * Whether the disks QEMU has open still hold the snapshot the record describes: the same tag
 * with the same id, time stamp and vmstate size on every file. A missing or re-made one
 * (someone ran qemu-img snapshot, or copied an image over) would restore a state that does not
 * match the others.
 */
export function snapshotMismatch(record: SnapshotRecord, listed: Map<string, QemuSnapshotInfo[]>): string | undefined {
    for (const d of record.disks) {
        const snaps = listed.get(d.file);
        if (!snaps) return `disk ${d.file} is no longer open in this VM`;
        const s = snaps.find((x) => x.name === record.tag);
        if (!s) return `disk ${d.file} has no snapshot ${record.tag} any more`;
        if (
            s.id !== d.id ||
            s["date-sec"] !== d.dateSec ||
            s["date-nsec"] !== d.dateNsec ||
            s["vm-state-size"] !== d.vmStateSize
        ) {
            return `disk ${d.file} holds a different snapshot ${record.tag} (id ${s.id}, made at ${s["date-sec"]}, vmstate ${s["vm-state-size"]} bytes) than the one recorded (id ${d.id}, made at ${d.dateSec}, vmstate ${d.vmStateSize} bytes)`;
        }
    }
    return undefined;
}
