/** A blank image: `size` bytes of nothing, raw or qcow2, made by qemu-img. Nothing is read. */
import { z } from "zod";
import { formatSchema, sizeSchema, type ImageFormat } from "../../../core/diskImageSpec";
import { createImage } from "../../../host/images/qemuImg";
import type { SourceKind } from "./source";

export type BlankSpec = { kind: "blank"; sizeBytes: number; format: ImageFormat };
export type BlankContent = { kind: "blank" };

export const blank: SourceKind<"blank", BlankSpec, BlankContent> = {
    schema: z
        .object({
            kind: z.literal("blank").meta({ description: "An empty image." }),
            size: sizeSchema.meta({
                description:
                    'Virtual size: bytes, or text with a suffix ("512M", "20G"; powers of 1024), whole 512-byte sectors.',
                accepts: ["number", "string"],
            }),
            format: formatSchema("format").meta({ typeName: "ImageFormat", description: "The image's format." }),
        })
        .strict()
        .meta({ typeName: "BlankSource", description: "An empty image." }),
    toSpec: (raw) => ({ kind: "blank", sizeBytes: raw.size, format: raw.format }),
    format: (spec) => spec.format,
    specForHash: (spec) => ({ kind: "blank", sizeBytes: spec.sizeBytes, format: spec.format }),
    fixedBytes: false,
    read: async () => ({ content: { kind: "blank" } }),
    build: (spec, _resolved, temp) => createImage(temp, spec.format, spec.sizeBytes),
};
