/**
 * Disk sizes as users write them. Accepted, and nothing else:
 * - a whole number of bytes, as a number (`1073741824`) or a string of digits (`"1073741824"`);
 * - a number followed by one binary suffix: `K`, `M`, `G`, `T` (any case) or `KiB`, `MiB`, `GiB`,
 *   `TiB`; a decimal point is allowed when the result is a whole number of bytes (`"1.5G"`).
 * "MB"/"GB" are refused rather than guessed: qemu-img reads them as binary, most people as decimal.
 */

import { quoteValue } from "./validation";

const UNIT: Record<string, number> = {
    "": 1,
    k: 1024,
    m: 1024 ** 2,
    g: 1024 ** 3,
    t: 1024 ** 4,
};

/** Above this a size no longer fits a double exactly; qemu-img's own limit is higher. */
export const MAX_SIZE_BYTES = Number.MAX_SAFE_INTEGER;

export const SIZE_HELP =
    'a whole number of bytes, or a number with a binary suffix K, M, G, T (or KiB, MiB, GiB, TiB) such as "512M" or "20G"';

export type SizeResult = { ok: true; bytes: number } | { ok: false; reason: string };

export function parseSize(value: unknown): SizeResult {
    if (typeof value === "number") return parseByteCount(value);
    if (typeof value !== "string") return { ok: false, reason: `size must be ${SIZE_HELP}` };
    return parseSizeText(value);
}

function parseByteCount(n: number): SizeResult {
    if (!Number.isSafeInteger(n))
        return { ok: false, reason: `size must be ${SIZE_HELP}; ${n} is not a whole number of bytes` };
    return inRange(n);
}

function parseSizeText(text: string): SizeResult {
    const m = /^([0-9]+)(?:\.([0-9]+))?([KMGT]|[KMGT]iB)?$/i.exec(text.trim());
    if (!m) {
        const decimal = /^[0-9.]+\s*[KMGT]B$/i.test(text.trim());
        const hint = decimal ? ' ("MB"/"GB" are ambiguous: write "M"/"MiB" or "G"/"GiB", which are binary)' : "";
        return { ok: false, reason: `size must be ${SIZE_HELP}${hint}` };
    }
    const [, whole, fraction = "", suffix = ""] = m;
    if (/iB$/i.test(suffix) && !/iB$/.test(suffix))
        return { ok: false, reason: `size must be ${SIZE_HELP} (write "${suffix.slice(0, 1).toUpperCase()}iB")` };
    const unit = UNIT[suffix.slice(0, 1).toLowerCase()];
    // Exact arithmetic: 0.1 is not a double, and "1.1K" must be refused, not rounded.
    const scaled = BigInt(whole + fraction) * BigInt(unit);
    const divisor = 10n ** BigInt(fraction.length);
    if (scaled % divisor !== 0n)
        return { ok: false, reason: `size ${quoteValue(text)} is not a whole number of bytes` };
    const bytes = scaled / divisor;
    if (bytes > BigInt(MAX_SIZE_BYTES))
        return {
            ok: false,
            reason: `size ${quoteValue(text)} is larger than the largest size allowed (${MAX_SIZE_BYTES} bytes)`,
        };
    return inRange(Number(bytes));
}

/** Disks are made of 512-byte sectors; qemu-img rounds any other size up without a word. */
export const SECTOR_BYTES = 512;

function inRange(bytes: number): SizeResult {
    if (bytes <= 0) return { ok: false, reason: `size must be greater than 0 bytes` };
    if (bytes > MAX_SIZE_BYTES) return { ok: false, reason: `size must be at most ${MAX_SIZE_BYTES} bytes` };
    if (bytes % SECTOR_BYTES !== 0) {
        const up = Math.ceil(bytes / SECTOR_BYTES) * SECTOR_BYTES;
        const suggestion =
            up % 1024 ** 2 === 0 ? `"${up / 1024 ** 2}M"` : up % 1024 === 0 ? `"${up / 1024}K"` : String(up);
        return {
            ok: false,
            reason: `size must be a multiple of ${SECTOR_BYTES} bytes (disks are made of 512-byte sectors; qemu-img would silently round ${bytes} bytes up to ${up}); write ${suggestion}`,
        };
    }
    return { ok: true, bytes };
}

/** A short human form for messages: "512 MiB", "1.5 GiB", "1000 bytes". */
export function formatSize(bytes: number): string {
    for (const [name, unit] of [
        ["TiB", 1024 ** 4],
        ["GiB", 1024 ** 3],
        ["MiB", 1024 ** 2],
        ["KiB", 1024],
    ] as const) {
        if (bytes >= unit) return `${+(bytes / unit).toFixed(2)} ${name}`;
    }
    return `${bytes} bytes`;
}
