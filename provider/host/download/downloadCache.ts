import { createHash, randomBytes } from "node:crypto";
import { createReadStream } from "node:fs";
import { chmod, open, readdir, readFile, rename, rm, stat } from "node:fs/promises";
import * as path from "node:path";
import { checksumKey, checksumText, redactUrl, type Checksum } from "../../core/imageUrl";
import { writeFileAtomic } from "../files/atomicFile";
import { sameStamp, statStamp, type FileStamp } from "../files/fileHash";
import { isOutOfSpace } from "../files/hostErrors";
import { whileWorking, warn, humanBytes } from "../progress";
import { identify, readBootId } from "../qemu/qemuProcess";
import { ensureOwnDir, ensureStateDir, isOwnFileSync } from "../files/stateDir";
import { DownloadError } from "./downloadError";
import { fetchToPartial, type FetchOptions } from "./fetchFile";

/**
 * The download cache: one verified file per checksum, in `<stateDir>/downloads`, shared by every
 * image and stack that uses the state directory. An entry is named by its checksum and only
 * ever appears by rename(2) once its bytes matched, so a reader sees a whole, verified file or
 * none. Beside it a record keeps the stamp it had when verified: while the stamp holds, a hit
 * costs a stat; a changed stamp (someone wrote to it) costs one re-hash, and wrong bytes are
 * thrown away and fetched again.
 *
 * Partial files carry who writes them in their name (boot, pid, start time): a live writer is
 * waited for rather than raced, a dead one's bytes are claimed by rename (only one claimer can
 * win) and resumed. Two downloads of one checksum that still overlap (they started in the same
 * instant) each write their own partial and rename the same verified bytes into place: the
 * cache cannot be corrupted, only a download wasted.
 *
 * Pruning: entries stay until removed by hand (`rm <stateDir>/downloads/*`, safe whenever no
 * create runs: every DiskImage holds its own copy of the bytes, never the entry itself).
 */

export const DOWNLOADS_DIR = "downloads";

export interface CacheRecord {
    version: 1;
    checksum: string;
    stamp: FileStamp;
    bytes: number;
    /** Where it came from, redacted; for a human looking at the cache. */
    from: string;
    verifiedAt: string;
}

export interface CachedFile {
    /** The verified file in the cache; read it, never write or link it. */
    file: string;
    bytes: number;
    /** Found verified in the cache: no network was used. */
    hit: boolean;
    /** Re-hashed because its stamp had changed since it was verified. */
    reverified: boolean;
    /** The download continued a partial file left by an earlier attempt. */
    resumed: boolean;
}

export interface CacheOptions extends FetchOptions {
    /** How long to wait for another process downloading the same checksum, while it makes no progress. */
    waitStallMs?: number;
}

export function downloadsDir(stateDir: string): string {
    return path.join(stateDir, DOWNLOADS_DIR);
}

export function entryPath(dir: string, checksum: Checksum): string {
    return path.join(dir, checksumKey(checksum));
}

function recordPath(entry: string): string {
    return `${entry}.json`;
}

/**
 * The cached file for `checksum`, downloaded from `url` when the cache does not hold it (or holds
 * wrong bytes). `dir` is the downloads directory (made owner-only here).
 */
export async function cachedDownload(
    dir: string,
    url: URL,
    checksum: Checksum,
    opts: CacheOptions,
): Promise<CachedFile> {
    await ensureStateDir(path.dirname(dir));
    await ensureOwnDir(dir);
    const entry = entryPath(dir, checksum);
    for (;;) {
        const found = await verifiedEntry(entry, checksum);
        if (found) return { file: entry, bytes: found.bytes, hit: true, reverified: found.reverified, resumed: false };
        const mine = await claimPartial(dir, checksum, opts);
        if (mine === "retry") continue;
        const fetched = await fetchInto(mine, url, checksum, opts);
        await chmod(mine, 0o400);
        await rename(mine, entry);
        await writeRecord(entry, checksum, fetched.bytes, url);
        return { file: entry, bytes: fetched.bytes, hit: false, reverified: false, resumed: fetched.resumed };
    }
}

