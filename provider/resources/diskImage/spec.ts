/**
 * A DiskImage as declared: where it goes and what it is made from, validated, with the rule for
 * its identity (`inputHash`), which depends only on what the image is made from — never on temp
 * paths, the state directory or anything else about the host. What is particular to a source
 * kind comes from its module, through the table in sources/index.ts.
 */
import * as path from "node:path";
import { z } from "zod";
import {
    DEFAULT_IMAGE_MODE,
    DISK_IMAGE_INPUT_KEYS,
    DISK_IMAGE_OUTPUT_KEYS,
    topSchema,
    type ImageFormat,
} from "../../core/diskImageSpec";
import { hashValue } from "../../core/hash";
import { InputError, parseOrThrow, refuseUnknownKeys } from "../../core/validation";
import { sourceKind, SOURCES, type SourceContent, type SourceKindName, type SourceSpec } from "./sources";

export type { SourceContent, SourceSpec } from "./sources";

export interface DiskImageSpec {
    source: SourceSpec;
    /** Where the image goes when the user says so; otherwise a file under the state directory. */
    path?: string;
    stateDir?: string;
    /** The image file's mode; 0600 unless asked. */
    mode: number;
}

const KINDS = Object.keys(SOURCES) as SourceKindName[];

const sourceSchema = z
    .discriminatedUnion(
        "kind",
        Object.values(SOURCES).map((s) => s.schema) as unknown as [z.ZodObject<any>, ...z.ZodObject<any>[]],
        {
            error: `kind must be one of ${KINDS.map((k) => `"${k}"`).join(", ")}`,
        },
    )
    .meta({
        typeName: "DiskImageSource",
        description: "What an image is made from; `kind` picks the fields that apply.",
    });

/** A DiskImage's inputs as the schema, the SDK and the docs show them (parseDiskImageSpec judges them in two parts). */
export const diskImageInputs = z.object({
    source: sourceSchema.meta({
        description: "What the image is made from. Any change replaces the image.",
        replaceOnChanges: true,
    }),
    ...topSchema.shape,
});

/** Validates a DiskImage's inputs, or throws an InputError naming each bad field (`source.size`, `path`…). */
export function parseDiskImageSpec(inputs: {
    source?: unknown;
    path?: unknown;
    stateDir?: unknown;
    mode?: unknown;
}): DiskImageSpec {
    refuseUnknownKeys(inputs as Record<string, unknown>, DISK_IMAGE_INPUT_KEYS, DISK_IMAGE_OUTPUT_KEYS);
    if (
        inputs.source === undefined ||
        inputs.source === null ||
        typeof inputs.source !== "object" ||
        Array.isArray(inputs.source)
    ) {
        // Also what `pulumi import` of a file, directory or cloudInit image leads to: the image cannot tell its source.
        const missing =
            inputs.source === undefined
                ? "; an imported image whose source pulumi-qemu cannot tell from the image (a file, directory or cloudInit image) needs the source it was made from: declare it in the program with the `import` resource option instead of `pulumi import`"
                : "";
        throw new InputError([
            { property: "source", reason: `source must be an object with a kind (${KINDS.join(", ")})${missing}` },
        ]);
    }
    const top = parseOrThrow(topSchema, { path: inputs.path, stateDir: inputs.stateDir, mode: inputs.mode }, "");
    const raw = parseOrThrow(sourceSchema, inputs.source, "source") as { kind: SourceKindName };
    const source = sourceKind(raw.kind).toSpec(raw) as SourceSpec;
    // A read-only kind (a downloaded base) keeps the mode asked for without its write bits, so diff compares what is on disk.
    const mode = (top.mode ?? DEFAULT_IMAGE_MODE) & (sourceKind(raw.kind).readOnly ? ~0o222 : ~0);
    const spec: DiskImageSpec = { source, path: top.path && path.normalize(top.path), stateDir: top.stateDir, mode };
    refuseSelfBacking(spec);
    return spec;
}

function refuseSelfBacking(spec: DiskImageSpec): void {
    if (spec.path === undefined) return;
    const reads = sourceKind(spec.source.kind).reads?.(spec.source);
    if (reads !== undefined && reads.path === spec.path) {
        throw new InputError([
            {
                property: reads.field,
                reason: `${reads.field} is the image's own path ${spec.path}: an image cannot be made from itself`,
            },
        ]);
    }
}

/** The format of the file the provider writes; `detectedFormat` is the format a file source was found in. */
export function imageFormat(source: SourceSpec, detectedFormat?: ImageFormat): ImageFormat {
    return sourceKind(source.kind).format(source, detectedFormat);
}

/**
 * The image's identity. Sizes enter as the bytes asked for ("1G" and 1073741824 are the same
 * image, and what qemu-img rounds to never feeds back); a file or directory source enters by
 * content, not by where it lies; an overlay by its backing's path (it is written into the
 * overlay's header) and the backing's identity.
 */
export function imageInputHash(source: SourceSpec, content: SourceContent): string {
    if (source.kind !== content.kind)
        throw new Error(`imageInputHash: ${source.kind} source with ${content.kind} content`);
    return hashValue({
        what: "pulumi-qemu DiskImage",
        version: 1,
        spec: sourceKind(source.kind).specForHash(source),
        content,
    });
}
