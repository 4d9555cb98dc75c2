import { createHash, type Hash } from "node:crypto";
import { createReadStream } from "node:fs";
import { open, stat, truncate, type FileHandle } from "node:fs/promises";
import { fileURLToPath } from "node:url";
import { redactUrl, type Checksum } from "../../core/imageUrl";
import { requireRegularFile } from "../files/regularFile";
import { DownloadError } from "./downloadError";
import { explain, get, type RequestOptions } from "./httpRequest";

/**
 * Fetches a URL into a partial file, hashing every byte on the way, and says whether the bytes
 * are the ones the checksum names. The partial file is what makes a download resumable: a cut
 * connection leaves it in place, and the next attempt hashes what is there and asks the server
 * for the rest with `Range`. Wrong bytes are never kept: a mismatch truncates nothing but
 * reports, and the caller removes the partial.
 */

export interface FetchProgress {
    /** Bytes in the partial file so far (resumed bytes included). */
    bytes: number;
    /** The whole file's size when the server said it. */
    total?: number;
    /** Bytes per second over this attempt. */
    rate: number;
    /** Bytes the partial already held when this attempt started. */
    resumedFrom: number;
}

export interface FetchOptions {
    /** No byte for this long fails the download (kept for resume). */
    stallMs: number;
    maxRedirects?: number;
    /** Automatic resumes within one call after a cut connection (each must have made progress). */
    retries?: number;
    env?: NodeJS.ProcessEnv;
    ca?: string | Buffer;
    onProgress?: (p: FetchProgress) => void;
}

export interface FetchResult {
    digest: string;
    bytes: number;
    /** Whether the last attempt continued a partial file (a Range request the server honoured). */
    resumed: boolean;
}

export const DEFAULT_MAX_REDIRECTS = 10;
export const DEFAULT_RETRIES = 3;

/**
 * Fills `partial` with the bytes at `url` and returns their digest by `expected`'s algorithm.
 * The partial may already hold a prefix from an earlier attempt; it is continued when the server
 * honours Range, else started over.
 */
export async function fetchToPartial(
    url: URL,
    partial: string,
    algorithm: Checksum["algorithm"],
    opts: FetchOptions,
): Promise<FetchResult> {
    if (url.protocol === "file:") return copyLocal(url, partial, algorithm, opts);
    const retries = opts.retries ?? DEFAULT_RETRIES;
    for (let attempt = 0; ; attempt++) {
        const before = await sizeOf(partial);
        try {
            return await attemptHttp(url, partial, algorithm, opts);
        } catch (err) {
            const after = await sizeOf(partial);
            // A cut or stalled transfer that got somewhere is worth another try from where it got to.
            const resumable = err instanceof DownloadError && (err.problem === "cut" || err.problem === "stall");
            if (!resumable || attempt >= retries || after <= before) throw err;
        }
    }
}

async function sizeOf(file: string): Promise<number> {
    return stat(file).then(
        (st) => st.size,
        () => 0,
    );
}

