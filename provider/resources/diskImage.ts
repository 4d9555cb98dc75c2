import { placed } from "./placement";
import type * as pulumi from "@pulumi/pulumi";
import { randomBytes } from "node:crypto";
import { chmod, link, lstat, mkdir, open, rm } from "node:fs/promises";
import * as path from "node:path";
import { defaultImageDir, defaultImagePath, sidecarPath, type ImageFormat } from "../core/diskImageSpec";
import { octal } from "../core/fileMode";
import { CONTENT_DIGEST, LEGACY_CONTENT_DIGEST, type DigestAlgorithm } from "../core/hash";
import { withoutUrlCredentials } from "../core/imageUrl";
import { Qcow2HeaderError } from "../core/qcow2Header";
import { InputError } from "../core/validation";
import {
    HASH_CACHE_FILE,
    HASH_CACHE_FILE_V1,
    HashCache,
    sameFile,
    sameStamp,
    stampOf,
    statStamp,
    waitOutRacyWindow,
    type FileStamp,
    type ReadCounter,
} from "../host/files/fileHash";
import { explainHostFileError } from "../host/files/hostErrors";
import { readImageHeader, type ImageHeader } from "../host/images/imageHeader";
import { ensureOwnDir, ensureStateDir, ownDirChain, resolveStateDir } from "../host/files/stateDir";
import { sourceKind } from "./diskImage/sources";
import { digestOf, fieldError, type Context, type Resolved } from "./diskImage/sources/source";
import {
    imageFormat,
    imageInputHash,
    parseDiskImageSpec,
    type DiskImageSpec,
    type SourceContent,
} from "./diskImage/spec";
import { checkWith, hasUnknown, instanceSuffix, oncePerInterval, withoutUndefined } from "./common";
import { DISK_IMAGE_STATE, isEmptyState, requireState } from "./stateGuard";
import { importImage } from "./diskImage/import";
import { sweepVmsOf } from "./virtualMachine/record";
import { partialName, readSidecar, settleRecord, sweepImageDir, writeIntent, writeSidecar } from "./diskImage/record";
import type { DiskImageInputs, DiskImageOutputs } from "./diskImage/state";
// The types users' code and tests have imported from here since 0.1.
export type { BackingIdentityFrom, DiskImageInputs, DiskImageOutputs } from "./diskImage/state";

/**
 * DiskImage: Guix's image records as files. An image is made once from its source and kept;
 * any change to what it is made from (`inputHash`) or to where it goes replaces it. Every file
 * it writes is first built under a temporary name and linked into place without clobbering, and
 * a sidecar record next to it is how delete knows the file is still the one it made.
 */

/** What a test or benchmark may observe; Pulumi never passes it. */
export interface Observe {
    counter?: ReadCounter;
}

// ---------------------------------------------------------------------------------------------
// Lifecycle

async function checkHere(_olds: unknown, news: any): Promise<pulumi.dynamic.CheckResult> {
    // Values unknown during a preview are checked again, known, during the update.
    if (hasUnknown(news)) return { inputs: news };
    return checkWith(() => parseDiskImageSpec(news ?? {}), news);
}

async function diffHere(id: string, olds: DiskImageOutputs, news: DiskImageInputs): Promise<pulumi.dynamic.DiffResult> {
    return diffImage(id, olds, news);
}

async function createHere(inputs: DiskImageInputs): Promise<pulumi.dynamic.CreateResult> {
    const outs = await createDiskImage(inputs);
    return { id: outs.path, outs };
}

async function readHere(id: string, props: DiskImageOutputs): Promise<pulumi.dynamic.ReadResult> {
    // No state at all: `pulumi import` or the import option, which give the id alone.
    // Its inputs are judged by the diff an `up` would run: the source returned must show no change.
    if (isEmptyState(props))
        return importImage(
            id,
            async (outs, inputs) => !(await diffImage(id, outs, inputs as unknown as DiskImageInputs)).changes,
        );
    return readImage(id, props);
}

async function removeHere(_id: string, props: DiskImageOutputs): Promise<void> {
    await removeImage(props);
}

// ---------------------------------------------------------------------------------------------
// diff

