import { createHash } from "node:crypto";
import { open, stat } from "node:fs/promises";
import type { DigestAlgorithm } from "../core/hash";
import { b3sumFile, b3sumUsable } from "./b3sum";

/**
 * One file's content digest, read once, by the fastest means at hand. BLAKE3 goes through
 * b3sum for big files (every core, memory-mapped) and through a native hasher in-process for
 * small ones, where starting a process costs more than the hashing; every path gives the same
 * digest, so which one ran never shows in a hash.
 */

/** Counts what was really read, so tests and benchmarks can tell a cache hit from a re-read. */
export interface ReadCounter {
    files: number;
    bytes: number;
}

/**
 * From this size b3sum, on every core, is worth its start-up over the native addon. Measured on
 * 2 cores (page cache, median of 7): even from 16 to 256 MiB (9 / 9 ms at 16 MiB, 20 / 21 ms at
 * 64 MiB, 62 / 62 ms at 256 MiB), b3sum ahead at 2 GiB (380 / 414 ms); more cores move it ahead sooner.
 */
export const B3SUM_FROM_BYTES = 64 * 1024 * 1024;

/** Without the addon, b3sum's start-up (~5 ms) beats JavaScript BLAKE3 from about here (128 KiB: 5 / 7.5 ms). */
export const B3SUM_OVER_JAVASCRIPT_FROM_BYTES = 64 * 1024;

/** 4 MiB reads: large enough that syscalls cost nothing next to hashing, small enough to stay in cache. */
export const READ_BUFFER_BYTES = 4 * 1024 * 1024;

/** The ways to a BLAKE3 digest, fastest first; all give the same digest. */
export type Blake3Engine = "b3sum" | "native" | "javascript";

export interface DigestOptions {
    counter?: ReadCounter;
    /** Force one BLAKE3 engine (tests and benchmarks compare them); by default the fastest that fits. */
    via?: Blake3Engine;
}

export async function digestFile(file: string, algorithm: DigestAlgorithm, opts: DigestOptions = {}): Promise<{ digest: string; bytes: number }> {
    const result = algorithm === "sha256" ? await streamDigest(file, sha256Hasher()) : await blake3File(file, opts.via);
    if (opts.counter) {
        opts.counter.files += 1;
        opts.counter.bytes += result.bytes;
    }
    return result;
}

async function pickEngine(file: string, size: number): Promise<Blake3Engine> {
    if (size >= B3SUM_FROM_BYTES && (await b3sumUsable())) return "b3sum";
    if (nativeBlake3()) return "native";
    if (size >= B3SUM_OVER_JAVASCRIPT_FROM_BYTES && (await b3sumUsable())) return "b3sum";
    if (size >= B3SUM_FROM_BYTES) warnSlowBlake3(file);
    return "javascript";
}

async function blake3File(file: string, via: Blake3Engine | undefined): Promise<{ digest: string; bytes: number }> {
    const { size } = await stat(file);
    switch (via ?? (await pickEngine(file, size))) {
        case "b3sum":
            // b3sum maps the file and reads all of it: that is what the counter is for.
            return { digest: await b3sumFile(file), bytes: size };
        case "native": {
            const addon = nativeBlake3();
            if (!addon) throw new Error(`@napi-rs/blake-hash has no prebuilt addon for ${process.platform}-${process.arch}`);
            const h = new addon.Blake3Hasher();
            return streamDigest(file, { update: (d) => void h.update(d), hex: () => h.digest("hex") });
        }
        case "javascript": {
            const { blake3 } = require("@noble/hashes/blake3") as typeof import("@noble/hashes/blake3");
            const h = blake3.create({});
            return streamDigest(file, { update: (d) => void h.update(d), hex: () => Buffer.from(h.digest()).toString("hex") });
        }
    }
}

interface Hasher {
    update(data: Buffer): void;
    hex(): string;
}

function sha256Hasher(): Hasher {
    const h = createHash("sha256");
    return { update: (d) => void h.update(d), hex: () => h.digest("hex") };
}

let native: typeof import("@napi-rs/blake-hash") | null | undefined;

/** The prebuilt addon for this platform, or null where npm had none to install. */
function nativeBlake3(): typeof import("@napi-rs/blake-hash") | null {
    if (native === undefined) {
        try {
            native = require("@napi-rs/blake-hash") as typeof import("@napi-rs/blake-hash");
        } catch {
            native = null;
        }
    }
    return native;
}

let warned = false;

/** JavaScript BLAKE3 is right but a hundred times slower than b3sum or more: say why a big image takes minutes. */
function warnSlowBlake3(file: string): void {
    if (warned) return;
    warned = true;
    process.stderr.write(
        `pulumi-qemu: hashing ${file} with BLAKE3 in JavaScript, which is slow: no prebuilt @napi-rs/blake-hash for ${process.platform}-${process.arch} and no working b3sum. Install b3sum (Debian: apt-get install b3sum) to hash images at disk speed.\n`,
    );
}

/** Two buffers alternate so the next read runs on libuv's pool while this one is hashed. */
async function streamDigest(file: string, hasher: Hasher, bufferBytes = READ_BUFFER_BYTES): Promise<{ digest: string; bytes: number }> {
    const fh = await open(file, "r");
    try {
        let current = Buffer.allocUnsafe(bufferBytes);
        let spare = Buffer.allocUnsafe(bufferBytes);
        let total = 0;
        let pending = fh.read(current, 0, bufferBytes, null);
        for (;;) {
            const { bytesRead } = await pending;
            if (bytesRead === 0) break;
            const filled = current;
            [current, spare] = [spare, current];
            pending = fh.read(current, 0, bufferBytes, null);
            hasher.update(filled.subarray(0, bytesRead));
            total += bytesRead;
        }
        return { digest: hasher.hex(), bytes: total };
    } finally {
        await fh.close();
    }
}