/** The entry when present with the right bytes; wrong bytes are moved out of the way. */
async function verifiedEntry(
    entry: string,
    checksum: Checksum,
): Promise<{ bytes: number; reverified: boolean } | undefined> {
    let now: FileStamp;
    try {
        now = await statStamp(entry);
    } catch (err) {
        if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
        throw err;
    }
    const record = await readRecord(entry);
    if (record && record.checksum === checksumText(checksum) && sameStamp(record.stamp, now))
        return { bytes: Number(now.size), reverified: false };
    // Unknown stamp: written to since, or replaced by a racing download of the same bytes. One hash tells.
    const digest = await whileWorking(
        (s) =>
            `verifying the cached ${path.basename(entry)} (${humanBytes(Number(now.size))}) against its checksum: ${s} s`,
        () => digestWith(entry, checksum.algorithm),
    );
    if (digest === checksum.hex) {
        await writeRecord(entry, checksum, Number(now.size), record?.from);
        return { bytes: Number(now.size), reverified: true };
    }
    warn(
        `the cached download ${entry} no longer matches ${checksumText(checksum)} (it changed on disk); it is removed and downloaded again`,
    );
    const aside = `${entry}.${randomBytes(4).toString("hex")}.bad`;
    await rename(entry, aside).catch(() => undefined);
    await rm(aside, { force: true });
    await rm(recordPath(entry), { force: true });
    return undefined;
}

/** The digest of a file by a checksum algorithm (sha512 is not one of the content digests). */
async function digestWith(file: string, algorithm: Checksum["algorithm"]): Promise<string> {
    const h = createHash(algorithm);
    for await (const chunk of createReadStream(file, { highWaterMark: 4 << 20 })) h.update(chunk as Buffer);
    return h.digest("hex");
}

async function readRecord(entry: string): Promise<CacheRecord | undefined> {
    const file = recordPath(entry);
    // In a shared state directory a record planted by someone else is not believed.
    if (!isOwnFileSync(file)) return undefined;
    try {
        const r = JSON.parse(await readFile(file, "utf8")) as CacheRecord;
        return r.version === 1 && typeof r.checksum === "string" && r.stamp ? r : undefined;
    } catch {
        return undefined;
    }
}

async function writeRecord(
    entry: string,
    checksum: Checksum,
    bytes: number,
    from: URL | string | undefined,
): Promise<void> {
    const record: CacheRecord = {
        version: 1,
        checksum: checksumText(checksum),
        stamp: await statStamp(entry),
        bytes,
        from: from === undefined ? "" : typeof from === "string" ? from : redactUrl(from),
        verifiedAt: new Date().toISOString(),
    };
    await writeFileAtomic(recordPath(entry), JSON.stringify(record, null, 2) + "\n");
}

// ---------------------------------------------------------------------------------------------
// Partial files and who writes them

interface Owner {
    boot: string;
    pid: number;
    start: string;
}

/** `<key>.o-<boot>-<pid>-<start>-<rand>.partial`: owned by a process; `<key>.r-<rand>.partial`: released, free to claim. */
const PARTIAL = /^(.+)\.(?:o-([0-9a-f]{8})-(\d+)-(\d+)-[0-9a-f]+|r-[0-9a-f]+)\.partial$/;

let me: Owner | undefined;

async function myOwner(): Promise<Owner> {
    if (!me) {
        const id = await identify(process.pid);
        me = {
            boot: (await readBootId()).replace(/-/g, "").slice(0, 8),
            pid: process.pid,
            start: id?.startTime ?? "0",
        };
    }
    return me;
}

function ownedName(key: string, o: Owner): string {
    return `${key}.o-${o.boot}-${o.pid}-${o.start}-${randomBytes(4).toString("hex")}.partial`;
}

async function ownerAlive(o: Owner): Promise<boolean> {
    const self = await myOwner();
    if (o.boot !== self.boot) return false;
    const id = await identify(o.pid);
    return id !== undefined && id.startTime === o.start;
}

interface Partial {
    name: string;
    owner?: Owner;
    size: number;
}

async function partialsOf(dir: string, key: string): Promise<Partial[]> {
    const out: Partial[] = [];
    for (const name of await readdir(dir)) {
        const m = PARTIAL.exec(name);
        if (!m || m[1] !== key) continue;
        const size = await stat(path.join(dir, name)).then(
            (st) => st.size,
            () => -1,
        );
        if (size < 0) continue;
        out.push({ name, size, owner: m[2] ? { boot: m[2], pid: Number(m[3]), start: m[4] } : undefined });
    }
    return out;
}

/**
 * A partial file of our own to download into: a released or dead writer's (the largest, to
 * resume from), else a new empty one. "retry" when another live writer finished or gave up
 * while we waited: the caller looks at the cache again.
 */
