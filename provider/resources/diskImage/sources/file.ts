/**
 * An image imported from a file: flattened into a new raw or qcow2 file by qemu-img convert.
 * It enters the image's identity by content — its own digest and those of every file under it —
 * not by where it lies, and by the format it was found in.
 */
import * as path from "node:path";
import { z } from "zod";
import { formatSchema, type ImageFormat } from "../../../core/diskImageSpec";
import { digestByName, type DigestByName } from "../../../core/hash";
import { hostFilePath } from "../../../core/validation";
import { requireRegularFile } from "../../../host/files/regularFile";
import { convertImage } from "../../../host/images/qemuImg";
import { whileWorking } from "../../../host/progress";
import { backingFiles, chainOf, knownFormat } from "./chain";
import { digestOf, type SourceKind } from "./source";

export type FileSpec = { kind: "file"; path: string; format?: ImageFormat };
export type FileContent = { kind: "file"; format: ImageFormat; chain: string[] } & DigestByName;

export const file: SourceKind<"file", FileSpec, FileContent> = {
    schema: z
        .object({
            kind: z.literal("file").meta({ description: "A copy of an existing image file." }),
            path: hostFilePath("path").meta({ description: "Absolute path of the source image." }),
            format: formatSchema("format")
                .optional()
                .meta({ typeName: "ImageFormat", description: "Its format; default detected from the file." }),
        })
        .strict()
        .meta({ typeName: "FileSource", description: "A copy of an existing image file." }),
    toSpec: (raw) => ({ kind: "file", path: path.normalize(raw.path), format: raw.format }),
    format(spec, detected) {
        const f = spec.format ?? detected;
        if (!f) throw new Error("imageFormat: a file source needs its detected format");
        return f;
    },
    // The format as detected is part of the content; the path is only where it was found.
    specForHash: () => ({ kind: "file" }),
    reads: (spec) => ({ path: spec.path, field: "source.path" }),
    detectedFormat: (content) => content.format,
    fixedBytes: true,
    async read(spec, ctx) {
        await requireRegularFile(spec.path, "source.path");
        const chain = await chainOf(spec.path, spec.format, "source.path");
        const format = knownFormat(chain[0].format, "source.format", spec.path);
        const own = await digestOf(spec.path, ctx);
        // An import is flattened, so whatever lies under the file is part of it too.
        const below: string[] = [];
        for (const f of backingFiles(chain)) below.push(await digestOf(f, ctx));
        return { content: { kind: "file", format, chain: below, ...digestByName(ctx.algorithm, own) } };
    },
    build: (spec, resolved, temp) =>
        whileWorking(
            (seconds) => `copying ${spec.path} into the image: ${seconds} s`,
            () => convertImage(spec.path, resolved.format, temp, resolved.format),
        ),
};
