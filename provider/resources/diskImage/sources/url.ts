/**
 * An image fetched by URL (https, http, file) and verified by a checksum the user gives, or that
 * a SHA256SUMS/SHA512SUMS file lists. The checksum is the image's identity: the URL is only where
 * the bytes are found, so a mirror that moves them changes nothing, and a preview with `checksum`
 * needs no network. The bytes go through the download cache (host/download), shared by every
 * image of the state directory; the image itself is a copy (decompressed if need be), read-only,
 * fit to be an overlay's backing.
 */
import { z } from "zod";
import { formatSchema, type ImageFormat } from "../../../core/diskImageSpec";
import {
    checksumText,
    parseChecksum,
    parseImageUrl,
    redactUrl,
    urlFileName,
    type Checksum,
} from "../../../core/imageUrl";
import { explainHostFileError, isOutOfSpace } from "../../../host/files/hostErrors";
import { readImageHeader } from "../../../host/images/imageHeader";
import { cachedDownload, downloadsDir, entryPath } from "../../../host/download/downloadCache";
import { DownloadError } from "../../../host/download/downloadError";
import {
    checksumFromSums,
    DEFAULT_STALL_SECONDS,
    progressReporter,
    rememberChecksum,
    rememberedChecksum,
} from "../../../host/download/imageDownload";
import { compressionOf, formatOfDownload, unpackInto } from "../../../host/download/unpack";
import { fieldError, type SourceKind } from "./source";

export type UrlSpec = {
    kind: "url";
    /** As given: it may carry a user and password, which only the request sees. */
    url: string;
    checksum?: Checksum;
    checksumUrl?: string;
    format?: ImageFormat;
    stallMs: number;
};
export type UrlContent = { kind: "url"; checksum: string };

function urlField(what: string) {
    return z.string({ error: `${what} must be a string` }).superRefine((s, ctx) => {
        const parsed = parseImageUrl(s);
        if ("problem" in parsed) ctx.addIssue({ code: "custom", message: `${what} ${redactUrl(s)} ${parsed.problem}` });
    });
}

const schema = z
    .object({
        kind: z.literal("url"),
        url: urlField("url").meta({
            description:
                "Where the image is: an https:, http: or file: URL. A user and password in it (https://user:pw@host/…) are sent as Basic authentication to that host only and never shown; pass such a URL as a Pulumi secret. May end in .gz, .xz or .zst: the image is decompressed. Changing it while the checksum stays the same changes nothing.",
        }),
        checksum: z
            .string({ error: "checksum must be a string" })
            .superRefine((s, ctx) => {
                const c = parseChecksum(s);
                if ("problem" in c) ctx.addIssue({ code: "custom", message: `checksum ${c.problem}` });
            })
            .optional()
            .meta({
                description:
                    'The image file\'s checksum as published, "sha256:<hex>" or "sha512:<hex>" (of the file as downloaded, compressed or not). It is the image\'s identity: previews need no network, and a changed checksum replaces the image. Give this or checksumUrl.',
            }),
        checksumUrl: urlField("checksumUrl").optional().meta({
            description:
                "A SHA256SUMS or SHA512SUMS file (GNU or BSD layout) that lists the checksum of the url's file name, as distributions publish beside their images. Read when the image is created and remembered on this host, so previews need no network; a new image announced under the same name is not picked up by itself (replace the resource, or pin `checksum`). Give this or checksum.",
        }),
        format: formatSchema("format").optional().meta({
            description:
                'The image\'s format, "raw" or "qcow2". Detected from its first bytes when absent (qcow2 has a magic number); set "raw" for a raw image whose content could look like qcow2.',
        }),
        stallSeconds: z
            .number({ error: "stallSeconds must be a number of seconds" })
            .int({ error: "stallSeconds must be a whole number" })
            .min(1, { error: "stallSeconds must be at least 1" })
            .max(3600, { error: "stallSeconds must be at most 3600" })
            .optional()
            .meta({
                description: `Seconds without a byte from the server after which the download stops (the bytes so far are kept, and the next attempt resumes with a Range request). Default ${DEFAULT_STALL_SECONDS}; raise it for a slow mirror. Not part of the image's identity.`,
            }),
    })
    .strict()
    .superRefine((v, ctx) => {
        if ((v.checksum === undefined) === (v.checksumUrl === undefined)) {
            ctx.addIssue({
                code: "custom",
                path: ["checksum"],
                message:
                    v.checksum === undefined
                        ? 'a url source needs a checksum: give checksum ("sha256:<hex>" or "sha512:<hex>") or checksumUrl (the SHA256SUMS/SHA512SUMS file beside the image)'
                        : "give checksum or checksumUrl, not both (checksum alone is the identity)",
            });
        }
    });