async function claimPartial(dir: string, checksum: Checksum, opts: CacheOptions): Promise<string | "retry"> {
    const key = checksumKey(checksum);
    const self = await myOwner();
    const all = await partialsOf(dir, key);
    const live: Partial[] = [];
    const free: Partial[] = [];
    for (const p of all) (p.owner && (await ownerAlive(p.owner)) ? live : free).push(p);
    if (live.length) {
        await waitFor(dir, live[0], opts.waitStallMs ?? opts.stallMs * 2, checksum);
        return "retry";
    }
    const mine = path.join(dir, ownedName(key, self));
    free.sort((a, b) => b.size - a.size);
    for (const p of free) {
        try {
            // rename is the claim: of two processes taking the same file, one gets ENOENT.
            await rename(path.join(dir, p.name), mine);
            // The rest are older, shorter attempts at the same bytes.
            for (const other of free) if (other !== p) await rm(path.join(dir, other.name), { force: true });
            return mine;
        } catch (err) {
            if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
        }
    }
    await (await open(mine, "wx", 0o600)).close();
    // Two fresh starts at the same instant: the one with the smaller name goes on, the other waits for it.
    const rivals = (await partialsOf(dir, key)).filter(
        (p) => p.owner && path.join(dir, p.name) !== mine && p.name < path.basename(mine),
    );
    for (const r of rivals) {
        if (await ownerAlive(r.owner!)) {
            await rm(mine, { force: true });
            await waitFor(dir, r, opts.waitStallMs ?? opts.stallMs * 2, checksum);
            return "retry";
        }
    }
    return mine;
}

/** Waits while another process downloads the same checksum, as long as its partial file grows. */
async function waitFor(dir: string, other: Partial, stallMs: number, checksum: Checksum): Promise<void> {
    const file = path.join(dir, other.name);
    let size = other.size;
    let moved = Date.now();
    await whileWorking(
        (s) =>
            `waiting for process ${other.owner?.pid}, which downloads the same image (${checksumText(checksum).slice(0, 23)}…): ${humanBytes(size)} after ${s} s`,
        async () => {
            for (;;) {
                await new Promise((r) => setTimeout(r, 200));
                const now = await stat(file).then(
                    (st) => st.size,
                    () => -1,
                );
                if (now < 0) return; // done (renamed into the cache) or given up: look again
                if (now !== size) {
                    size = now;
                    moved = Date.now();
                } else if (Date.now() - moved >= stallMs) {
                    throw new DownloadError(
                        "stall",
                        "",
                        `process ${other.owner?.pid} is downloading the same image (${checksumText(checksum)}) into ${file} and has made no progress for ${stallMs / 1000} s; wait for it or stop it, then try again`,
                    );
                }
            }
        },
    );
}

/**
 * Downloads into our partial and checks the checksum. Whatever fails, the partial is either
 * released for the next attempt to resume (a cut or a stall), or removed (wrong bytes, a full
 * disk, nothing fetched).
 */
async function fetchInto(
    partial: string,
    url: URL,
    checksum: Checksum,
    opts: CacheOptions,
): Promise<{ bytes: number; resumed: boolean }> {
    const shown = redactUrl(url);
    let result;
    try {
        result = await fetchToPartial(url, partial, checksum.algorithm, opts);
    } catch (err) {
        const size = await stat(partial).then(
            (st) => st.size,
            () => 0,
        );
        const keep =
            size > 0 &&
            !isOutOfSpace(err) &&
            err instanceof DownloadError &&
            (err.problem === "cut" || err.problem === "stall");
        if (keep)
            await rename(
                partial,
                path.join(
                    path.dirname(partial),
                    `${checksumKey(checksum)}.r-${randomBytes(4).toString("hex")}.partial`,
                ),
            ).catch(() => undefined);
        else await rm(partial, { force: true });
        throw err;
    }
    if (result.digest !== checksum.hex) {
        await rm(partial, { force: true });
        throw new DownloadError(
            "mismatch",
            shown,
            `${shown} does not match its checksum: expected ${checksumText(checksum)}, got ${checksum.algorithm}:${result.digest} (${result.bytes} bytes). The partial download was removed. Check that the checksum belongs to this file (a newer image published under the same name has another); if it does, the server or something between sent wrong bytes`,
        );
    }
    return result;
}
