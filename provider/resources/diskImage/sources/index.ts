/**
 * The DiskImage source kinds, listed once: parsing, the image's format and identity, reading and
 * building all dispatch through this table. A new kind is one module beside these and one line here.
 */
import { blank } from "./blank";
import { cloudInit } from "./cloudInit";
import { directory } from "./directory";
import { file } from "./file";
import { overlay } from "./overlay";
import { url } from "./url";

export const SOURCES = { blank, file, directory, overlay, cloudInit, url } as const;

export type SourceKindName = keyof typeof SOURCES;

type SpecOf<T> = T extends { toSpec(raw: any): infer S } ? S : never;
type ContentOf<T> = T extends { read(...a: any[]): Promise<{ content: infer C }> } ? C : never;

/** A source as parsed and normalised, whichever its kind. */
export type SourceSpec = { [K in SourceKindName]: SpecOf<(typeof SOURCES)[K]> }[SourceKindName];
/** What was read to make the image, as the provider found it, whichever its kind. */
export type SourceContent = { [K in SourceKindName]: ContentOf<(typeof SOURCES)[K]> }[SourceKindName];

/** The module of a source's kind, typed loosely: the caller holds a spec of that very kind. */
export function sourceKind(kind: SourceKindName): import("./source").SourceKind<string, any, any> {
    return SOURCES[kind] as unknown as import("./source").SourceKind<string, any, any>;
}
