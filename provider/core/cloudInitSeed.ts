import { z } from "zod";
import * as YAML from "yaml";
import { hashValue, sha256Hex } from "./hash";
import { InputError, nestingDepth, plainText, type FieldProblem } from "./validation";

/**
 * cloud-init NoCloud seeds, rendered: the files `user-data`, `meta-data` and optionally
 * `network-config` and `vendor-data`, as bytes fixed by the inputs alone. Writing them into an
 * ISO or FAT image is the host's job (provider/host/images/seedImage.ts); this module decides what
 * goes in and what the seed's identity is.
 *
 * User data often carries secrets (password hashes, keys, tokens): nothing here puts a value
 * of it into an error message. A bad YAML document is reported by line and column only.
 */

export type SeedFormat = "iso" | "vfat";

export interface SeedFile {
    /** The NoCloud file name, e.g. "user-data". */
    name: string;
    text: string;
}

export interface CloudInitSourceSpec {
    kind: "cloudInit";
    format: SeedFormat;
    /** The files in name order, meta-data carrying the resolved instance-id. */
    files: SeedFile[];
    instanceId: string;
}

/** NoCloud limits nothing, but a seed is configuration: anything this big is a mistake (or a disk image). */
export const MAX_SEED_BYTES = 1024 * 1024;

/** ISO 9660 volume label (and FAT label, upper-cased there) cloud-init's NoCloud looks for. */
export const SEED_LABEL = "cidata";

const plainObject = (what: string) =>
    z.custom<Record<string, unknown>>((v) => typeof v === "object" && v !== null && !Array.isArray(v), {
        error: `${what} must be an object`,
    });

const documentSchema = (what: string) =>
    z.union([z.string(), plainObject(what)], {
        error: `${what} must be a string (such as "#cloud-config\\n…" or a "#!" script) or an object, which is rendered as #cloud-config YAML`,
    });

