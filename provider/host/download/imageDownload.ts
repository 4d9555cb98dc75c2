import { open, readFile, stat } from "node:fs/promises";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import { hashValue } from "../../core/hash";
import {
    checksumText,
    parseChecksum,
    formatByMagic,
    redactUrl,
    sumsEntry,
    urlFileName,
    type Checksum,
    type Compression,
} from "../../core/imageUrl";
import { writeFileAtomic } from "../files/atomicFile";
import { ensureOwnDir, ensureStateDir, isOwnFileSync } from "../files/stateDir";
import { humanBytes, progress, progressIntervalMs } from "../progress";
import { cachedDownload, downloadsDir, type CachedFile } from "./downloadCache";
import { DownloadError } from "./downloadError";
import { DEFAULT_MAX_REDIRECTS, type FetchProgress } from "./fetchFile";
import { explain, get } from "./httpRequest";
import { compressionOf, unpackInto } from "./unpack";

/**
 * An image from a URL, end to end, for the url source kind: the checksum (given, or looked up in
 * a sums file), the verified download through the cache, and the image file made from it with
 * its format detected. Progress goes through the progress seam as "downloading …: 120 MiB of
 * 500 MiB (24 %) at 80 MiB/s".
 */

/** No byte for this long stops a download; 60 s rides out a congested mirror, not a dead one. */
export const DEFAULT_STALL_SECONDS = 60;

export interface DownloadSettings {
    stallMs: number;
    env?: NodeJS.ProcessEnv;
    /** Extra CA certificates (PEM); tests use it for their own TLS server. */
    ca?: string | Buffer;
    maxRedirects?: number;
    /** Automatic resumes after a cut or stall within one call (default 3, each must have made progress). */
    retries?: number;
}

export interface ImageFromUrl {
    format: "raw" | "qcow2";
    compression?: Compression;
    cache: CachedFile;
}

/** Sums files are small; anything bigger than this is not one. */
const MAX_SUMS_BYTES = 4 * 1024 * 1024;

/** The checksum `checksumUrl` lists for the URL's file name. */
export async function checksumFromSums(url: URL, checksumUrl: URL, settings: DownloadSettings): Promise<Checksum> {
    const text = await fetchSmallText(checksumUrl, settings);
    const found = sumsEntry(text, urlFileName(url));
    if ("problem" in found) {
        throw new DownloadError(
            "sums",
            redactUrl(checksumUrl),
            `${redactUrl(checksumUrl)} ${found.problem}; check that it is the checksum file of the directory ${redactUrl(new URL(".", url))}`,
        );
    }
    return found;
}

async function fetchSmallText(url: URL, settings: DownloadSettings): Promise<string> {
    const shown = redactUrl(url);
    if (url.protocol === "file:") {
        const file = fileURLToPath(url);
        try {
            const st = await stat(file);
            if (!st.isFile() || st.size > MAX_SUMS_BYTES)
                throw new Error(`is not a checksum file (a regular file under ${humanBytes(MAX_SUMS_BYTES)})`);
            return await readFile(file, "utf8");
        } catch (err) {
            throw new DownloadError("not-a-file", shown, `${shown}: ${(err as Error).message}`);
        }
    }
    const r = await get(url, {
        stallMs: settings.stallMs,
        maxRedirects: settings.maxRedirects ?? DEFAULT_MAX_REDIRECTS,
        env: settings.env ?? process.env,
        ca: settings.ca,
        headers: { "accept-encoding": "identity" },
    });
    const status = r.res.statusCode ?? 0;
    if (status !== 200) {
        r.abort();
        throw new DownloadError(
            status === 404 ? "not-found" : "http-status",
            shown,
            `${shown} answered ${status} ${r.res.statusMessage ?? ""}; check source.checksumUrl`,
            status,
        );
    }
    return new Promise((resolve, reject) => {
        const chunks: Buffer[] = [];
        let size = 0;
        const timer = setTimeout(() => {
            r.abort();
            reject(
                new DownloadError(
                    "stall",
                    shown,
                    `${shown} did not send its checksum file within ${settings.stallMs / 1000} s`,
                ),
            );
        }, settings.stallMs);
        r.res.on("data", (c: Buffer) => {
            size += c.length;
            if (size > MAX_SUMS_BYTES) {
                r.abort();
                clearTimeout(timer);
                reject(
                    new DownloadError(
                        "sums",
                        shown,
                        `${shown} is larger than ${humanBytes(MAX_SUMS_BYTES)}: not a checksum file`,
                    ),
                );
            }
            chunks.push(c);
        });
        r.res.on("end", () => {
            clearTimeout(timer);
            resolve(Buffer.concat(chunks).toString("utf8"));
        });
        r.res.on("error", (err) => {
            clearTimeout(timer);
            reject(explain(err, shown));
        });
    });
}

