/**
 * A qcow2 overlay on a backing image. It enters the image's identity by the backing's path (it is
 * written into the overlay's header) and the backing's identity: the inputHash wired from the
 * base DiskImage, else the one in our sidecar beside an untouched backing, else its content.
 */
import * as path from "node:path";
import { z } from "zod";
import { formatSchema, hexDigest, sizeSchema, type ImageFormat } from "../../../core/diskImageSpec";
import { formatSize } from "../../../core/size";
import { hostFilePath } from "../../../core/validation";
import { sameStamp, statStamp, type FileStamp } from "../../../host/files/fileHash";
import { requireRegularFile } from "../../../host/files/regularFile";
import { createOverlay } from "../../../host/images/qemuImg";
import { readSidecar } from "../record";
import type { BackingIdentityFrom } from "../state";
import { backingFiles, chainOf, knownFormat } from "./chain";
import { digestOf, fieldError, type Context, type SourceKind } from "./source";

export type OverlaySpec = {
    kind: "overlay";
    backing: string;
    backingFormat?: ImageFormat;
    sizeBytes?: number;
    backingInputHash?: string;
};
export type OverlayContent = { kind: "overlay"; backingFormat: ImageFormat; backingIdentity: string };

export const overlay: SourceKind<"overlay", OverlaySpec, OverlayContent> = {
    schema: z
        .object({
            kind: z.literal("overlay").meta({ description: "A qcow2 overlay over another image." }),
            backing: hostFilePath("backing").meta({ description: "Absolute path of the backing image." }),
            backingFormat: formatSchema("backingFormat").optional().meta({
                typeName: "ImageFormat",
                description: "Format of the backing image; default detected by qemu-img.",
            }),
            size: sizeSchema
                .optional()
                .meta({ description: "Virtual size; default the backing image's.", accepts: ["number", "string"] }),
            backingInputHash: hexDigest.optional().meta({
                description:
                    "inputHash of the backing DiskImage, so that rebuilding it replaces the overlay; default none.",
            }),
        })
        .strict()
        .meta({ typeName: "OverlaySource", description: "A qcow2 overlay over another image." }),
    toSpec: (raw) => ({
        kind: "overlay",
        backing: path.normalize(raw.backing),
        backingFormat: raw.backingFormat,
        sizeBytes: raw.size,
        backingInputHash: raw.backingInputHash,
    }),
    format: () => "qcow2",
    // backingFormat and backingInputHash are resolved into the content.
    specForHash: (spec) => ({ kind: "overlay", backing: spec.backing, sizeBytes: spec.sizeBytes ?? null }),
    reads: (spec) => ({ path: spec.backing, field: "source.backing" }),
    fixedBytes: false,
    async read(spec, ctx, target) {
        await requireRegularFile(spec.backing, "source.backing", "a backing image");
        const chain = await chainOf(spec.backing, spec.backingFormat, "source.backing");
        const backingFormat = knownFormat(chain[0].format, "source.backingFormat", spec.backing);
        if (target !== undefined) {
            const loop = [spec.backing, ...backingFiles(chain)].some((file) => path.resolve(file) === target);
            if (loop)
                throw fieldError(
                    "source.backing",
                    `source.backing ${spec.backing} is, or is backed by, the overlay's own path ${target}: the chain would loop`,
                );
        }
        if (spec.sizeBytes !== undefined && spec.sizeBytes < chain[0].virtualSize) {
            throw fieldError(
                "source.size",
                `source.size ${formatSize(spec.sizeBytes)} is smaller than the backing image (${formatSize(chain[0].virtualSize)}); an overlay can only keep or grow the size`,
            );
        }
        const stamp = await statStamp(spec.backing);
        const { identity, identityFrom } = await backingIdentity(spec, stamp, ctx);
        return {
            content: { kind: "overlay", backingFormat, backingIdentity: identity },
            backing: { info: chain[0], stamp, identity, identityFrom },
        };
    },
    build: (spec, resolved, temp) => createOverlay(temp, spec.backing, resolved.backing!.info.format, spec.sizeBytes),
};

/**
 * Who the backing image is: the inputHash the user wired from the base DiskImage; else the one
 * in the sidecar we wrote when we made it, as long as the file is untouched since; else its
 * content, read once and then remembered by the stat cache.
 */
async function backingIdentity(
    spec: OverlaySpec,
    stamp: FileStamp,
    ctx: Context,
): Promise<{ identity: string; identityFrom: BackingIdentityFrom }> {
    if (spec.backingInputHash) return { identity: spec.backingInputHash, identityFrom: "input" };
    const record = await readSidecar(spec.backing);
    if (record && sameStamp(record.stamp, stamp)) return { identity: record.inputHash, identityFrom: "sidecar" };
    return { identity: await digestOf(spec.backing, ctx), identityFrom: "content" };
}
