/**
 * A cloud-init seed (NoCloud): an ISO 9660 or FAT image holding user-data, meta-data and the
 * rest, rendered from the inputs (core/cloudInitSeed.ts) and written without root. Everything a
 * seed is made of is in its inputs: nothing is read.
 */
import {
    cloudInitSchema,
    renderCloudInitSeed,
    seedSpecForHash,
    type CloudInitSourceSpec,
} from "../../../core/cloudInitSeed";
import { writeSeedImage } from "../../../host/images/seedImage";
import type { SourceKind } from "./source";

export const cloudInit: SourceKind<"cloudInit", CloudInitSourceSpec, { kind: "cloudInit" }> = {
    schema: cloudInitSchema,
    toSpec: (raw) => renderCloudInitSeed(raw),
    format: () => "raw",
    specForHash: (spec) => seedSpecForHash(spec),
    fixedBytes: true,
    read: async () => ({ content: { kind: "cloudInit" } }),
    build: (spec, _resolved, temp) => writeSeedImage({ files: spec.files, format: spec.format, out: temp }),
};