/**
 * Makes `out` (an existing, empty, owner-only file) the image at `url`, verified by `checksum`,
 * through the cache of `stateDir`. The format is qcow2 when the bytes say so, else raw, unless
 * `format` says which.
 */
export async function imageFromUrl(
    stateDir: string,
    url: URL,
    checksum: Checksum,
    out: string,
    settings: DownloadSettings,
    format?: "raw" | "qcow2",
): Promise<ImageFromUrl> {
    const shown = redactUrl(url);
    await ensureStateDir(stateDir);
    const cache = await cachedDownload(downloadsDir(stateDir), url, checksum, {
        ...settings,
        onProgress: progressReporter(shown),
    });
    const compression = await compressionOf(cache.file, urlFileName(url), shown);
    if (compression) progress(`decompressing ${shown} (${compression}, ${humanBytes(cache.bytes)})`);
    await unpackInto(cache.file, compression, out, settings.stallMs, shown);
    return { format: format ?? (await formatOf(out)), compression, cache };
}

async function formatOf(file: string): Promise<"raw" | "qcow2"> {
    const fh = await open(file, "r");
    try {
        const head = Buffer.alloc(4);
        await fh.read(head, 0, 4, 0);
        return formatByMagic(head);
    } finally {
        await fh.close();
    }
}

/** Progress lines at the seam's interval: bytes, total, share and rate. */
export function progressReporter(shown: string): (p: FetchProgress) => void {
    let last = 0;
    return (p) => {
        const now = Date.now();
        if (now - last < progressIntervalMs()) return;
        last = now;
        progress(describeProgress(shown, p));
    };
}

export function describeProgress(shown: string, p: FetchProgress): string {
    const of = p.total ? ` of ${humanBytes(p.total)} (${Math.floor((p.bytes / p.total) * 100)} %)` : "";
    const resumed = p.resumedFrom > 0 ? `, resumed at ${humanBytes(p.resumedFrom)}` : "";
    return `downloading ${shown}: ${humanBytes(p.bytes)}${of} at ${humanBytes(Math.round(p.rate))}/s${resumed}`;
}

// ---------------------------------------------------------------------------------------------
// What a sums file said, remembered per host

/**
 * `<stateDir>/downloads/sums-memo.json`: for each (sums file, image file name), the checksum the
 * sums file listed when an image was last created from it. Previews read it instead of the
 * network. Keys are hashes of the URLs, so no URL (nor a password in one) is written down.
 */
const SUMS_MEMO = "sums-memo.json";

function memoKey(url: URL, checksumUrl: URL): string {
    return hashValue({ checksumUrl: checksumUrl.href, file: urlFileName(url) });
}

async function readMemo(stateDir: string): Promise<Record<string, string>> {
    const file = path.join(downloadsDir(stateDir), SUMS_MEMO);
    if (!isOwnFileSync(file)) return {};
    try {
        const memo = JSON.parse(await readFile(file, "utf8")) as unknown;
        return memo && typeof memo === "object" && !Array.isArray(memo) ? (memo as Record<string, string>) : {};
    } catch {
        return {};
    }
}

export async function rememberedChecksum(stateDir: string, url: URL, checksumUrl: URL): Promise<Checksum | undefined> {
    const text = (await readMemo(stateDir))[memoKey(url, checksumUrl)];
    if (typeof text !== "string") return undefined;
    const c = parseChecksum(text);
    return "problem" in c ? undefined : c;
}

export async function rememberChecksum(
    stateDir: string,
    url: URL,
    checksumUrl: URL,
    checksum: Checksum,
): Promise<void> {
    await ensureStateDir(stateDir);
    await ensureOwnDir(downloadsDir(stateDir));
    // Two creates at once may each write the memo; the loser's entry is only re-learnt by a later preview.
    const memo = { ...(await readMemo(stateDir)), [memoKey(url, checksumUrl)]: checksumText(checksum) };
    await writeFileAtomic(path.join(downloadsDir(stateDir), SUMS_MEMO), JSON.stringify(memo, null, 2) + "\n");
}
