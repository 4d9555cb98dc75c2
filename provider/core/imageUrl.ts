/**
 * Images fetched by URL, the parts that need no I/O: checksums as users write them
 * ("sha256:…"), the entry for a file in a SHA256SUMS/SHA512SUMS file, URLs as errors may show
 * them (never with a password or a signed query string), which proxy a URL goes through, and
 * what a file's first bytes say it is (compressed, qcow2). The downloader (host/) and the url
 * source kind share these so that a checksum or a URL means the same thing in both.
 */

export type ChecksumAlgorithm = "sha256" | "sha512";

export interface Checksum {
    algorithm: ChecksumAlgorithm;
    /** Lowercase hex. */
    hex: string;
}

const HEX_LENGTH: Record<ChecksumAlgorithm, number> = { sha256: 64, sha512: 128 };

/** "sha256:<64 hex>" or "sha512:<128 hex>" (hex in either case) → the checksum, or why not. */
export function parseChecksum(text: string): Checksum | { problem: string } {
    const m = /^(sha256|sha512):([0-9a-fA-F]+)$/.exec(text.trim());
    if (!m) return { problem: 'must be "sha256:<64 hex digits>" or "sha512:<128 hex digits>"' };
    const algorithm = m[1] as ChecksumAlgorithm;
    if (m[2].length !== HEX_LENGTH[algorithm]) {
        return {
            problem: `a ${algorithm} checksum has ${HEX_LENGTH[algorithm]} hex digits, this one has ${m[2].length}`,
        };
    }
    return { algorithm, hex: m[2].toLowerCase() };
}

export function checksumText(c: Checksum): string {
    return `${c.algorithm}:${c.hex}`;
}

/** A file name for the checksum: what the download cache calls its entry. */
export function checksumKey(c: Checksum): string {
    return `${c.algorithm}-${c.hex}`;
}

/**
 * The checksum a sums file gives `fileName`. Both layouts coreutils writes are read: GNU
 * ("<hex>  name", "<hex> *name" in binary mode) and BSD/--tag ("SHA256 (name) = <hex>"). The
 * algorithm follows from the digest's length, so a SHA512SUMS file needs no hint.
 */
