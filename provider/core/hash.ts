import { sha256 } from "@noble/hashes/sha2";
import { bytesToHex, utf8ToBytes } from "@noble/hashes/utils";

/**
 * How file contents are hashed. BLAKE3 since 0.2: on a multi-GiB image it runs at memory speed
 * on every core where SHA-256 is held to one. "sha256" remains for images recorded by 0.1, so
 * that upgrading the provider does not make their hashes look changed.
 */
export type DigestAlgorithm = "blake3" | "sha256";
export const CONTENT_DIGEST: DigestAlgorithm = "blake3";
/** What records written before the algorithm was recorded were hashed with. */
export const LEGACY_CONTENT_DIGEST: DigestAlgorithm = "sha256";

/**
 * A digest keyed by its algorithm's name, as it enters an identity: the name tells a BLAKE3
 * identity from a 0.1 SHA-256 one, and keeps 0.1's records hashing exactly as they did.
 */
export type DigestByName = { blake3: string } | { sha256: string };

export function digestByName(algorithm: DigestAlgorithm, digest: string): DigestByName {
    return algorithm === "blake3" ? { blake3: digest } : { sha256: digest };
}

/** Hex SHA-256 of a string (as UTF-8) or of bytes. */
export function sha256Hex(data: string | Uint8Array): string {
    return bytesToHex(sha256(typeof data === "string" ? utf8ToBytes(data) : data));
}

/**
 * JSON with object keys sorted at every depth and `undefined` members dropped, so that two
 * values that mean the same thing serialize to the same text whatever order their keys were
 * written in. Hashes are taken over this text.
 */
export function canonicalJson(value: unknown): string {
    if (value === null || typeof value !== "object") {
        if (typeof value === "number" && !Number.isFinite(value)) {
            throw new Error(`canonicalJson: ${value} has no JSON form`);
        }
        return JSON.stringify(value);
    }
    if (Array.isArray(value)) {
        return `[${value.map((v) => (v === undefined ? "null" : canonicalJson(v))).join(",")}]`;
    }
    const entries = Object.keys(value as Record<string, unknown>)
        .filter((k) => (value as Record<string, unknown>)[k] !== undefined)
        .sort()
        .map((k) => `${JSON.stringify(k)}:${canonicalJson((value as Record<string, unknown>)[k])}`);
    return `{${entries.join(",")}}`;
}

/** A stable hex hash of any JSON-like value: the same meaning gives the same hash. */
export function hashValue(value: unknown): string {
    return sha256Hex(canonicalJson(value));
}

/** The hash diffs compare for a launcher: each argument length-framed so ["a b"] ≠ ["a", "b"]. */
export function argvHash(argv: readonly string[]): string {
    return hashValue(argv);
}
