import * as path from "node:path";
import { z } from "zod";
import { sha256Hex } from "./hash";
import { parseSize } from "./size";
import { fileModeSchema, IMAGE_MODE } from "./fileMode";
import { absolutePath, hostFilePath } from "./validation";
import { diskImageOutputs, outputNames } from "./outputSpecs";

/**
 * The parts of a DiskImage's inputs common to every source kind: the formats, sizes, the
 * top-level fields and their defaults, default file names and the sidecar's. Each kind's own
 * schema and identity rule is in resources/diskImage/sources/<kind>.ts, and parsing a whole
 * DiskImage in resources/diskImage/spec.ts.
 */

export type ImageFormat = "raw" | "qcow2";

/** ext4 limits a volume label to 16 bytes. */
export const MAX_EXT4_LABEL_BYTES = 16;

export const formatSchema = (what: string) => z.enum(["raw", "qcow2"], { error: `${what} must be "raw" or "qcow2"` });

export const sizeSchema = z.unknown().transform((value, ctx) => {
    const parsed = parseSize(value);
    if (!parsed.ok) {
        ctx.addIssue({ code: "custom", message: parsed.reason });
        return z.NEVER;
    }
    return parsed.bytes;
});

export const hexDigest = z.string({ error: "backingInputHash must be a string" }).regex(/^[0-9a-f]{16,128}$/, {
    error: "backingInputHash must be a lowercase hex digest (a DiskImage's inputHash output)",
});

/** Images may hold private data (a key copied in from a 0700 directory): the owner's only unless asked. */
export const DEFAULT_IMAGE_MODE = 0o600;

export const topSchema = z.object({
    path: hostFilePath("path").optional().meta({
        description:
            "Absolute path where the image goes; default a file under the state directory's images/ named after the input hash. Moving it replaces the image.",
        replaceOnChanges: true,
    }),
    stateDir: absolutePath("stateDir").optional().meta({
        description:
            "State directory for default paths; default $PULUMI_QEMU_STATE_DIR, else $XDG_STATE_HOME/pulumi-qemu, else ~/.local/state/pulumi-qemu.",
    }),
    mode: fileModeSchema("mode", IMAGE_MODE).optional().meta({
        description:
            'The image file\'s mode as octal text, e.g. "0640"; default "0600". No execute bits; a new mode replaces the image.',
        replaceOnChanges: true,
    }),
});

/** A DiskImage's inputs; any other top-level key is refused (see refuseUnknownKeys). */
export const DISK_IMAGE_INPUT_KEYS: readonly string[] = ["source", ...Object.keys(topSchema.shape)];
/** The output names the SDK declares (as undefined) for DiskImage, from its output declaration. */
export const DISK_IMAGE_OUTPUT_KEYS: readonly string[] = outputNames(diskImageOutputs);

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
    return {
        uuid: uuidFrom(sha256Hex(`ext4-uuid:${inputHash}`)),
        hashSeed: uuidFrom(sha256Hex(`ext4-hash-seed:${inputHash}`)),
    };
}

/** An RFC 4122 version-4-shaped UUID from the first 16 bytes of a hex digest. */
function uuidFrom(hex: string): string {
    const b = hex.slice(0, 32).split("");
    b[12] = "4";
    b[16] = ((parseInt(b[16], 16) & 0x3) | 0x8).toString(16);
    const h = b.join("");
    return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20, 32)}`;
}