export function sumsEntry(text: string, fileName: string): Checksum | { problem: string } {
    const found: Checksum[] = [];
    for (const raw of text.split(/\r?\n/)) {
        const line = raw.trim();
        if (line === "" || line.startsWith("#")) continue;
        let hex: string | undefined;
        let name: string | undefined;
        const bsd = /^(SHA256|SHA512) \((.*)\) = ([0-9a-fA-F]+)$/.exec(line);
        const gnu = /^([0-9a-fA-F]+) [ *]?(.+)$/.exec(line);
        if (bsd) [hex, name] = [bsd[3], bsd[2]];
        else if (gnu) [hex, name] = [gnu[1], gnu[2]];
        if (hex === undefined || name === undefined) continue;
        // Entries are often written as "./name" or with a directory in front.
        if (name.replace(/^\.\//, "") !== fileName && name.split("/").pop() !== fileName) continue;
        const algorithm = hex.length === 64 ? "sha256" : hex.length === 128 ? "sha512" : undefined;
        if (algorithm) found.push({ algorithm, hex: hex.toLowerCase() });
    }
    if (found.length === 0) return { problem: `lists no SHA-256 or SHA-512 checksum for ${JSON.stringify(fileName)}` };
    const distinct = new Set(found.map(checksumText));
    if (distinct.size > 1)
        return { problem: `lists ${distinct.size} different checksums for ${JSON.stringify(fileName)}` };
    // SHA-512 when both are listed: the stronger one.
    return found.find((c) => c.algorithm === "sha512") ?? found[0];
}

export type UrlScheme = "https" | "http" | "file";

/** Parses a URL the url source accepts, or says why not (without repeating a password). */
export function parseImageUrl(text: string): URL | { problem: string } {
    let url: URL;
    try {
        url = new URL(text);
    } catch {
        return { problem: "is not a URL (write it in full, e.g. https://example.org/images/disk.qcow2)" };
    }
    const scheme = url.protocol.replace(/:$/, "");
    if (scheme !== "https" && scheme !== "http" && scheme !== "file") {
        return { problem: `uses ${scheme}:, only https:, http: and file: are supported` };
    }
    if (scheme === "file" && url.host !== "" && url.host !== "localhost") {
        return {
            problem: `file: URLs name a file on this host (file:///path); ${redactUrl(text)} names host ${url.host}`,
        };
    }
    if (urlFileName(url) === "")
        return { problem: "names no file (it ends in /): the file name is what a checksum file is searched for" };
    return url;
}

/**
 * The URL as errors, progress lines and records show it: user and password dropped, a query
 * string (signed URLs carry their signature there) replaced by "?…". Anything that does not
 * parse is cut to its scheme and host-ish start, so a malformed secret never leaks whole.
 */
export function redactUrl(text: string | URL): string {
    let url: URL;
    try {
        url = typeof text === "string" ? new URL(text) : new URL(text.href);
    } catch {
        const s = String(text);
        const cut = s.replace(/\/\/[^/@]*@/, "//").replace(/\?.*$/, "?…");
        return cut.length > 120 ? `${cut.slice(0, 120)}…` : cut;
    }
    const query = url.search ? "?…" : "";
    url.username = "";
    url.password = "";
    url.search = "";
    url.hash = "";
    return url.href + query;
}

/** Whether the URL carries a user or password (they are used for Basic authentication, never shown). */
export function hasCredentials(url: URL): boolean {
    return url.username !== "" || url.password !== "";
}

/** The last path segment, decoded: what a sums file lists. */
export function urlFileName(url: URL): string {
    const last = url.pathname.split("/").pop() ?? "";
    try {
        return decodeURIComponent(last);
    } catch {
        return last;
    }
}

/**
 * The proxy a request to `url` goes through, as curl reads the environment: https_proxy /
 * HTTPS_PROXY for https, http_proxy (and HTTP_PROXY) for http, none for file, and none for a
 * host NO_PROXY names ("*", a domain and its subdomains with or without a leading dot, an
 * address, an IPv4 CIDR range, each optionally with a port).
 */
export function proxyFor(url: URL, env: NodeJS.ProcessEnv): URL | undefined {
    const scheme = url.protocol.replace(/:$/, "");
    if (scheme !== "http" && scheme !== "https") return undefined;
    const raw = scheme === "https" ? (env.https_proxy ?? env.HTTPS_PROXY) : (env.http_proxy ?? env.HTTP_PROXY);
    if (!raw) return undefined;
    if (bypassed(url, env.no_proxy ?? env.NO_PROXY ?? "")) return undefined;
    // "proxy:3128" without a scheme means http://, as curl takes it.
    try {
        return new URL(/^[a-z][a-z0-9+.-]*:\/\//i.test(raw) ? raw : `http://${raw}`);
    } catch {
        throw new Error(`${scheme}_proxy is set to something that is not a URL (${redactUrl(raw)}); fix or unset it`);
    }
}

function bypassed(url: URL, noProxy: string): boolean {
    const host = url.hostname.replace(/^\[|\]$/g, "").toLowerCase();
    const port = url.port || (url.protocol === "https:" ? "443" : "80");
    for (const raw of noProxy.split(/[,\s]+/)) {
        const entry = raw.trim().toLowerCase();
        if (entry === "") continue;
        if (entry === "*") return true;
        const m = /^(\[[^\]]+\]|[^:]+)(?::(\d+))?$/.exec(entry);
        if (!m) continue;
        const name = m[1].replace(/^\[|\]$/g, "").replace(/^\*?\./, "");
        if (m[2] && m[2] !== port) continue;
        if (name.includes("/")) {
            if (inCidr(host, name)) return true;
            continue;
        }
        if (host === name || host.endsWith(`.${name}`)) return true;
    }
    return false;
}

function ipv4(text: string): number | undefined {
    const parts = text.split(".");
    if (parts.length !== 4 || parts.some((p) => !/^\d{1,3}$/.test(p) || Number(p) > 255)) return undefined;
    return parts.reduce((n, p) => n * 256 + Number(p), 0);
}

function inCidr(host: string, cidr: string): boolean {
    const [base, bitsText] = cidr.split("/");
    const [h, b, bits] = [ipv4(host), ipv4(base), Number(bitsText)];
    if (h === undefined || b === undefined || !Number.isInteger(bits) || bits < 0 || bits > 32) return false;
    const size = 2 ** (32 - bits);
    return Math.floor(h / size) === Math.floor(b / size);
}

export type Compression = "gzip" | "xz" | "zstd";

const SUFFIXES: Record<string, Compression> = { ".gz": "gzip", ".xz": "xz", ".zst": "zstd" };

/** What the file name says: "disk.raw.xz" is xz. */
export function compressionBySuffix(fileName: string): Compression | undefined {
    const m = /(\.gz|\.xz|\.zst)$/i.exec(fileName);
    return m ? SUFFIXES[m[1].toLowerCase()] : undefined;
}

/** What the first bytes say (a few bytes are enough for every format). */
export function compressionByMagic(head: Uint8Array): Compression | undefined {
    const starts = (...bytes: number[]) => bytes.every((b, i) => head[i] === b);
    if (starts(0x1f, 0x8b)) return "gzip";
    if (starts(0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00)) return "xz";
    if (starts(0x28, 0xb5, 0x2f, 0xfd)) return "zstd";
    return undefined;
}

/** qcow2 starts with "QFI\xfb"; anything else is taken as raw. */
export function formatByMagic(head: Uint8Array): "qcow2" | "raw" {
    return head[0] === 0x51 && head[1] === 0x46 && head[2] === 0x49 && head[3] === 0xfb ? "qcow2" : "raw";
}

/** A DiskImage source as echoed in outputs: a url source's URLs redacted, anything else as it was. */
export function withoutUrlCredentials<T>(source: T): T {
    const s = source as { kind?: unknown; url?: unknown; checksumUrl?: unknown };
    if (s === null || typeof s !== "object" || s.kind !== "url") return source;
    const out: Record<string, unknown> = { ...(s as object) };
    for (const key of ["url", "checksumUrl"] as const)
        if (typeof s[key] === "string") out[key] = redactUrl(s[key] as string);
    return out as T;
}
