import { createHash } from "node:crypto";
import { closeSync, openSync, readSync } from "node:fs";
import { open, stat } from "node:fs/promises";
import type { DigestAlgorithm } from "../../core/hash";
import { b3sumFile, b3sumUsable } from "./b3sum";
import { humanBytes, reporting, warn, whileWorking } from "../progress";

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

/**
 * Up to this size a file is read in one synchronous call. A directory tree is mostly small files,
 * and for those the thread-pool trips of open, read and close cost ten times the read itself
 * (2000 files of 1 KB: 40 ms read whole, 230 ms through fs/promises).
 */
export const READ_WHOLE_UP_TO_BYTES = 256 * 1024;

/** The ways to a BLAKE3 digest, fastest first; all give the same digest. */
export type Blake3Engine = "b3sum" | "native" | "javascript";

export interface DigestOptions {
    counter?: ReadCounter;
    /** Force one BLAKE3 engine (tests and benchmarks compare them); by default the fastest that fits. */
    via?: Blake3Engine;
    /** The size the caller's own stat just gave, to save another (a tree walk has lstat'ed every file). */
    size?: number;
}

/** Files from this size get progress lines while hashed (at disk speed, about a tenth of a second). */
const PROGRESS_FROM_BYTES = 16 * 1024 * 1024;

export async function digestFile(
    file: string,
    algorithm: DigestAlgorithm,
    opts: DigestOptions = {},
): Promise<{ digest: string; bytes: number }> {
    const size = opts.size ?? (await stat(file)).size;
    const engine = algorithm === "sha256" ? "sha256" : (opts.via ?? (await pickEngine(file, size)));
    // b3sum maps the file and reads all of it: that is what the counter is for.
    const done = { bytes: 0 };
    const hash = () =>
        engine === "b3sum"
            ? b3sumFile(file).then((digest) => ({ digest, bytes: size }))
            : readDigest(file, size, hasherFor(engine), done);
    // Only a big file can take long enough to report on; a tree's thousands of small ones skip the timer.
    const result =
        size >= PROGRESS_FROM_BYTES
            ? await whileWorking(
                  (elapsed) => hashingStatus(file, size, engine === "b3sum" ? undefined : done.bytes, elapsed),
                  hash,
              )
            : await hash();
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

interface Hasher {
    update(data: Buffer): void;
    hex(): string;
}

function hasherFor(engine: "sha256" | "native" | "javascript"): Hasher {
    switch (engine) {
        case "sha256": {
            const h = createHash("sha256");
            return { update: (d) => void h.update(d), hex: () => h.digest("hex") };
        }
        case "native": {
            const addon = nativeBlake3();
            if (!addon)
                throw new Error(`@napi-rs/blake-hash has no prebuilt addon for ${process.platform}-${process.arch}`);
            const h = new addon.Blake3Hasher();
            return { update: (d) => void h.update(d), hex: () => h.digest("hex") };
        }
        case "javascript": {
            const { blake3 } = require("@noble/hashes/blake3") as typeof import("@noble/hashes/blake3");
            const h = blake3.create({});
            return { update: (d) => void h.update(d), hex: () => Buffer.from(h.digest()).toString("hex") };
        }
    }
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

/** "hashing /x.img (20 GiB): 45 % after 12 s"; b3sum says nothing of how far it got, so only the time then. */
export function hashingStatus(
    file: string,
    size: number,
    bytesDone: number | undefined,
    elapsedSeconds: number,
): string {
    const share =
        bytesDone !== undefined && size > 0 ? `${Math.min(100, Math.floor((bytesDone / size) * 100))} % after ` : "";
    return `hashing ${file} (${humanBytes(size)}${bytesDone === undefined ? ", with b3sum" : ""}): ${share}${elapsedSeconds} s`;
}

let warned = false;

/** JavaScript BLAKE3 is right but a hundred times slower than b3sum or more: say why a big image takes minutes. */
function warnSlowBlake3(file: string): void {
    const message = `hashing ${file} with BLAKE3 in JavaScript, which is slow: no prebuilt @napi-rs/blake-hash for ${process.platform}-${process.arch} and no working b3sum. Install b3sum (Debian: apt-get install b3sum) to hash images at disk speed.`;
    // Shown with the resource whenever one is being worked on; else once on stderr, as before.
    if (reporting()) return warn(message);
    if (warned) return;
    warned = true;
    process.stderr.write(`pulumi-qemu: ${message}\n`);
}

/** `size` as stat saw it; the file is read to its end whatever that turns out to be. */
async function readDigest(
    file: string,
    size: number,
    hasher: Hasher,
    done?: { bytes: number },
): Promise<{ digest: string; bytes: number }> {
    if (size > READ_WHOLE_UP_TO_BYTES) return streamDigest(file, hasher, size, done);
    const whole = readWholeSync(file, size);
    // A file that grew past what stat said is streamed instead of pulled into memory.
    if (whole === undefined) return streamDigest(file, hasher, size, done);
    hasher.update(whole);
    return { digest: hasher.hex(), bytes: whole.length };
}

/** The file's bytes if they are at most `size`, else undefined. */
export function readWholeSync(file: string, size: number): Buffer | undefined {
    const fd = openSync(file, "r");
    try {
        const buf = Buffer.allocUnsafe(size + 1);
        let filled = 0;
        while (filled < buf.length) {
            const n = readSync(fd, buf, filled, buf.length - filled, filled);
            if (n === 0) break;
            filled += n;
        }
        return filled > size ? undefined : buf.subarray(0, filled);
    } finally {
        closeSync(fd);
    }
}

/** Two buffers alternate so the next read runs on libuv's pool while this one is hashed. */
async function streamDigest(
    file: string,
    hasher: Hasher,
    size: number,
    done?: { bytes: number },
): Promise<{ digest: string; bytes: number }> {
    // Buffers no bigger than the file was: a tree holds many files of a few hundred KiB.
    const bufferBytes = Math.min(READ_BUFFER_BYTES, Math.max(READ_WHOLE_UP_TO_BYTES, size));
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
            if (done) done.bytes = total;
        }
        return { digest: hasher.hex(), bytes: total };
    } finally {
        await fh.close();
    }
}
