import * as path from "node:path";
import { z } from "zod";
import { cloudInitSchema, renderCloudInitSeed, seedSpecForHash, type CloudInitSourceSpec } from "./cloudInitSeed";
import { digestByName, hashValue, sha256Hex, type DigestAlgorithm, type DigestByName } from "./hash";
import { parseSize } from "./size";
import { fileModeSchema, IMAGE_MODE } from "./fileMode";
import { absolutePath, InputError, parseOrThrow, plainText, refuseUnknownKeys } from "./validation";

/**
 * A DiskImage as declared: where it goes and what it is made from. Defaults live here, and so
 * does the rule for its identity (`inputHash`), which must depend only on what the image is made
 * from — never on temp paths, the state directory or anything else about the host.
 */

export type ImageFormat = "raw" | "qcow2";

export type SourceSpec =
    | { kind: "blank"; sizeBytes: number; format: ImageFormat }
    | { kind: "file"; path: string; format?: ImageFormat }
    | { kind: "directory"; path: string; sizeBytes: number; fsType: "ext4"; label?: string; owners?: "preserve" }
    | { kind: "overlay"; backing: string; backingFormat?: ImageFormat; sizeBytes?: number; backingInputHash?: string }
    | CloudInitSourceSpec;

export interface DiskImageSpec {
    source: SourceSpec;
    /** Where the image goes when the user says so; otherwise a file under the state directory. */
    path?: string;
    stateDir?: string;
    /** The image file's mode; 0600 unless asked. */
    mode: number;
}

/** ext4 limits a volume label to 16 bytes. */
export const MAX_EXT4_LABEL_BYTES = 16;

const formatSchema = (what: string) => z.enum(["raw", "qcow2"], { error: `${what} must be "raw" or "qcow2"` });

const sizeSchema = z.unknown().transform((value, ctx) => {
    const parsed = parseSize(value);
    if (!parsed.ok) {
        ctx.addIssue({ code: "custom", message: parsed.reason });
        return z.NEVER;
    }
    return parsed.bytes;
});

const hexDigest = z
    .string({ error: "backingInputHash must be a string" })
    .regex(/^[0-9a-f]{16,128}$/, { error: "backingInputHash must be a lowercase hex digest (a DiskImage's inputHash output)" });

const blankSchema = z.object({ kind: z.literal("blank"), size: sizeSchema, format: formatSchema("format") }).strict();

const fileSchema = z.object({ kind: z.literal("file"), path: absolutePath("path"), format: formatSchema("format").optional() }).strict();

const directorySchema = z
    .object({
        kind: z.literal("directory"),
        path: absolutePath("path"),
        size: sizeSchema,
        fsType: z.literal("ext4", { error: 'fsType must be "ext4" (the only filesystem built without root)' }).default("ext4"),
        label: plainText("label")
            .refine((s) => Buffer.byteLength(s) <= MAX_EXT4_LABEL_BYTES, { error: `label must be at most ${MAX_EXT4_LABEL_BYTES} bytes (ext4's limit)` })
            .optional(),
        // "root" (the default) makes every file root's, as before; "preserve" keeps the tree's
        // owners and its device nodes, which a real system's root filesystem needs.
        owners: z.enum(["root", "preserve"], { error: 'owners must be "root" (every file owned by 0:0, the default) or "preserve" (keep the tree\'s owners and device nodes)' }).optional(),
    })
    .strict();

const overlaySchema = z
    .object({
        kind: z.literal("overlay"),
        backing: absolutePath("backing"),
        backingFormat: formatSchema("backingFormat").optional(),
        size: sizeSchema.optional(),
        backingInputHash: hexDigest.optional(),
    })
    .strict();

const KINDS = ["blank", "file", "directory", "overlay", "cloudInit"] as const;

const sourceSchema = z.discriminatedUnion("kind", [blankSchema, fileSchema, directorySchema, overlaySchema, cloudInitSchema], {
    error: `kind must be one of ${KINDS.map((k) => `"${k}"`).join(", ")}`,
});