export async function diffImage(
    _id: string,
    olds: DiskImageOutputs,
    news: DiskImageInputs,
    observe: Observe = {},
): Promise<pulumi.dynamic.DiffResult> {
    const unknown = (["source", "path", "stateDir"] as const).filter((k) => hasUnknown(news[k]));
    // Nothing is read for an unknown value: whatever it turns out to be may replace the image.
    if (unknown.length) return { changes: true, replaces: [...unknown] };
    requireState("DiskImage", "diff", olds, DISK_IMAGE_STATE);
    const spec = parseDiskImageSpec(news);
    const stateDir = resolveStateDir(spec.stateDir);
    const replaces: string[] = [];
    const ctx = await openContext(stateDir, observe, recordedAlgorithm(olds), false);
    try {
        const resolved = await resolveSource(spec, ctx, spec.path ?? olds.path);
        if (resolved.inputHash !== olds.inputHash) replaces.push("source");
    } catch (err) {
        // The source is gone or unreadable: the image can no longer be matched to its inputs.
        if (!(err instanceof InputError)) throw err;
        replaces.push("source");
    }
    if (pathMoves(spec, stateDir, olds)) replaces.push("path");
    if (modeChanges(spec, olds, news)) replaces.push("mode");
    // Drift that a refresh recorded counts as much as drift seen now: the engine diffs read's output.
    const found = await assess(olds, ctx, false);
    if (!replaces.includes("source") && (olds.drift !== undefined || found.gone || found.drift))
        replaces.push("source");
    if (!replaces.length) return { changes: false };
    // At the same path the new image cannot be linked in while the old one is there.
    return { changes: true, replaces, deleteBeforeReplace: spec.path !== undefined && spec.path === olds.path };
}

/**
 * A new mode replaces the image rather than chmod it: the change of ctime would read as drift
 * to every overlay on it, which are replaced all the same. Records from before modes existed
 * are left alone until the user asks for one.
 */
function modeChanges(spec: DiskImageSpec, olds: DiskImageOutputs, news: DiskImageInputs): boolean {
    if (olds.mode === undefined) return news.mode !== undefined;
    return parseInt(olds.mode, 8) !== spec.mode;
}

function pathMoves(spec: DiskImageSpec, stateDir: string, olds: DiskImageOutputs): boolean {
    if (spec.path !== undefined) return spec.path !== olds.path;
    return !olds.pathDefaulted || path.dirname(olds.path) !== defaultImageDir(stateDir);
}

// ---------------------------------------------------------------------------------------------
// Resolving a source: what it reads, and the identity that follows

/**
 * `writes`: whether this call may write to the state directory (create, read). A preview's diff
 * may not: it neither creates the directory nor saves what it learnt to the hash cache.
 */
async function openContext(
    stateDir: string,
    observe: Observe,
    algorithm: DigestAlgorithm,
    writes: boolean,
): Promise<Context> {
    if (writes) await ensureStateDir(stateDir);
    // 0.1's cache holds SHA-256 digests only: read it for 0.1's records, not on every call.
    const carriedFrom = algorithm === LEGACY_CONTENT_DIGEST ? path.join(stateDir, HASH_CACHE_FILE_V1) : undefined;
    return {
        stateDir,
        cache: await HashCache.load(path.join(stateDir, HASH_CACHE_FILE), { carriedFrom }),
        algorithm,
        counter: observe.counter,
    };
}

function recordedAlgorithm(props: DiskImageOutputs): DigestAlgorithm {
    return props.digestAlgorithm ?? LEGACY_CONTENT_DIGEST;
}

/**
 * Reads what `spec` is made from — content through the stat cache, headers through qemu-img —
 * and returns its identity. `target` is where the image will be (or is), to refuse chains that
 * would loop back through it. Bad or missing sources are InputErrors naming the field.
 */
async function resolveSource(spec: DiskImageSpec, ctx: Context, target: string | undefined): Promise<Resolved> {
    const kind = sourceKind(spec.source.kind);
    const read = await kind.read(spec.source, ctx, target);
    const inputHash = imageInputHash(spec.source, read.content as SourceContent);
    return {
        ...read,
        inputHash,
        format: imageFormat(spec.source, kind.detectedFormat?.(read.content) ?? read.detected),
    };
}

// ---------------------------------------------------------------------------------------------
// create

export async function createDiskImage(inputs: DiskImageInputs, observe: Observe = {}): Promise<DiskImageOutputs> {
    const spec = parseDiskImageSpec(inputs);
    const stateDir = resolveStateDir(spec.stateDir);
    // Host trouble (a full disk, a path that cannot be) is told against the field that led there.
    const field = spec.path === undefined ? "stateDir" : "path";
    const where = spec.path ?? defaultImageDir(stateDir);
    try {
        return await createAt(inputs, spec, stateDir, observe);
    } catch (err) {
        throw await explainHostFileError(err, field, where);
    }
}

