/**
 * An ext4 image built from a directory tree, without root (mkfs.ext4 -d). It enters the image's
 * identity by the tree's content hash; its ext4 identifiers follow from that hash, so the same
 * tree gives the same bytes.
 */
import { truncate } from "node:fs/promises";
import * as path from "node:path";
import { z } from "zod";
import { ext4Identifiers, MAX_EXT4_LABEL_BYTES, sizeSchema } from "../../../core/diskImageSpec";
import { formatSize } from "../../../core/size";
import { absolutePath, plainText } from "../../../core/validation";
import { hashTree } from "../../../host/files/fileHash";
import { isOutOfSpace } from "../../../host/files/hostErrors";
import { buildExt4, Ext4Error } from "../../../host/images/ext4";
import { humanBytes, whileWorking } from "../../../host/progress";
import { fieldError, type Context, type Resolved, type SourceKind } from "./source";

export type DirectorySpec = {
    kind: "directory";
    path: string;
    sizeBytes: number;
    fsType: "ext4";
    label?: string;
    owners?: "preserve";
};
export type DirectoryContent = { kind: "directory"; treeHash: string };

export const directory: SourceKind<"directory", DirectorySpec, DirectoryContent> = {
    schema: z
        .object({
            kind: z.literal("directory").meta({ description: "A filesystem image built from a host directory." }),
            path: absolutePath("path").meta({ description: "Absolute path of the directory." }),
            size: sizeSchema.meta({
                description: 'Virtual size: bytes, or text with a suffix ("1G"), whole 512-byte sectors.',
                accepts: ["number", "string"],
            }),
            fsType: z
                .literal("ext4", { error: 'fsType must be "ext4" (the only filesystem built without root)' })
                .default("ext4")
                .meta({ description: 'Filesystem: "ext4", the only one built without root.' }),
            label: plainText("label")
                .refine((s) => Buffer.byteLength(s) <= MAX_EXT4_LABEL_BYTES, {
                    error: `label must be at most ${MAX_EXT4_LABEL_BYTES} bytes (ext4's limit)`,
                })
                .optional()
                .meta({ description: "Filesystem label, 16 bytes at most; default none." }),
            // "root" (the default) makes every file root's, as before; "preserve" keeps the tree's
            // owners and its device nodes, which a real system's root filesystem needs.
            owners: z
                .enum(["root", "preserve"], {
                    error: 'owners must be "root" (every file owned by 0:0, the default) or "preserve" (keep the tree\'s owners and device nodes)',
                })
                .optional()
                .meta({
                    description:
                        '"root" (the default: every file owned by 0:0) or "preserve" (keep the tree\'s owners and device nodes, which a real system\'s root filesystem needs).',
                }),
        })
        .strict()
        .meta({ typeName: "DirectorySource", description: "A filesystem image built from a host directory." }),
    toSpec: (raw) => ({
        kind: "directory",
        path: path.normalize(raw.path),
        sizeBytes: raw.size,
        fsType: raw.fsType,
        label: raw.label,
        ...(raw.owners === "preserve" ? { owners: "preserve" as const } : {}),
    }),
    format: () => "raw",
    // owners enters only when preserved, so images made before the field existed keep their hash.
    specForHash: (spec) => ({
        kind: "directory",
        sizeBytes: spec.sizeBytes,
        fsType: spec.fsType,
        label: spec.label ?? null,
        owners: spec.owners,
    }),
    fixedBytes: true,
    async read(spec, ctx) {
        let tree;
        try {
            const counter = ctx.counter;
            tree = await whileWorking(
                (seconds) =>
                    `hashing the tree of ${spec.path}${counter ? ` (${counter.files} files, ${humanBytes(counter.bytes)} read so far)` : ""}: ${seconds} s`,
                () =>
                    hashTree(spec.path, ctx.cache, ctx.algorithm, ctx.counter, { owners: spec.owners === "preserve" }),
            );
        } catch (err) {
            const code = (err as NodeJS.ErrnoException).code;
            const why = code === "ENOENT" ? `${spec.path} does not exist` : (err as Error).message;
            throw fieldError("source.path", `source.path: ${why}`);
        }
        if (tree.dataBytes >= spec.sizeBytes) {
            throw fieldError(
                "source.size",
                `source.size ${formatSize(spec.sizeBytes)} is too small for ${spec.path}, which holds ${formatSize(tree.dataBytes)} of files and directories; ask for more room than that (filesystem metadata needs some too)`,
            );
        }
        const root = tree.entries[0];
        return {
            content: { kind: "directory", treeHash: tree.treeHash },
            tree: {
                paths: tree.entries.filter((e) => e.rel !== "").map((e) => e.rel),
                dataBytes: tree.dataBytes,
                rootUid: root.uid,
                rootGid: root.gid,
            },
        };
    },
    async build(spec, resolved, temp, ctx) {
        await truncate(temp, spec.sizeBytes);
        const { uuid, hashSeed } = ext4Identifiers(resolved.inputHash);
        try {
            const t = resolved.tree!;
            const preserveOwners =
                spec.owners === "preserve" ? { rootUid: t.rootUid!, rootGid: t.rootGid! } : undefined;
            await whileWorking(
                (seconds) =>
                    `building the ext4 image of ${spec.path} (${t.paths.length} entries into ${humanBytes(spec.sizeBytes)}): ${seconds} s`,
                () =>
                    buildExt4({
                        sourceDir: spec.path,
                        imageFile: temp,
                        uuid,
                        hashSeed,
                        label: spec.label,
                        paths: t.paths,
                        preserveOwners,
                    }),
            );
            await refuseChangedTree(spec, resolved, ctx);
        } catch (err) {
            // "Could not allocate block" is the image too small; "No space left on device" is the host's disk full.
            if (
                err instanceof Ext4Error &&
                !isOutOfSpace(err) &&
                /could not allocate|too small|not enough space|filesystem larger/i.test(err.stderr)
            ) {
                throw fieldError(
                    "source.size",
                    `source.size ${formatSize(spec.sizeBytes)} does not hold ${spec.path}: ${err.stderr.trim()}`,
                );
            }
            throw err;
        }
    },
};

/** mkfs copied the tree as it was then; an image of another tree than the one hashed would carry a false inputHash. */
async function refuseChangedTree(
    spec: DirectorySpec,
    resolved: Resolved<DirectoryContent>,
    ctx: Context,
): Promise<void> {
    const dir = spec.path;
    const again = await hashTree(dir, ctx.cache, ctx.algorithm, ctx.counter, { owners: spec.owners === "preserve" });
    if (again.treeHash !== resolved.content.treeHash)
        throw fieldError(
            "source.path",
            `source.path ${dir} changed while the image was being built; nothing was kept, try again`,
        );
}