async function attemptHttp(
    url: URL,
    partial: string,
    algorithm: Checksum["algorithm"],
    opts: FetchOptions,
): Promise<FetchResult> {
    const shown = redactUrl(url);
    const have = await sizeOf(partial);
    const hasher = createHash(algorithm);
    const requestOpts: RequestOptions = {
        stallMs: opts.stallMs,
        maxRedirects: opts.maxRedirects ?? DEFAULT_MAX_REDIRECTS,
        env: opts.env ?? process.env,
        ca: opts.ca,
        // identity: a gzip transfer encoding would be undone by no one, and would break Range.
        headers: { "accept-encoding": "identity", ...(have > 0 ? { range: `bytes=${have}-` } : {}) },
    };
    const r = await get(url, requestOpts);
    const status = r.res.statusCode ?? 0;
    let offset = 0;
    let total: number | undefined;
    if (status === 206 && have > 0) {
        const m = /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec(String(r.res.headers["content-range"] ?? ""));
        if (!m || Number(m[1]) !== have) {
            r.abort();
            // A range we did not ask for: start over rather than splice the wrong bytes in.
            await truncate(partial, 0);
            return attemptHttp(url, partial, algorithm, opts);
        }
        offset = have;
        total = m[3] === "*" ? undefined : Number(m[3]);
        await hashPrefix(partial, have, hasher);
    } else if (status === 416 && have > 0) {
        r.abort();
        // The partial already holds the whole file, or is longer than it: judge it, or start over.
        const length = /\/(\d+)$/.exec(String(r.res.headers["content-range"] ?? ""))?.[1];
        if (length !== undefined && Number(length) === have) {
            await hashPrefix(partial, have, hasher);
            return { digest: hasher.digest("hex"), bytes: have, resumed: true };
        }
        await truncate(partial, 0);
        return attemptHttp(url, partial, algorithm, opts);
    } else if (status === 200) {
        const length = r.res.headers["content-length"];
        total = length !== undefined ? Number(length) : undefined;
        if (have > 0) await truncate(partial, 0);
    } else {
        r.abort();
        throw statusError(status, r.res.statusMessage ?? "", shown, redactUrl(r.finalUrl));
    }
    const fh = await open(partial, offset > 0 ? "r+" : "w", 0o600);
    try {
        const written = await receive(r, fh, offset, hasher, { ...opts, total, shown });
        if (total !== undefined && written < total) {
            throw new DownloadError("cut", shown, cutMessage(shown, written, total));
        }
        return { digest: hasher.digest("hex"), bytes: written, resumed: offset > 0 };
    } finally {
        await fh.close();
    }
}

function statusError(status: number, text: string, shown: string, finalShown: string): DownloadError {
    const where = finalShown !== shown ? `${shown} (redirected to ${finalShown})` : shown;
    if (status === 404 || status === 410) {
        return new DownloadError(
            "not-found",
            shown,
            `${where} answered ${status} ${text}: there is no file there. Check the URL; images are often moved when a new release comes out (the checksum stays valid for the same file at a new URL)`,
            status,
        );
    }
    if (status === 401 || status === 403) {
        return new DownloadError(
            "http-status",
            shown,
            `${where} answered ${status} ${text}: access refused. Check the URL; if the server needs credentials, put them in the URL (https://user:password@host/…, better as a Pulumi secret) — they are never shown`,
            status,
        );
    }
    return new DownloadError(
        "http-status",
        shown,
        `${where} answered ${status} ${text}; ${status >= 500 ? "the server has trouble, try again later" : "check the URL"}`,
        status,
    );
}

function cutMessage(shown: string, got: number, total: number | undefined): string {
    return `the connection to ${shown} was cut after ${got}${total !== undefined ? ` of ${total}` : ""} bytes; the bytes so far are kept and the next pulumi up resumes from there`;
}

/** Hashes the first `bytes` of `file`, the part an earlier attempt wrote. */
async function hashPrefix(file: string, bytes: number, hasher: Hash): Promise<void> {
    if (bytes === 0) return;
    for await (const chunk of createReadStream(file, { start: 0, end: bytes - 1, highWaterMark: 1 << 20 }))
        hasher.update(chunk as Buffer);
}

/** Bytes are gathered into writes of this size: fewer syscalls than one per network chunk. */
const WRITE_BATCH_BYTES = 1 << 20;

/**
 * Copies the response body into `fh` from `offset`, hashing as it goes; fails on a stall (no
 * byte for stallMs) and on a cut (the body ends early or errors). Returns the file's size then.
 */