async function createAt(
    inputs: DiskImageInputs,
    spec: DiskImageSpec,
    stateDir: string,
    observe: Observe,
): Promise<DiskImageOutputs> {
    // An orphaned QEMU of a killed VM create in this state directory goes now, whichever resource comes next.
    await sweepVmsOf(stateDir);
    // Only create fetches what a source is made from (a url download); diff and read never do.
    const ctx: Context = { ...(await openContext(stateDir, observe, CONTENT_DIGEST, true)), fetches: true };
    const resolved = await resolveSource(spec, ctx, spec.path);
    if (spec.path === undefined) await ensureOwnDir(defaultImageDir(stateDir));
    // A user's path may name directories that do not exist yet: they are made owner-only.
    else await mkdir(path.dirname(spec.path), { recursive: true, mode: 0o700 });
    const target = spec.path ?? defaultImagePath(stateDir, resolved.inputHash, resolved.format, instanceSuffix());
    if (spec.path === undefined) await sweepImageDirSometimes(path.dirname(target));
    await refuseExisting(target);
    const partial = partialName(target, randomBytes(6).toString("hex"));
    const temp = path.join(path.dirname(target), partial);
    // The intent comes first: killed at any later point, this create leaves only what the
    // record names, and the next create at this path (or sweep of `images`) cleans it.
    await writeIntent(target, { state: "creating", inputHash: resolved.inputHash, partial });
    try {
        // Made owner-only before any byte is written, and given its mode before it gets its name:
        // no one else can read it at any point. The tools write into the file as it is.
        await (await open(temp, "wx", 0o600)).close();
        await sourceKind(spec.source.kind).build(spec.source, resolved, temp, ctx);
        await chmod(temp, spec.mode);
        await writeIntent(target, {
            state: "linking",
            inputHash: resolved.inputHash,
            partial,
            stamp: await statStamp(temp),
        });
        await linkNoClobber(temp, target);
    } catch (err) {
        await rm(sidecarPath(target), { force: true });
        throw err;
    } finally {
        await rm(temp, { force: true });
    }
    try {
        const outs = await describeNew(inputs, spec, resolved, target, ctx);
        await writeSidecar(target, {
            inputHash: resolved.inputHash,
            format: resolved.format,
            stamp: outs.imageStamp,
            createdAt: new Date().toISOString(),
        });
        await ctx.cache.save();
        return outs;
    } catch (err) {
        // The file is ours (just linked); anything short of a complete record takes it away again.
        await rm(target, { force: true });
        await rm(sidecarPath(target), { force: true });
        throw err;
    }
}

/** Refuses a target that is taken, once the leftovers of a killed create there are cleaned. */
async function refuseExisting(target: string): Promise<void> {
    const record = await settleRecord(target);
    const present = await lstat(target).then(
        () => true,
        (err: NodeJS.ErrnoException) => (err.code === "ENOENT" ? false : Promise.reject(err)),
    );
    if (record === "in-progress")
        throw fieldError(
            "path",
            `path ${target} is being created by another pulumi-qemu process right now; wait for it, or choose another path`,
        );
    if (present) {
        const whose =
            record === "finished"
                ? "it was made by pulumi-qemu for another resource or an earlier stack"
                : "it was not created by pulumi-qemu";
        throw fieldError(
            "path",
            `path ${target} already exists and ${whose}; pulumi-qemu never overwrites a file it did not create here. Move it away or choose another path`,
        );
    }
    if (record === "foreign")
        throw fieldError(
            "path",
            `${sidecarPath(target)} exists and is not a pulumi-qemu record; move it away or choose another path`,
        );
}

/** link(2) fails on an existing name where rename(2) would replace it: the last guard against clobbering. */
async function linkNoClobber(from: string, to: string): Promise<void> {
    try {
        await link(from, to);
    } catch (err) {
        if ((err as NodeJS.ErrnoException).code === "EEXIST")
            throw fieldError("path", `path ${to} appeared while the image was being built; it was left alone`);
        throw err;
    }
}