/** Images may hold private data (a key copied in from a 0700 directory): the owner's only unless asked. */
export const DEFAULT_IMAGE_MODE = 0o600;

const topSchema = z.object({
    mode: fileModeSchema("mode", IMAGE_MODE).optional(),
    path: absolutePath("path").optional(),
    stateDir: absolutePath("stateDir").optional(),
});

/** A DiskImage's inputs; any other top-level key is refused (see refuseUnknownKeys). */
export const DISK_IMAGE_INPUT_KEYS: readonly string[] = ["source", "path", "stateDir", "mode"];
/** Must match the output names sdk/resources.ts declares (as undefined) for DiskImage; a unit test checks. */
export const DISK_IMAGE_OUTPUT_KEYS: readonly string[] = ["path", "format", "virtualSizeBytes", "inputHash", "backingPath", "backingInputHash", "mode", "drift"];

/** Validates a DiskImage's inputs, or throws an InputError naming each bad field (`source.size`, `path`…). */
export function parseDiskImageSpec(inputs: { source?: unknown; path?: unknown; stateDir?: unknown; mode?: unknown }): DiskImageSpec {
    refuseUnknownKeys(inputs as Record<string, unknown>, DISK_IMAGE_INPUT_KEYS, DISK_IMAGE_OUTPUT_KEYS);
    if (inputs.source === undefined || inputs.source === null || typeof inputs.source !== "object" || Array.isArray(inputs.source)) {
        throw new InputError([{ property: "source", reason: `source must be an object with a kind (${KINDS.join(", ")})` }]);
    }
    const top = parseOrThrow(topSchema, { path: inputs.path, stateDir: inputs.stateDir, mode: inputs.mode }, "");
    const raw = parseOrThrow(sourceSchema, inputs.source, "source");
    const source = toSourceSpec(raw);
    const spec: DiskImageSpec = { source, path: top.path && path.normalize(top.path), stateDir: top.stateDir, mode: top.mode ?? DEFAULT_IMAGE_MODE };
    refuseSelfBacking(spec);
    return spec;
}

function toSourceSpec(raw: z.output<typeof sourceSchema>): SourceSpec {
    switch (raw.kind) {
        case "blank":
            return { kind: "blank", sizeBytes: raw.size, format: raw.format };
        case "file":
            return { kind: "file", path: path.normalize(raw.path), format: raw.format };
        case "directory":
            return { kind: "directory", path: path.normalize(raw.path), sizeBytes: raw.size, fsType: raw.fsType, label: raw.label, ...(raw.owners === "preserve" ? { owners: "preserve" as const } : {}) };
        case "overlay":
            return {
                kind: "overlay",
                backing: path.normalize(raw.backing),
                backingFormat: raw.backingFormat,
                sizeBytes: raw.size,
                backingInputHash: raw.backingInputHash,
            };
        case "cloudInit":
            return renderCloudInitSeed(raw);
    }
}

function refuseSelfBacking(spec: DiskImageSpec): void {
    const s = spec.source;
    if (spec.path === undefined) return;
    const reads = s.kind === "overlay" ? s.backing : s.kind === "file" ? s.path : undefined;
    if (reads !== undefined && reads === spec.path) {
        const field = s.kind === "overlay" ? "source.backing" : "source.path";
        throw new InputError([{ property: field, reason: `${field} is the image's own path ${spec.path}: an image cannot be made from itself` }]);
    }
}

/** The format of the file the provider writes. */
export function imageFormat(source: SourceSpec, detectedFormat?: ImageFormat): ImageFormat {
    switch (source.kind) {
        case "blank":
            return source.format;
        case "file": {
            const f = source.format ?? detectedFormat;
            if (!f) throw new Error("imageFormat: a file source needs its detected format");
            return f;
        }
        case "directory":
            return "raw";
        case "overlay":
            return "qcow2";
        case "cloudInit":
            return "raw";
    }
}

