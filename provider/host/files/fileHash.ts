import type { BigIntStats } from "node:fs";
import { readFileSync } from "node:fs";
import { lstat, readdir, readlink, stat } from "node:fs/promises";
import * as path from "node:path";
import { digestByName, hashValue, type DigestAlgorithm } from "../../core/hash";
import { writeFileAtomic } from "./atomicFile";
import { isOwnFileSync } from "./stateDir";
import { digestFile, type ReadCounter } from "./fileDigest";

export type { ReadCounter } from "./fileDigest";

/**
 * Content hashes of files and directory trees, with a cache keyed by file identity so that an
 * unchanged multi-GiB image is never read twice. Identity is what the kernel tells us without
 * reading: device, inode, size, and mtime and ctime in nanoseconds — a write changes mtime, and
 * anything that sets mtime back (touch -d, utimes) still moves ctime.
 */

/** A file's identity as strings (bigints do not survive JSON). */
export interface FileStamp {
    dev: string;
    ino: string;
    size: string;
    mtimeNs: string;
    ctimeNs: string;
    /** Birth time: ext4 hands a freed inode number to the next new file, so dev+ino alone cannot tell two files apart. */
    birthNs: string;
}

export function stampOf(st: BigIntStats): FileStamp {
    return {
        dev: String(st.dev),
        ino: String(st.ino),
        size: String(st.size),
        mtimeNs: String(st.mtimeNs),
        ctimeNs: String(st.ctimeNs),
        birthNs: String(st.birthtimeNs),
    };
}

/** The same file (not necessarily the same content): what a path must still point at for us to delete it. */
export function sameFile(a: FileStamp, b: FileStamp): boolean {
    return a.dev === b.dev && a.ino === b.ino && a.birthNs === b.birthNs;
}

export function sameStamp(a: FileStamp, b: FileStamp): boolean {
    return sameFile(a, b) && a.size === b.size && a.mtimeNs === b.mtimeNs && a.ctimeNs === b.ctimeNs;
}

export async function statStamp(file: string): Promise<FileStamp> {
    return stampOf(await stat(file, { bigint: true }));
}

/** Keyed by algorithm, device and inode. */
interface CacheEntry {
    size: string;
    mtimeNs: string;
    ctimeNs: string;
    /** Absent in entries carried over from 0.1, which did not record it. */
    birthNs?: string;
    digest: string;
    /** Milliseconds since the epoch of the last use; the oldest go first when the cache is full. */
    used: number;
}

interface CacheFile {
    version: 2;
    entries: Record<string, CacheEntry>;
}

/** Version 1 (pulumi-qemu 0.1) held SHA-256 digests only, keyed by device and inode. */
interface CacheFileV1 {
    version: 1;
    entries: Record<string, Omit<CacheEntry, "birthNs" | "digest"> & { sha256: string }>;
}

/**
 * Each format has a file of its own: 0.1 drops a cache it cannot read and rewrites it as
 * version 1, so sharing one file with it would wipe ours at every 0.1 run, and ours its.
 */
export const HASH_CACHE_FILE = "hash-cache.v2.json";
/** 0.1's cache: read, never written, so its SHA-256 digests still answer for 0.1's records. */
export const HASH_CACHE_FILE_V1 = "hash-cache.json";
export const MAX_CACHE_ENTRIES = 20000;

/**
 * A write that lands in the same timestamp tick as our read leaves the stamp unchanged, so a
 * hash taken that close to the last write is not remembered (git's "racy clean" problem). Ticks
 * are a jiffy (≤ 10 ms) on filesystems with nanosecond stamps, a second or two on old ones.
 */
export function racyWindowNs(mtimeNs: bigint): bigint {
    return mtimeNs % 1_000_000_000n === 0n ? 2_000_000_000n : 50_000_000n;
}

/**
 * Waits until a hash of `file` taken now may be remembered: for a file just written by us, a
 * wait of at most one racy window saves re-reading it on the next preview.
 */
