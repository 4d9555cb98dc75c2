import { lstat, readdir, readFile, rm } from "node:fs/promises";
import * as path from "node:path";
import { sidecarPath, type ImageFormat } from "../../core/diskImageSpec";
import { writeFileAtomic } from "../../host/files/atomicFile";
import { isProcessIdentity, selfIdentity, stillRunning } from "../../host/process/creator";
import { sameFile, stampOf, type FileStamp } from "../../host/files/fileHash";
import type { ProcessIdentity } from "../../host/qemu/qemuProcess";
import { isOwnFileSync } from "../../host/files/stateDir";

/**
 * The record beside every image the provider makes (`<image>.pulumi-qemu.json`). It is written
 * before anything else, as an intent, and moves through three states:
 *   creating — the partial file named in it may exist; the image itself is not ours yet;
 *   linking  — the partial is complete and about to get the image's name: an image at the
 *              target with the recorded inode is ours;
 *   created  — done (records from 0.1 and 0.2 have no state and mean this).
 * A record in the first two states whose creator no longer runs is a leftover of a killed
 * create, and everything it names is provably ours to clean.
 */

export interface Sidecar {
    tool: "pulumi-qemu";
    resource: "DiskImage";
    version: 1;
    inputHash: string;
    format: ImageFormat;
    stamp: FileStamp;
    createdAt: string;
    state?: "created";
}

export interface Intent {
    tool: "pulumi-qemu";
    resource: "DiskImage";
    version: 1;
    state: "creating" | "linking";
    inputHash: string;
    /** The partial file's name, in the image's directory. */
    partial: string;
    creator: ProcessIdentity;
    /** The partial's identity once complete (`linking`): the image is ours if it is this file. */
    stamp?: FileStamp;
}

type AnyRecord =
    { kind: "none" } | { kind: "foreign" } | { kind: "sidecar"; record: Sidecar } | { kind: "intent"; record: Intent };

/** Partial files are named `.<image name>.<12 hex>.partial` beside the image. */
const PARTIAL = /^\..+\.[0-9a-f]{12}\.partial$/;

export function partialName(image: string, nonce: string): string {
    return `.${path.basename(image)}.${nonce}.partial`;
}

async function readRecord(image: string): Promise<AnyRecord> {
    const file = sidecarPath(image);
    let text: string;
    try {
        text = await readFile(file, "utf8");
    } catch (err) {
        if ((err as NodeJS.ErrnoException).code === "ENOENT") return { kind: "none" };
        throw err;
    }
    let s: Record<string, unknown>;
    try {
        s = JSON.parse(text);
    } catch {
        return { kind: "foreign" };
    }
    if (typeof s !== "object" || s === null) return { kind: "foreign" };
    if (s.tool !== "pulumi-qemu" || s.resource !== "DiskImage" || s.version !== 1 || typeof s.inputHash !== "string")
        return { kind: "foreign" };
    if (
        (s.state === "creating" || s.state === "linking") &&
        typeof s.partial === "string" &&
        PARTIAL.test(s.partial) &&
        isProcessIdentity(s.creator)
    ) {
        return { kind: "intent", record: s as unknown as Intent };
    }
    if ((s.state === undefined || s.state === "created") && s.stamp)
        return { kind: "sidecar", record: s as unknown as Sidecar };
    return { kind: "foreign" };
}

/** The finished record of `image`, when there is one. */
export async function readSidecar(image: string): Promise<Sidecar | undefined> {
    const r = await readRecord(image);
    return r.kind === "sidecar" ? r.record : undefined;
}

export async function writeSidecar(
    image: string,
    record: Omit<Sidecar, "tool" | "resource" | "version" | "state">,
): Promise<void> {
    const body: Sidecar = { tool: "pulumi-qemu", resource: "DiskImage", version: 1, ...record, state: "created" };
    await writeFileAtomic(sidecarPath(image), JSON.stringify(body, null, 2) + "\n", { durable: true });
}

export async function writeIntent(
    image: string,
    intent: { state: Intent["state"]; inputHash: string; partial: string; stamp?: FileStamp },
): Promise<void> {
    const body: Intent = {
        tool: "pulumi-qemu",
        resource: "DiskImage",
        version: 1,
        creator: await selfIdentity(),
        ...intent,
    };
    await writeFileAtomic(sidecarPath(image), JSON.stringify(body, null, 2) + "\n", { durable: true });
}

export type RecordAtPath = "none" | "foreign" | "finished" | "in-progress";

/**
 * What stands at `image` as far as records go, once any leftover of a killed create there has
 * been cleaned: "none" (free), "finished" (another resource's image), "in-progress" (a live
 * create), or "foreign" (a record that is not ours).
 */
export async function settleRecord(image: string): Promise<RecordAtPath> {
    const r = await readRecord(image);
    if (r.kind === "none") return "none";
    if (r.kind === "foreign") return "foreign";
    if (r.kind === "sidecar") return "finished";
    if (await stillRunning(r.record.creator)) return "in-progress";
    await cleanLeftover(image, r.record);
    return "none";
}

/** Removes what a killed create left: its partial, the image if it was linked, then the record. */
async function cleanLeftover(image: string, intent: Intent): Promise<void> {
    await rm(path.join(path.dirname(image), intent.partial), { force: true });
    if (intent.state === "linking" && intent.stamp) {
        const st = await lstat(image, { bigint: true }).catch(() => undefined);
        if (st && st.isFile() && sameFile(stampOf(st), intent.stamp)) await rm(image, { force: true });
    }
    await rm(sidecarPath(image), { force: true });
}

/** Partials older than this, with no record naming them, are leftovers of pulumi-qemu 0.2. */
const UNRECORDED_PARTIAL_AGE_MS = 60 * 60 * 1000;

/**
 * Cleans the leftovers of killed creates in the state directory's own `images` directory: every
 * record of a create whose creator is gone, and partial files that no record names and that no
 * create has touched for an hour. Returns what it removed, for tests and logs.
 */
export async function sweepImageDir(imageDir: string): Promise<string[]> {
    const names = await readdir(imageDir).catch(() => [] as string[]);
    const removed: string[] = [];
    const named = new Set<string>();
    for (const n of names) {
        if (!n.endsWith(".pulumi-qemu.json")) continue;
        const image = path.join(imageDir, n.slice(0, -".pulumi-qemu.json".length));
        const r = await readRecord(image).catch(() => ({ kind: "foreign" }) as AnyRecord);
        if (r.kind !== "intent") continue;
        named.add(r.record.partial);
        if (await stillRunning(r.record.creator)) continue;
        await cleanLeftover(image, r.record);
        removed.push(n);
    }
    for (const n of names) {
        if (!PARTIAL.test(n) || named.has(n)) continue;
        const file = path.join(imageDir, n);
        const st = await lstat(file).catch(() => undefined);
        if (st && isOwnFileSync(file) && Date.now() - st.mtimeMs > UNRECORDED_PARTIAL_AGE_MS) {
            await rm(file, { force: true });
            removed.push(n);
        }
    }
    return removed;
}