function receive(
    r: { res: import("node:http").IncomingMessage; abort(): void },
    fh: FileHandle,
    offset: number,
    hasher: Hash,
    opts: FetchOptions & { total?: number; shown: string },
): Promise<number> {
    return new Promise((resolve, reject) => {
        const started = Date.now();
        let position = offset;
        let pending: Buffer[] = [];
        let pendingBytes = 0;
        let writing: Promise<void> = Promise.resolve();
        let failed: unknown;
        let lastByte = Date.now();
        let lastReport = 0;
        const report = (force = false) => {
            if (!opts.onProgress) return;
            const now = Date.now();
            if (!force && now - lastReport < 250) return;
            lastReport = now;
            const seconds = Math.max((now - started) / 1000, 0.001);
            opts.onProgress({
                bytes: position + pendingBytes,
                total: opts.total,
                rate: (position + pendingBytes - offset) / seconds,
                resumedFrom: offset,
            });
        };
        const flush = () => {
            if (pendingBytes === 0) return;
            const buf = pending.length === 1 ? pending[0] : Buffer.concat(pending, pendingBytes);
            const at = position;
            position += pendingBytes;
            pending = [];
            pendingBytes = 0;
            writing = writing
                .then(() => writeAll(fh, buf, at))
                .catch((err) => {
                    failed ??= err;
                    r.abort();
                });
        };
        const stallTimer = setInterval(
            () => {
                if (Date.now() - lastByte >= opts.stallMs) {
                    failed ??= new DownloadError(
                        "stall",
                        opts.shown,
                        `${opts.shown} sent nothing for ${opts.stallMs / 1000} s (after ${position + pendingBytes} bytes); the bytes so far are kept and the next pulumi up resumes from there. If the server is just slow, raise source.stallSeconds`,
                    );
                    r.abort();
                    r.res.destroy();
                }
            },
            Math.min(1000, Math.max(50, opts.stallMs / 4)),
        );
        let finished = false;
        const finish = async (err?: unknown) => {
            // end, aborted, error and close may all fire for one response: the first decides.
            if (finished) return;
            finished = true;
            clearInterval(stallTimer);
            flush();
            await writing;
            report(true);
            if (failed) return reject(failed);
            if (err) return reject(err);
            resolve(position);
        };
        r.res.on("data", (chunk: Buffer) => {
            lastByte = Date.now();
            hasher.update(chunk);
            pending.push(chunk);
            pendingBytes += chunk.length;
            if (pendingBytes >= WRITE_BATCH_BYTES) {
                flush();
                // Backpressure: stop reading while the disk is behind.
                r.res.pause();
                void writing.then(() => r.res.resume());
            }
            report();
        });
        r.res.on("end", () => void finish());
        r.res.on(
            "aborted",
            () =>
                void finish(
                    new DownloadError("cut", opts.shown, cutMessage(opts.shown, position + pendingBytes, opts.total)),
                ),
        );
        r.res.on("error", (err) => {
            const e = explain(err, opts.shown);
            void finish(
                e instanceof DownloadError && e.problem === "cut"
                    ? new DownloadError("cut", opts.shown, cutMessage(opts.shown, position + pendingBytes, opts.total))
                    : e,
            );
        });
        r.res.on("close", () => {
            if (!r.res.complete)
                void finish(
                    new DownloadError("cut", opts.shown, cutMessage(opts.shown, position + pendingBytes, opts.total)),
                );
        });
    });
}

async function writeAll(fh: FileHandle, buf: Buffer, at: number): Promise<void> {
    let done = 0;
    while (done < buf.length) {
        const { bytesWritten } = await fh.write(buf, done, buf.length - done, at + done);
        done += bytesWritten;
    }
}

/** file:// URLs: a local copy through the same hashing, so the checksum is checked all the same. */
async function copyLocal(
    url: URL,
    partial: string,
    algorithm: Checksum["algorithm"],
    opts: FetchOptions,
): Promise<FetchResult> {
    const file = fileURLToPath(url);
    const shown = redactUrl(url);
    try {
        await requireRegularFile(file, "source.url", "a file to download");
    } catch (err) {
        throw new DownloadError(
            "not-a-file",
            shown,
            `${shown}: ${(err as Error).message.replace(/^source\.url:?\s*/, "")}`,
        );
    }
    const hasher = createHash(algorithm);
    const fh = await open(partial, "w", 0o600);
    const total = (await stat(file)).size;
    const started = Date.now();
    let bytes = 0;
    try {
        for await (const chunk of createReadStream(file, { highWaterMark: 4 << 20 })) {
            hasher.update(chunk as Buffer);
            await writeAll(fh, chunk as Buffer, bytes);
            bytes += (chunk as Buffer).length;
            opts.onProgress?.({
                bytes,
                total,
                rate: bytes / Math.max((Date.now() - started) / 1000, 0.001),
                resumedFrom: 0,
            });
        }
    } catch (err) {
        if ((err as NodeJS.ErrnoException).code === "ENOSPC") throw err;
        throw new DownloadError("not-a-file", shown, `reading ${shown} failed: ${(err as Error).message}`);
    } finally {
        await fh.close();
    }
    return { digest: hasher.digest("hex"), bytes, resumed: false };
}