export async function waitOutRacyWindow(file: string): Promise<void> {
    const { mtimeNs } = await stat(file, { bigint: true });
    // A stamp further ahead than the window itself (a file server's clock ahead of ours) is not
    // waited out. A nearer one is only our millisecond clock lagging the kernel's nanoseconds.
    if (racyNsLeft(mtimeNs) > 2n * racyWindowNs(mtimeNs)) return;
    // A loop, because a timer measures from the event loop's cached clock and can fire a little early.
    for (let left = racyNsLeft(mtimeNs); left >= 0n; left = racyNsLeft(mtimeNs)) {
        await new Promise((resolve) => setTimeout(resolve, Number(left / 1_000_000n) + 1));
    }
}

/** How long until a hash of a file last written at `mtimeNs` may be remembered; ≤ 0 once it may. */
function racyNsLeft(mtimeNs: bigint): bigint {
    return racyWindowNs(mtimeNs) - (BigInt(Date.now()) * 1_000_000n - mtimeNs);
}

function cacheKey(stamp: FileStamp, algorithm: DigestAlgorithm): string {
    return `${algorithm}:${stamp.dev}:${stamp.ino}`;
}

/** The stat cache, persisted as one JSON file written whole (temp file, rename). */
export class HashCache {
    private entries: Record<string, CacheEntry> = {};
    /** Entries of another cache file that answer lookups but are never saved here. */
    private carried: Record<string, CacheEntry> = {};
    private dirty: Record<string, CacheEntry> = {};

    constructor(readonly file: string) {}

    /** `carriedFrom`: another cache file to consult after this one; callers pass it only when it can answer. */
    static async load(file: string, opts: { carriedFrom?: string } = {}): Promise<HashCache> {
        const cache = new HashCache(file);
        cache.entries = await readCacheEntries(file);
        if (opts.carriedFrom) cache.carried = await readCacheEntries(opts.carriedFrom);
        return cache;
    }

    lookup(stamp: FileStamp, algorithm: DigestAlgorithm): string | undefined {
        const key = cacheKey(stamp, algorithm);
        const e = this.entries[key] ?? this.carried[key];
        if (!e || e.size !== stamp.size || e.mtimeNs !== stamp.mtimeNs || e.ctimeNs !== stamp.ctimeNs) return undefined;
        if (e.birthNs !== undefined && e.birthNs !== stamp.birthNs) return undefined;
        return e.digest;
    }

    remember(stamp: FileStamp, algorithm: DigestAlgorithm, digest: string): void {
        const entry = {
            size: stamp.size,
            mtimeNs: stamp.mtimeNs,
            ctimeNs: stamp.ctimeNs,
            birthNs: stamp.birthNs,
            digest,
            used: Date.now(),
        };
        this.entries[cacheKey(stamp, algorithm)] = entry;
        this.dirty[cacheKey(stamp, algorithm)] = entry;
    }

    /** Merges with what other processes saved meanwhile, so concurrent providers lose nothing but races. */
    async save(): Promise<void> {
        if (Object.keys(this.dirty).length === 0) return;
        const merged = { ...(await readCacheEntries(this.file)), ...this.dirty };
        const kept = Object.entries(merged)
            .sort((a, b) => b[1].used - a[1].used)
            .slice(0, MAX_CACHE_ENTRIES);
        const body: CacheFile = { version: 2, entries: Object.fromEntries(kept) };
        await writeFileAtomic(this.file, JSON.stringify(body));
        this.dirty = {};
    }
}

async function readCacheEntries(file: string): Promise<Record<string, CacheEntry>> {
    let text: string;
    // A cache planted by another user (in a shared state directory) would lie about digests: ignore it.
    if (!isOwnFileSync(file)) return {};
    try {
        // Read in one call: fs/promises' readFile takes four trips through the thread pool, which is
        // most of what a cached re-hash costs, and this file is at most a few MB.
        text = readFileSync(file, "utf8");
    } catch (err) {
        if ((err as NodeJS.ErrnoException).code === "ENOENT") return {};
        throw err;
    }
    let parsed: unknown;
    try {
        parsed = JSON.parse(text);
    } catch {
        return {};
    }
    // A cache from a newer version, or a torn or foreign one, is only a cache: start afresh.
    if (!isRecord(parsed) || !isRecord(parsed.entries)) return {};
    if (parsed.version === 2)
        return Object.fromEntries(
            Object.entries(parsed.entries).filter(([, e]) => isRecord(e)),
        ) as CacheFile["entries"];
    // Kept across the upgrade: 0.1's images are still compared by SHA-256, and re-reading them costs seconds per GiB.
    if (parsed.version === 1) return fromV1(parsed.entries as CacheFileV1["entries"]);
    return {};
}