const hostname = plainText("metaData.local-hostname").regex(/^[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$/, {
    error: "metaData.local-hostname must be a host name: letters, digits, dots and hyphens, not starting or ending with a dot or hyphen",
});

/** Deeper than any cloud-init configuration goes, and shallow enough to render without exhausting the stack. */
export const MAX_DOCUMENT_DEPTH = 64;

export const cloudInitSchema = z
    .object({
        kind: z.literal("cloudInit").meta({ description: "A cloud-init NoCloud seed." }),
        userData: documentSchema("userData").meta({
            description: "User data: text (a script or #cloud-config), or an object rendered as #cloud-config YAML.",
            accepts: ["string", "object"],
        }),
        metaData: z
            .object({
                "instance-id": plainText("metaData.instance-id")
                    .min(1, { error: "metaData.instance-id must not be empty" })
                    .optional()
                    .meta({ description: "The instance id; default one derived from the seed's content." }),
                "local-hostname": hostname.optional().meta({ description: "Names the guest." }),
            })
            .catchall(z.unknown())
            .optional()
            .meta({ description: "The seed's meta-data; keys other than these are passed through." }),
        networkConfig: plainObject("networkConfig")
            .optional()
            .meta({ description: "Network configuration version 2 (an object); default none.", accepts: ["object"] }),
        vendorData: documentSchema("vendorData")
            .optional()
            .meta({ description: "Vendor data, text or an object; default none.", accepts: ["string", "object"] }),
        format: z
            .enum(["iso", "vfat"], { error: 'format must be "iso" (ISO 9660, the default) or "vfat"' })
            .default("iso")
            .meta({ typeName: "SeedFormat", description: '"iso" (ISO 9660) or "vfat".' }),
    })
    .strict()
    .meta({
        typeName: "CloudInitSource",
        description:
            "A cloud-init NoCloud seed (volume cidata); objects are rendered as YAML, user data as #cloud-config.",
    })
    .superRefine((input, ctx) => {
        // Rendering YAML recurses: a document nested thousands deep would overflow the stack instead of being refused.
        for (const key of ["userData", "metaData", "networkConfig", "vendorData"] as const) {
            if (nestingDepth(input[key], MAX_DOCUMENT_DEPTH) > MAX_DOCUMENT_DEPTH) {
                ctx.addIssue({
                    code: "custom",
                    path: [key],
                    message: `${key} nests objects or lists more than ${MAX_DOCUMENT_DEPTH} levels deep; cloud-init configuration is a few levels deep: flatten it`,
                });
            }
        }
    });

export type CloudInitInput = z.output<typeof cloudInitSchema>;

/** YAML with map keys sorted: the engine does not keep the key order of objects it passes along. */
export function renderYaml(value: unknown): string {
    return YAML.stringify(value, { sortMapEntries: true, lineWidth: 0, version: "1.1" });
}

/**
 * A document as cloud-init reads it: an object becomes `#cloud-config`; a string is kept as
 * written, and if it says it is `#cloud-config` its YAML must parse to a mapping (refused
 * otherwise: cloud-init would ignore the whole document and the VM would boot unconfigured).
 */
function renderDocument(value: string | Record<string, unknown>, field: string, problems: FieldProblem[]): string {
    if (typeof value !== "string") return `#cloud-config\n${renderYaml(value)}`;
    const firstLine = value.split("\n", 1)[0].trim();
    if (firstLine === "#cloud-config") {
        const why = yamlMappingProblem(value);
        if (why)
            problems.push({
                property: field,
                reason: `${field} starts with #cloud-config but ${why}; cloud-init would ignore it. Fix the YAML (or pass an object)`,
            });
    }
    return value;
}

/** Why `text` is not a YAML mapping, by position only (the text may hold secrets), or undefined. */
export function yamlMappingProblem(text: string): string | undefined {
    const doc = YAML.parseDocument(text, { version: "1.1", prettyErrors: false, uniqueKeys: true });
    if (doc.errors.length) {
        // The position, never the message: yaml's messages quote the offending line.
        const e = doc.errors[0];
        const before = text.slice(0, e.pos[0]);
        const line = before.split("\n").length;
        const col = before.length - before.lastIndexOf("\n");
        return `is not valid YAML (${e.code} at line ${line}, column ${col})`;
    }
    const root = doc.contents;
    if (root !== null && !YAML.isMap(root)) return "its YAML is not a mapping of keys to values";
    return undefined;
}

function networkProblem(config: Record<string, unknown>): string | undefined {
    const inner = config.network;
    const version =
        typeof inner === "object" && inner !== null && !Array.isArray(inner)
            ? (inner as Record<string, unknown>).version
            : config.version;
    return version === 2
        ? undefined
        : "networkConfig must be cloud-init network configuration version 2 (version: 2, or network: { version: 2, … })";
}

/**
 * Renders the seed's files and resolves its instance-id. The default instance-id is derived from
 * everything else in the seed, so any change to it makes cloud-init run again, even on a disk
 * that keeps its state across boots.
 */
export function renderCloudInitSeed(input: CloudInitInput): CloudInitSourceSpec {
    const problems: FieldProblem[] = [];
    const userData = renderDocument(input.userData, "source.userData", problems);
    const vendorData =
        input.vendorData === undefined ? undefined : renderDocument(input.vendorData, "source.vendorData", problems);
    if (input.networkConfig !== undefined) {
        const why = networkProblem(input.networkConfig);
        if (why) problems.push({ property: "source.networkConfig", reason: why });
    }
    if (problems.length) throw new InputError(problems);
    const networkConfig = input.networkConfig === undefined ? undefined : renderYaml(input.networkConfig);
    const { "instance-id": given, ...restMeta } = input.metaData ?? {};
    const instanceId =
        given ?? defaultInstanceId({ userData, metaData: restMeta, networkConfig, vendorData, format: input.format });
    const files: SeedFile[] = [
        { name: "meta-data", text: renderYaml({ ...restMeta, "instance-id": instanceId }) },
        ...(networkConfig === undefined ? [] : [{ name: "network-config", text: networkConfig }]),
        { name: "user-data", text: userData },
        ...(vendorData === undefined ? [] : [{ name: "vendor-data", text: vendorData }]),
    ];
    const total = files.reduce((n, f) => n + Buffer.byteLength(f.text), 0);
    if (total > MAX_SEED_BYTES) {
        throw new InputError([
            {
                property: "source.userData",
                reason: `the seed's files add up to ${total} bytes, more than the ${MAX_SEED_BYTES}-byte (1 MiB) limit; put large files on a disk image or a share and have the user data fetch or mount them`,
            },
        ]);
    }
    return { kind: "cloudInit", format: input.format, files, instanceId };
}

function defaultInstanceId(parts: Record<string, unknown>): string {
    return `iid-${hashValue({ what: "pulumi-qemu cloud-init instance", ...parts }).slice(0, 20)}`;
}

/**
 * What a seed contributes to its image's identity: the format and each file by name and digest.
 * Canonical JSON frames every field, so ("ab","c") and ("a","bc") cannot collide.
 */
export function seedSpecForHash(spec: CloudInitSourceSpec): unknown {
    return {
        kind: "cloudInit",
        layout: 1,
        format: spec.format,
        files: spec.files.map((f) => ({ name: f.name, sha256: sha256Hex(f.text) })),
    };
}
