/**
 * What a DiskImage takes and what its state keeps: its inputs as given and its outputs (the
 * record read, diff and delete work from). Kept apart from the lifecycle so the parts that read
 * state (import, record) need not import the lifecycle that imports them.
 */
import type { ImageFormat } from "../../core/diskImageSpec";
import type { DigestAlgorithm } from "../../core/hash";
import type { FileStamp } from "../../host/files/fileHash";
import type { PlacementInputs, PlacementOutputs } from "../placement";

export interface DiskImageInputs extends PlacementInputs {
    source: unknown;
    path?: string;
    stateDir?: string;
    /** Octal text such as "0640"; 0600 when absent. */
    mode?: string;
}

/** Which record an overlay's backing identity came from. */
export type BackingIdentityFrom = "input" | "sidecar" | "content";

export interface DiskImageOutputs extends PlacementOutputs {
    /** The inputs as given, so diff and read see what the user wrote. */
    source: unknown;
    stateDir?: string;
    path: string;
    /** True when `path` was chosen by the provider under the state directory. */
    pathDefaulted: boolean;
    /** The file's mode as created, octal ("0600"). Absent in records made before modes were set. */
    mode?: string;
    format: ImageFormat;
    virtualSizeBytes: number;
    inputHash: string;
    /** The size exactly as written in the source, when it has one. */
    sizeRequested?: string | number;
    backingPath?: string;
    backingFormat?: ImageFormat;
    /** The backing image's identity: its inputHash, or its content's digest when it is not ours. */
    backingInputHash?: string;
    backingIdentityFrom?: BackingIdentityFrom;
    /** The backing file's stamp when the overlay was made: any later change to it is drift. */
    backingStamp?: FileStamp;
    /** Digest of the image's bytes when created, for the kinds whose bytes are fixed by their inputs (file, directory). */
    contentFingerprint?: string;
    /**
     * What read found instead of `contentFingerprint`. Kept apart from it: were read to overwrite
     * the created fingerprint, the next diff (whose olds are read's output) would see no drift.
     */
    foundFingerprint?: string;
    /**
     * How this record's content digests were taken. Records from 0.1 have none and used SHA-256;
     * they keep being compared by it, so an upgrade alone replaces nothing.
     */
    digestAlgorithm?: DigestAlgorithm;
    /** The image file's stamp right after creation. */
    imageStamp: FileStamp;
    createdByProvider: true;
    /** What read found changed behind the provider's back; the next diff replaces the image. */
    drift?: string;
}
