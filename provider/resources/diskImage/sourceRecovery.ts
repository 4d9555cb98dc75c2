import type * as pulumi from "@pulumi/pulumi";
import type { ImageFormat } from "../../core/diskImageSpec";
import { backingChain } from "../../host/images/qemuImg";

/**
 * What a DiskImage was made from, worked out from the image itself for `pulumi import`: the
 * record beside an image keeps its inputHash, not its source, and an import whose inputs lack
 * `source` fails check — which Pulumi reports as a bug of the provider, since the inputs came
 * from its own Read. Where the image tells (a blank image: its size and format; an overlay: its
 * backing file, that file's format and the overlay's size), each candidate source is put to the
 * very diff an `up` would run against the adopted state: the first that shows no change is the
 * source, so what import returns always passes check and hashes the same. A copied file, a
 * directory's filesystem or a cloud-init seed do not say where they came from: none is returned,
 * and the user declares the source with the `import` resource option instead (docs/drift-and-import.md).
 */

export interface RecoveryFacts {
    format: ImageFormat;
    virtualSizeBytes: number;
    backingPath?: string;
}

/** Whether these inputs, diffed against the adopted state, show no change. */
export type Matches = (inputs: Record<string, unknown>) => Promise<boolean>;

/** `size` as users write it: the largest binary suffix that divides it, else bytes. */
export function sizeText(bytes: number): string | number {
    for (const [suffix, unit] of [
        ["T", 1024 ** 4],
        ["G", 1024 ** 3],
        ["M", 1024 ** 2],
        ["K", 1024],
    ] as const) {
        if (bytes >= unit && bytes % unit === 0) return `${bytes / unit}${suffix}`;
    }
    return bytes;
}

/** The backing file's own format, as qemu-img detects it (what create recorded into the hash). */
async function detectedFormat(file: string): Promise<ImageFormat | undefined> {
    const chain = await backingChain(file).catch(() => undefined);
    const f = chain?.[0]?.format;
    return f === "raw" || f === "qcow2" ? f : undefined;
}

function candidates(facts: RecoveryFacts, backingFormat: ImageFormat | undefined): Record<string, unknown>[] {
    const size = sizeText(facts.virtualSizeBytes);
    if (facts.backingPath === undefined) return [{ kind: "blank", size, format: facts.format }];
    if (facts.format !== "qcow2") return [];
    const base = { kind: "overlay", backing: facts.backingPath, ...(backingFormat ? { backingFormat } : {}) };
    // Without `size` (the backing's size) first: most overlays are declared that way.
    return [base, { ...base, size }];
}

/** The `source` input that reproduces the image, or undefined when the image cannot tell. */
export async function recoverSource(
    facts: RecoveryFacts,
    topInputs: Record<string, unknown>,
    matches: Matches,
): Promise<pulumi.Inputs | undefined> {
    const backingFormat = facts.backingPath ? await detectedFormat(facts.backingPath) : undefined;
    for (const source of candidates(facts, backingFormat)) {
        if (await matches({ ...topInputs, source }).catch(() => false)) return source;
    }
    return undefined;
}