async function describeNew(
    inputs: DiskImageInputs,
    spec: DiskImageSpec,
    resolved: Resolved,
    target: string,
    ctx: Context,
): Promise<DiskImageOutputs> {
    const { virtualSize } = await readImageHeader(target, resolved.format);
    const imageStamp = await statStamp(target);
    const fixedBytes = sourceKind(spec.source.kind).fixedBytes;
    // Hashed once the image is outside the racy window, so the stat cache keeps the digest and
    // the first preview after create reads nothing: at most 50 ms beside building the image (2 s
    // on filesystems with whole-second stamps).
    if (fixedBytes) await waitOutRacyWindow(target);
    const contentFingerprint = fixedBytes ? await digestOf(target, ctx) : undefined;
    const src = inputs.source as { size?: string | number };
    return withoutUndefined({
        // A password or signed query in a url source stays out of the state the provider returns.
        source: withoutUrlCredentials(inputs.source),
        stateDir: spec.stateDir,
        path: target,
        pathDefaulted: spec.path === undefined,
        mode: octal(spec.mode),
        format: resolved.format,
        virtualSizeBytes: virtualSize,
        inputHash: resolved.inputHash,
        sizeRequested: src.size,
        backingPath: spec.source.kind === "overlay" ? spec.source.backing : undefined,
        backingFormat: resolved.backing ? (resolved.backing.info.format as ImageFormat) : undefined,
        backingInputHash: resolved.backing?.identity,
        backingIdentityFrom: resolved.backing?.identityFrom,
        backingStamp: resolved.backing?.stamp,
        contentFingerprint,
        digestAlgorithm: ctx.algorithm,
        imageStamp,
        createdByProvider: true as const,
    });
}

// ---------------------------------------------------------------------------------------------
// read: reality against the record

interface Assessment {
    gone: boolean;
    drift?: string;
    foundFingerprint?: string;
}

/**
 * Compares the image on disk (and an overlay's backing) with what create recorded.
 * `readHeader`: also read which backing file the overlay's header names. Only `qemu-img rebase`
 * changes that, so refresh looks and previews (diff) leave image files unread.
 */
async function assess(props: DiskImageOutputs, ctx: Context, readHeader: boolean): Promise<Assessment> {
    let st;
    try {
        st = await lstat(props.path, { bigint: true });
    } catch (err) {
        if ((err as NodeJS.ErrnoException).code === "ENOENT") return { gone: true };
        throw err;
    }
    if (!st.isFile()) return { gone: false, drift: `${props.path} is no longer a regular file` };
    if (!sameFile(stampOf(st), props.imageStamp)) {
        return {
            gone: false,
            drift: `${props.path} was replaced by another file (not the one created: inode or birth time differ)`,
        };
    }
    if (props.contentFingerprint) {
        const now = await digestOf(props.path, ctx);
        if (now !== props.contentFingerprint) {
            return {
                gone: false,
                foundFingerprint: now,
                drift: `${props.path} content changed (${ctx.algorithm} ${now}, created as ${props.contentFingerprint})`,
            };
        }
    }
    if (props.backingPath && props.backingStamp) return { gone: false, drift: await backingDrift(props, readHeader) };
    // File and directory images were judged by content above; a blank one only has its header.
    if (readHeader && props.contentFingerprint === undefined)
        return { gone: false, drift: await headerDrift(props, st.size) };
    return { gone: false };
}

/**
 * What a blank image's own header says against the record. A guest changes its data, never
 * its format or size: junk over a qcow2 header, or a resized file, is not the image we made.
 */
async function headerDrift(props: DiskImageOutputs, fileSize: bigint): Promise<string | undefined> {
    if (props.format === "raw") {
        if (fileSize !== BigInt(props.virtualSizeBytes)) {
            return `${props.path} is now ${fileSize} bytes long, created as ${props.virtualSizeBytes}: it was resized or replaced`;
        }
        return undefined;
    }
    const header = await qcow2HeaderOrDrift(props.path);
    if (typeof header === "string") return header;
    const cut = cutShort(props.path, header, fileSize);
    if (cut) return cut;
    if (header.virtualSize !== props.virtualSizeBytes) {
        return `${props.path} now has a virtual size of ${header.virtualSize} bytes, created as ${props.virtualSizeBytes}: it was resized or replaced`;
    }
    if (header.backingFilename !== undefined)
        return `${props.path} now names backing file ${header.backingFilename}; it was created with none`;
    return undefined;
}

/** A qcow2 file that ends before its own tables was truncated: its header alone survived. */
function cutShort(file: string, header: ImageHeader, fileSize: bigint): string | undefined {
    if (header.metadataEnd === undefined || fileSize >= BigInt(header.metadataEnd)) return undefined;
    return `${file} was cut short: it ends at byte ${fileSize}, before its own tables, which reach byte ${header.metadataEnd}`;
}

