/**
 * What a DiskImage source kind is: one module per kind (blank.ts, file.ts, …) gives its input
 * schema, its spec once normalised, the format of the image it makes, the part of its spec that
 * enters the image's identity, what it reads on the host, and how it builds the file. The table
 * in index.ts is the only list of kinds: a new kind is one module and one line there.
 */
import type { z } from "zod";
import type { ImageFormat } from "../../../core/diskImageSpec";
import type { DigestAlgorithm } from "../../../core/hash";
import { InputError } from "../../../core/validation";
import { hashFileCached, type FileStamp, type HashCache, type ReadCounter } from "../../../host/files/fileHash";
import type { ImageInfo } from "../../../host/images/qemuImg";
import type { BackingIdentityFrom } from "../state";

/** What every read during one call shares: the hash cache and how digests are taken. */
export interface Context {
    stateDir: string;
    cache: HashCache;
    /** Diff and read digest content as the record did; create, as this version does. */
    algorithm: DigestAlgorithm;
    counter?: ReadCounter;
    /** Create: a source may fetch what it is made from (a url download). A preview's diff may not. */
    fetches?: boolean;
}

/** What a source read on the host: its content (which enters the image's identity) and what building needs. */
export interface SourceRead<C extends { kind: string } = { kind: string }> {
    content: C;
    /** Directory sources: what goes into the filesystem. */
    tree?: { paths: string[]; dataBytes: number; rootUid?: number; rootGid?: number };
    /** Overlays: the backing as found. */
    backing?: { info: ImageInfo; stamp: FileStamp; identityFrom: BackingIdentityFrom; identity: string };
    /** The format a read found when it is no part of the identity (a url image's, fixed by its checksum). */
    detected?: ImageFormat;
}

/** A source resolved: what was read, and the identity and format that follow. */
export interface Resolved<C extends { kind: string } = { kind: string }> extends SourceRead<C> {
    inputHash: string;
    format: ImageFormat;
}

export interface SourceKind<K extends string, S extends { kind: K }, C extends { kind: K }> {
    /** The input's schema: a strict object whose `kind` is the literal K (one member of the source union). */
    schema: z.ZodObject<any>;
    /** The parsed input normalised (paths normalised, sizes in bytes). */
    toSpec(raw: any): S;
    /** The format of the file the provider writes; `detected` is the format a file source was found in. */
    format(spec: S, detected?: ImageFormat): ImageFormat;
    /** The part of the spec that enters the image's identity (host noise left out). */
    specForHash(spec: S): unknown;
    /** The file this source reads, when it may not be the image itself, and the field that names it. */
    reads?(spec: S): { path: string; field: string };
    /** The format a read found, when the image's format follows it. */
    detectedFormat?(content: C): ImageFormat;
    /** Whether the image's bytes are fixed by its inputs, so read can compare them by digest. */
    fixedBytes: boolean;
    /** The image is made read-only: the mode asked for loses its write bits (a downloaded base). */
    readOnly?: boolean;
    /** Reads what the image is made from; `target` is where the image goes (to refuse loops). Bad sources are InputErrors naming the field. */
    read(spec: S, ctx: Context, target: string | undefined): Promise<SourceRead<C>>;
    /** Writes the image into `temp` (already created, owner-only). */
    build(spec: S, resolved: Resolved<C>, temp: string, ctx: Context): Promise<void>;
}

export function fieldError(property: string, reason: string): InputError {
    return new InputError([{ property, reason }]);
}

export function digestOf(file: string, ctx: Context): Promise<string> {
    return hashFileCached(file, ctx.cache, ctx.algorithm, ctx.counter).then((h) => h.digest);
}
