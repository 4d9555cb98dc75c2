import { spawn } from "node:child_process";
import { open } from "node:fs/promises";
import { compressionByMagic, compressionBySuffix, formatByMagic, type Compression } from "../../core/imageUrl";
import { diesWithUs, progressCounter, runTool, ToolTimeoutError } from "../process/toolRun";
import { DownloadError } from "./downloadError";

/**
 * A verified download turned into an image file: decompressed when its first bytes say it is
 * gzip, xz or zstd (the URL's suffix must agree, so a ".xz" that is not xz is told, not guessed
 * at), else copied. The tools write sparse where they can (xz and zstd skip runs of zeros, cp
 * --sparse=always too), so a raw image of mostly zeros stays small on disk. Every tool runs
 * under the parent-death signal and is stopped when it stalls.
 */

const DECOMPRESSORS: Record<Compression, [string, string[]]> = {
    gzip: ["gzip", ["-dc"]],
    xz: ["xz", ["-dc", "-T0"]],
    zstd: ["zstd", ["-dcq", "--sparse"]],
};

/** What the file is compressed with, judged by content, checked against the URL's file name. */
export async function compressionOf(
    file: string,
    fileName: string,
    shownUrl: string,
): Promise<Compression | undefined> {
    const fh = await open(file, "r");
    const head = Buffer.alloc(8);
    try {
        await fh.read(head, 0, 8, 0);
    } finally {
        await fh.close();
    }
    const byContent = compressionByMagic(head);
    const byName = compressionBySuffix(fileName);
    if (byName && byName !== byContent) {
        throw new DownloadError(
            "compression",
            shownUrl,
            `${shownUrl} ends in a ${byName} suffix but its content is ${byContent ? `${byContent}-compressed` : "not compressed"}; the file does match its checksum, so the checksum and URL name another file than intended. Check them`,
        );
    }
    return byContent;
}

/** Writes the image held in `download` (decompressed as needed) into `out`, an existing empty file. */
export async function unpackInto(
    download: string,
    compression: Compression | undefined,
    out: string,
    stallMs: number,
    shownUrl: string,
): Promise<void> {
    if (compression === undefined) {
        const r = await runTool("cp", ["--reflink=auto", "--sparse=always", download, out], {
            stallMs,
            label: `copying the download of ${shownUrl}`,
        });
        if (r.exitCode !== 0)
            throw Object.assign(
                new Error(`copying the download of ${shownUrl} failed: ${r.stderr.trim() || r.spawnError}`),
                { stderr: r.stderr },
            );
        return;
    }
    const [tool, args] = DECOMPRESSORS[compression];
    await runInto(tool, [...args, download], out, stallMs, `${tool} decompressing ${shownUrl}`);
}

/** Runs a decompressor with its standard output in `out`; rejects with its message, or when it stalls. */
async function runInto(command: string, args: string[], out: string, stallMs: number, label: string): Promise<void> {
    const fh = await open(out, "r+");
    try {
        const [file, argv] = diesWithUs(command, args);
        const child = spawn(file, argv, { stdio: ["ignore", fh.fd, "pipe"] });
        let stderr = "";
        child.stderr!.on("data", (d: Buffer) => (stderr = (stderr + d.toString()).slice(-4000)));
        let stalled: ToolTimeoutError | undefined;
        let last = -1;
        let lastChange = Date.now();
        const watch = setInterval(
            async () => {
                const moved = child.pid === undefined ? undefined : await progressCounter(child.pid);
                if (moved === undefined) return;
                if (moved !== last) [last, lastChange] = [moved, Date.now()];
                else if (Date.now() - lastChange >= stallMs && !stalled) {
                    stalled = new ToolTimeoutError(label, `did nothing for ${stallMs / 1000} s`);
                    child.kill("SIGKILL");
                }
            },
            Math.min(500, stallMs),
        );
        const code = await new Promise<number | null>((resolve, reject) => {
            child.on("error", reject);
            child.on("close", (c) => resolve(c));
        }).finally(() => clearInterval(watch));
        if (stalled) throw stalled;
        if (code !== 0) {
            const err = new Error(`${label} failed (exit ${code}): ${stderr.trim() || "no message"}`);
            throw Object.assign(err, { stderr });
        }
    } catch (err) {
        if ((err as NodeJS.ErrnoException).code === "ENOENT") {
            throw new Error(
                `${command} is not installed; it is needed to decompress this image (Debian: apt-get install ${command === "zstd" ? "zstd" : command === "xz" ? "xz-utils" : "gzip"})`,
            );
        }
        throw err;
    } finally {
        await fh.close();
    }
}

/** The image's format (qcow2 or raw) from the first bytes of the download, decompressed as needed. */
export async function formatOfDownload(
    file: string,
    compression: Compression | undefined,
    stallMs: number,
): Promise<"raw" | "qcow2"> {
    return formatByMagic(await headOf(file, compression, 4, stallMs));
}

/** The first `bytes` of the image held in `file`: read directly, or from a decompressor stopped once they came. */
async function headOf(
    file: string,
    compression: Compression | undefined,
    bytes: number,
    stallMs: number,
): Promise<Buffer> {
    if (compression === undefined) {
        const fh = await open(file, "r");
        try {
            const head = Buffer.alloc(bytes);
            const { bytesRead } = await fh.read(head, 0, bytes, 0);
            return head.subarray(0, bytesRead);
        } finally {
            await fh.close();
        }
    }
    const [tool, args] = DECOMPRESSORS[compression];
    const [command, argv] = diesWithUs(tool, [...args, file]);
    const child = spawn(command, argv, { stdio: ["ignore", "pipe", "ignore"] });
    return new Promise((resolve, reject) => {
        let got = Buffer.alloc(0);
        const timer = setTimeout(() => {
            child.kill("SIGKILL");
            reject(new ToolTimeoutError(`${tool} -dc ${file}`, `gave no output within ${stallMs / 1000} s`));
        }, stallMs);
        const done = (head: Buffer) => {
            clearTimeout(timer);
            child.kill("SIGKILL");
            resolve(head.subarray(0, bytes));
        };
        child.on("error", (err) => {
            clearTimeout(timer);
            reject(err);
        });
        child.stdout!.on("data", (d: Buffer) => {
            got = Buffer.concat([got, d]);
            if (got.length >= bytes) done(got);
        });
        child.stdout!.on("end", () => done(got));
    });
}