/** The qcow2 header of an image we made, or, when it no longer is one, the drift that says so. */
async function qcow2HeaderOrDrift(file: string): Promise<ImageHeader | string> {
    try {
        return await readImageHeader(file, "qcow2");
    } catch (err) {
        if (err instanceof Qcow2HeaderError) return `${file} is ${err.message}`;
        throw err;
    }
}

async function backingDrift(props: DiskImageOutputs, readHeader: boolean): Promise<string | undefined> {
    const backing = props.backingPath!;
    let now: FileStamp;
    try {
        now = await statStamp(backing);
    } catch (err) {
        if ((err as NodeJS.ErrnoException).code === "ENOENT") return `backing file ${backing} is gone`;
        throw err;
    }
    if (!sameStamp(now, props.backingStamp!)) {
        return `backing file ${backing} changed since the overlay was made (size ${now.size}, mtime ${now.mtimeNs} ns; was size ${props.backingStamp!.size}, mtime ${props.backingStamp!.mtimeNs} ns): the overlay no longer matches it`;
    }
    if (!readHeader) return undefined;
    const header = await qcow2HeaderOrDrift(props.path);
    if (typeof header === "string") return header;
    const cut = cutShort(props.path, header, (await lstat(props.path, { bigint: true })).size);
    if (cut) return cut;
    if (header.backingFilename !== backing)
        return `${props.path} now names ${header.backingFilename ?? "no"} backing file instead of ${backing}`;
    return undefined;
}

/** Leftovers of killed creates in a state directory's `images`, looked for at most every 30 s per process. */
function sweepImageDirSometimes(imageDir: string): Promise<unknown> {
    return oncePerInterval(`images:${imageDir}`, 30_000, () => sweepImageDir(imageDir));
}

export async function readImage(
    id: string,
    props: DiskImageOutputs,
    observe: Observe = {},
): Promise<pulumi.dynamic.ReadResult> {
    requireState("DiskImage", "read", props, DISK_IMAGE_STATE);
    const ctx = await openContext(resolveStateDir(props.stateDir), observe, recordedAlgorithm(props), true);
    if (props.pathDefaulted) await sweepImageDirSometimes(path.dirname(props.path));
    const found = await assess(props, ctx, true);
    await ctx.cache.save();
    if (found.gone) return { id: "", props: {} };
    // What create recorded stays as it was; what was found goes beside it.
    const { drift: _previous, foundFingerprint: _found, ...rest } = props;
    const outs: DiskImageOutputs = { ...rest };
    if (found.foundFingerprint) outs.foundFingerprint = found.foundFingerprint;
    if (found.drift) outs.drift = found.drift;
    return { id, props: outs };
}

// ---------------------------------------------------------------------------------------------
// delete

export type RemoveOutcome = "removed" | "missing" | "not-ours";

/** Removes the image only while it is the very file create made (sidecar and inode agree). */
export async function removeImage(props: DiskImageOutputs): Promise<RemoveOutcome> {
    requireState("DiskImage", "delete", props, DISK_IMAGE_STATE);
    // A default path lies in the state directory's `images`: if that was swapped for a link, the
    // path now leads elsewhere, and nothing there is ours to delete.
    if (props.pathDefaulted) {
        const imageDir = path.dirname(props.path);
        if (!(await ownDirChain(path.dirname(imageDir), imageDir)).ok) return "not-ours";
        await sweepImageDirSometimes(imageDir);
    }
    const record = await readSidecar(props.path);
    const recordIsOurs =
        record !== undefined && record.inputHash === props.inputHash && sameFile(record.stamp, props.imageStamp);
    let st;
    try {
        st = await lstat(props.path, { bigint: true });
    } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
        if (recordIsOurs) await rm(sidecarPath(props.path), { force: true });
        return "missing";
    }
    if (!recordIsOurs || !st.isFile() || !sameFile(stampOf(st), props.imageStamp)) return "not-ours";
    await rm(props.path, { force: true });
    await rm(sidecarPath(props.path), { force: true });
    return "removed";
}

// ---------------------------------------------------------------------------------------------
// The lifecycle as the plugin, the dynamic shims and a far host's runner call it: placed where its `host` says (placement.ts).

export const { check, diff, create, read, remove } = placed("DiskImage", {
    check: checkHere,
    diff: diffHere,
    create: createHere,
    read: readHere,
    remove: removeHere,
});