function parsedUrl(text: string): URL {
    return parseImageUrl(text) as URL;
}

/** A download's failure as a field error: which field led there, and the downloader's own words (URL redacted). */
function asFieldError(err: unknown, field: string): unknown {
    if (err instanceof DownloadError)
        return fieldError(
            err.problem === "sums" || field === "source.checksumUrl" ? "source.checksumUrl" : field,
            err.message,
        );
    return err;
}

/** The checksum: given, or what the sums file lists (remembered on this host, so a preview reads no network when it can). */
async function checksumOf(spec: UrlSpec, stateDir: string, fetches: boolean): Promise<Checksum> {
    if (spec.checksum) return spec.checksum;
    const url = parsedUrl(spec.url);
    const sums = parsedUrl(spec.checksumUrl!);
    if (!fetches) {
        const known = await rememberedChecksum(stateDir, url, sums);
        if (known) return known;
    }
    let found: Checksum;
    try {
        found = await checksumFromSums(url, sums, { stallMs: spec.stallMs });
    } catch (err) {
        throw asFieldError(err, "source.checksumUrl");
    }
    if (fetches) await rememberChecksum(stateDir, url, sums, found);
    return found;
}

export const url: SourceKind<"url", UrlSpec, UrlContent> = {
    schema,
    toSpec: (raw) => ({
        kind: "url",
        url: raw.url,
        checksum: raw.checksum === undefined ? undefined : (parseChecksum(raw.checksum) as Checksum),
        checksumUrl: raw.checksumUrl,
        format: raw.format,
        stallMs: (raw.stallSeconds ?? DEFAULT_STALL_SECONDS) * 1000,
    }),
    // Before the download (a preview's diff) nothing is detected yet; the format is then unused.
    format: (spec, detected) => spec.format ?? detected ?? "raw",
    // The URL is where the bytes are, not what they are: only an explicit format adds to the checksum.
    specForHash: (spec) => ({ kind: "url", format: spec.format ?? null }),
    fixedBytes: true,
    readOnly: true,
    async read(spec, ctx) {
        const checksum = await checksumOf(spec, ctx.stateDir, ctx.fetches === true);
        const content: UrlContent = { kind: "url", checksum: checksumText(checksum) };
        if (!ctx.fetches) return { content };
        // Create: the verified bytes into the cache now, so the format (and the file name's extension) is known.
        const url = parsedUrl(spec.url);
        const shown = redactUrl(url);
        try {
            const cached = await cachedDownload(downloadsDir(ctx.stateDir), url, checksum, {
                stallMs: spec.stallMs,
                onProgress: progressReporter(shown),
            });
            const compression = await compressionOf(cached.file, urlFileName(url), shown);
            return { content, detected: await formatOfDownload(cached.file, compression, spec.stallMs) };
        } catch (err) {
            // A full disk is the state directory's problem (the cache lives there), told with the URL against stateDir.
            if (isOutOfSpace(err)) {
                const withUrl = Object.assign(new Error(`downloading ${shown}: ${(err as Error).message}`), {
                    code: "ENOSPC",
                });
                throw await explainHostFileError(withUrl, "stateDir", downloadsDir(ctx.stateDir));
            }
            throw asFieldError(err, "source.url");
        }
    },
    async build(spec, resolved, temp, ctx) {
        const url = parsedUrl(spec.url);
        const shown = redactUrl(url);
        const checksum = parseChecksum((resolved.content as UrlContent).checksum) as Checksum;
        const entry = entryPath(downloadsDir(ctx.stateDir), checksum);
        try {
            await unpackInto(entry, await compressionOf(entry, urlFileName(url), shown), temp, spec.stallMs, shown);
        } catch (err) {
            throw asFieldError(err, "source.url");
        }
        if (resolved.format === "qcow2") {
            // A downloaded qcow2 naming a backing file would hand the guest a file of this host.
            const header = await readImageHeader(temp, "qcow2");
            if (header.backingFilename !== undefined) {
                throw fieldError(
                    "source.url",
                    `${shown} is a qcow2 image that names a backing file (${header.backingFilename}); a downloaded image must stand alone, so it is refused`,
                );
            }
        }
    },
};