function isRecord(v: unknown): v is Record<string, unknown> {
    return typeof v === "object" && v !== null && !Array.isArray(v);
}

function fromV1(entries: CacheFileV1["entries"]): Record<string, CacheEntry> {
    const out: Record<string, CacheEntry> = {};
    for (const [key, e] of Object.entries(entries)) {
        if (!isRecord(e) || typeof e.sha256 !== "string") continue;
        const { sha256, ...rest } = e;
        out[`sha256:${key}`] = { ...rest, digest: sha256 };
    }
    return out;
}

export interface HashedFile {
    digest: string;
    stamp: FileStamp;
    /** True when the cache answered and no byte was read. */
    cached: boolean;
}

/** The content digest of `file`, from the cache when its stamp is unchanged, else read and remembered. */
export async function hashFileCached(
    file: string,
    cache: HashCache,
    algorithm: DigestAlgorithm,
    counter?: ReadCounter,
): Promise<HashedFile> {
    const before = await stat(file, { bigint: true });
    if (!before.isFile()) throw new Error(`${file} is not a regular file`);
    const stamp = stampOf(before);
    const known = cache.lookup(stamp, algorithm);
    if (known) return { digest: known, stamp, cached: true };
    const changed = (cause?: unknown) =>
        new Error(`${file} changed while it was being hashed; try again once nothing writes to it`, { cause });
    let digest: string;
    try {
        ({ digest } = await digestFile(file, algorithm, { counter, size: Number(before.size) }));
    } catch (err) {
        // A file truncated under b3sum's mapping kills it with SIGBUS: say what happened, not how it failed.
        if (!sameStamp(stamp, await statStamp(file).catch(() => ({ ...stamp, ino: "gone" })))) throw changed(err);
        throw err;
    }
    const after = await stat(file, { bigint: true });
    if (!sameStamp(stamp, stampOf(after))) throw changed();
    if (racyNsLeft(after.mtimeNs) <= 0n) cache.remember(stamp, algorithm, digest);
    return { digest, stamp, cached: false };
}

/** One entry of a directory tree, as it enters the tree hash. */
export interface TreeEntry {
    /** Path relative to the tree's root, "/"-separated; "" is the root. */
    rel: string;
    type: "directory" | "file" | "symlink" | "char" | "block" | "fifo";
    /** Permission bits (with setuid/setgid/sticky). */
    mode: number;
    size?: number;
    /** The content digest, keyed by its algorithm's name ("blake3" or, for 0.1's trees, "sha256"). */
    blake3?: string;
    sha256?: string;
    target?: string;
    /** For a hard link: the `rel` of the first path seen with the same inode. */
    linkOf?: string;
    /** Only when owners are preserved. */
    uid?: number;
    gid?: number;
    /** Device nodes (owners preserved only): major and minor. */
    rdev?: [number, number];
}

export interface TreeOptions {
    /**
     * Keep owners: they enter each entry (so a chown changes the hash) and device nodes and
     * named pipes are accepted, as `mkfs.ext4 -d` copies them. Off, entries are exactly as before.
     */
    owners?: boolean;
}

export interface HashedTree {
    treeHash: string;
    entries: TreeEntry[];
    /** Bytes of file data, rounded up to 4 KiB blocks: the least an ext4 image of the tree needs. */
    dataBytes: number;
}

/** Files this small are cheaper to read than to remember. */
const CACHE_FILES_FROM_BYTES = 1024 * 1024;

/**
 * Hashes the tree under `root` by what `mkfs.ext4 -d` copies: names, types, permission bits,
 * contents, symlink targets and hard links. Owners and timestamps are left out because the
 * image builder fixes them. Anything mkfs could not copy faithfully is refused by name.
 */