/**
 * What was read to make the image, as the provider found it: content hashes and detected
 * formats. Together with the source spec this is all an image depends on.
 */
export type SourceContent =
    | { kind: "blank" }
    | ({ kind: "file"; format: ImageFormat; chain: string[] } & DigestByName)
    | { kind: "directory"; treeHash: string }
    | { kind: "overlay"; backingFormat: ImageFormat; backingIdentity: string }
    | { kind: "cloudInit" };

/** A file source's content: the file's digest and those of the files under it, all by `algorithm`. */
export function fileContent(format: ImageFormat, algorithm: DigestAlgorithm, digest: string, chain: string[]): SourceContent {
    return { kind: "file", format, chain, ...digestByName(algorithm, digest) };
}

/**
 * The image's identity. Sizes enter as the bytes asked for ("1G" and 1073741824 are the same
 * image, and what qemu-img rounds to never feeds back); a file or directory source enters by
 * content, not by where it lies; an overlay by its backing's path (it is written into the
 * overlay's header) and the backing's identity.
 */
export function imageInputHash(source: SourceSpec, content: SourceContent): string {
    if (source.kind !== content.kind) throw new Error(`imageInputHash: ${source.kind} source with ${content.kind} content`);
    return hashValue({ what: "pulumi-qemu DiskImage", version: 1, spec: specForHash(source), content });
}

function specForHash(source: SourceSpec): unknown {
    switch (source.kind) {
        case "blank":
            return { kind: "blank", sizeBytes: source.sizeBytes, format: source.format };
        case "file":
            // The format as detected is part of the content; the path is only where it was found.
            return { kind: "file" };
        case "directory":
            // owners enters only when preserved, so images made before the field existed keep their hash.
            return { kind: "directory", sizeBytes: source.sizeBytes, fsType: source.fsType, label: source.label ?? null, owners: source.owners };
        case "overlay":
            // backingFormat and backingInputHash are resolved into the content.
            return { kind: "overlay", backing: source.backing, sizeBytes: source.sizeBytes ?? null };
        case "cloudInit":
            return seedSpecForHash(source);
    }
}

/**
 * Default image file: under `<stateDir>/images`, named after the input hash and made unique by
 * `nonce`. Two resources with the same inputs (one overlay per VM on one base) are two images,
 * and the provider is never told which resource it works for, so the hash alone cannot name them.
 */
export function defaultImagePath(stateDir: string, inputHash: string, format: ImageFormat, nonce: string): string {
    if (!/^[0-9a-z]{4,32}$/.test(nonce)) throw new Error(`defaultImagePath: bad nonce ${JSON.stringify(nonce)}`);
    return path.join(defaultImageDir(stateDir), `${inputHash.slice(0, 16)}-${nonce}.${format}`);
}

export function defaultImageDir(stateDir: string): string {
    return path.join(stateDir, "images");
}

/** The record the provider writes next to each image it creates, so that delete can tell its own files. */
export function sidecarPath(imagePath: string): string {
    return `${imagePath}.pulumi-qemu.json`;
}

/**
 * ext4 identifiers fixed by the inputs, so that the same directory gives the same bytes: mkfs
 * otherwise draws a random UUID and directory-hash seed on every run.
 */
export function ext4Identifiers(inputHash: string): { uuid: string; hashSeed: string } {
    return { uuid: uuidFrom(sha256Hex(`ext4-uuid:${inputHash}`)), hashSeed: uuidFrom(sha256Hex(`ext4-hash-seed:${inputHash}`)) };
}

/** An RFC 4122 version-4-shaped UUID from the first 16 bytes of a hex digest. */
function uuidFrom(hex: string): string {
    const b = hex.slice(0, 32).split("");
    b[12] = "4";
    b[16] = ((parseInt(b[16], 16) & 0x3) | 0x8).toString(16);
    const h = b.join("");
    return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20, 32)}`;
}