export async function hashTree(
    root: string,
    cache: HashCache,
    algorithm: DigestAlgorithm,
    counter?: ReadCounter,
    opts: TreeOptions = {},
): Promise<HashedTree> {
    const rootStat = await stat(root, { bigint: true });
    if (!rootStat.isDirectory()) throw new Error(`${root} is not a directory`);
    const owned = (st: BigIntStats) => (opts.owners ? { uid: Number(st.uid), gid: Number(st.gid) } : {});
    const entries: TreeEntry[] = [
        { rel: "", type: "directory", mode: Number(rootStat.mode & 0o7777n), ...owned(rootStat) },
    ];
    const seen = new Map<string, string>();
    let dataBytes = 0;
    const walk = async (dirRel: string): Promise<void> => {
        const names = (await readdir(path.join(root, dirRel))).sort();
        const broken = names.find((name) => /[\n\r]/.test(name));
        if (broken !== undefined)
            throw new Error(
                `${path.join(root, dirRel, broken)}: file names with line breaks cannot be copied into an image`,
            );
        const stats = await lstatAll(names.map((name) => path.join(root, dirRel, name)));
        for (const [i, name] of names.entries()) {
            const rel = dirRel ? `${dirRel}/${name}` : name;
            const full = path.join(root, rel);
            const st = stats[i];
            const mode = Number(st.mode & 0o7777n);
            if (st.isDirectory()) {
                entries.push({ rel, type: "directory", mode, ...owned(st) });
                dataBytes += 4096;
                await walk(rel);
            } else if (st.isSymbolicLink()) {
                entries.push({ rel, type: "symlink", mode, target: await readlink(full), ...owned(st) });
            } else if (st.isFile()) {
                const key = `${st.dev}:${st.ino}`;
                const first = st.nlink > 1n ? seen.get(key) : undefined;
                if (first !== undefined) {
                    entries.push({ rel, type: "file", mode, linkOf: first, ...owned(st) });
                    continue;
                }
                if (st.nlink > 1n) seen.set(key, rel);
                const size = Number(st.size);
                const digest =
                    size >= CACHE_FILES_FROM_BYTES
                        ? (await hashFileCached(full, cache, algorithm, counter)).digest
                        : (await digestFile(full, algorithm, { counter, size })).digest;
                entries.push({ rel, type: "file", mode, size, ...digestByName(algorithm, digest), ...owned(st) });
                dataBytes += Math.ceil(size / 4096) * 4096;
            } else if (opts.owners && (st.isCharacterDevice() || st.isBlockDevice() || st.isFIFO())) {
                const type = st.isCharacterDevice() ? "char" : st.isBlockDevice() ? "block" : "fifo";
                entries.push({
                    rel,
                    type,
                    mode,
                    ...owned(st),
                    ...(type === "fifo" ? {} : { rdev: deviceNumbers(st.rdev) }),
                });
            } else {
                const also = opts.owners
                    ? ", device nodes and named pipes"
                    : ' (and, with owners: "preserve", device nodes and named pipes)';
                throw new Error(
                    `${full} is a ${kindOf(st)}; a directory image holds only directories, regular files and symbolic links${also}`,
                );
            }
        }
    };
    await walk("");
    return { treeHash: hashValue(entries), entries, dataBytes };
}

/**
 * lstat of many files, some at a time: one after another, each waits a trip through the thread
 * pool, and a tree walk of small files spent most of its time idle (2000 files: 220 ms, 60% idle).
 */
async function lstatAll(files: string[], atOnce = 32): Promise<BigIntStats[]> {
    const out: BigIntStats[] = [];
    for (let i = 0; i < files.length; i += atOnce)
        out.push(...(await Promise.all(files.slice(i, i + atOnce).map((f) => lstat(f, { bigint: true })))));
    return out;
}

/** Linux's dev_t encoding (glibc's gnu_dev_major/minor). */
function deviceNumbers(rdev: bigint): [number, number] {
    const major = ((rdev >> 8n) & 0xfffn) | ((rdev >> 32n) & ~0xfffn);
    const minor = (rdev & 0xffn) | ((rdev >> 12n) & ~0xffn);
    return [Number(major), Number(minor)];
}

function kindOf(st: BigIntStats): string {
    if (st.isSocket()) return "socket";
    if (st.isFIFO()) return "named pipe";
    if (st.isCharacterDevice()) return "character device";
    if (st.isBlockDevice()) return "block device";
    return "special file";
}
