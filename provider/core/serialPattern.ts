import { RE2JS } from "re2js";

/**
 * `ready.serialPattern`: what it means, how it is checked, and how it is matched against a serial
 * console that keeps growing. Plain text is a substring; text written `/…/flags` is a regular
 * expression. Regular expressions run on RE2 (the pure-JavaScript port `re2js`), whose matching
 * time is linear in the text: a pattern such as `/(a+)+$/` cannot stall the provider the way it
 * stalls a backtracking engine. Validation uses the same engine, so a pattern accepted at check is
 * one that can run, and RE2's refusals (backreferences, lookarounds) are said at check.
 */

/** Flags with a meaning for one search: i, m, s. g, y, u and d change nothing here and are accepted. */
const FLAG_BITS: Record<string, number> = {
    i: RE2JS.CASE_INSENSITIVE,
    m: RE2JS.MULTILINE,
    s: RE2JS.DOTALL,
    g: 0,
    y: 0,
    u: 0,
    d: 0,
};

/**
 * How many characters of console text before new output take part in the next search: any match
 * up to this long is found even when the guest printed it across two polls.
 */
export const SERIAL_OVERLAP_CHARS = 16 * 1024;

export type SerialPattern =
    { kind: "text"; text: string } | { kind: "regex"; source: string; flags: string; re: RE2JS };

/** A `/…/flags` pattern's parts, or undefined for plain text. */
function regexParts(pattern: string): { source: string; flags: string } | undefined {
    const m = /^\/(.*)\/([a-z]*)$/s.exec(pattern);
    return m ? { source: m[1], flags: m[2] } : undefined;
}

export class SerialPatternError extends Error {
    constructor(reason: string) {
        super(reason);
        this.name = "SerialPatternError";
    }
}

/** Compiles `pattern` by the rule above, or throws a SerialPatternError saying what RE2 refused and why. */
export function parseSerialPattern(pattern: string): SerialPattern {
    const parts = regexParts(pattern);
    if (!parts) return { kind: "text", text: pattern };
    let bits = 0;
    for (const f of new Set(parts.flags)) {
        const bit = FLAG_BITS[f];
        if (bit === undefined) {
            throw new SerialPatternError(
                `serialPattern flag "${f}" is not supported (supported: i, m, s; g, y, u and d are accepted and change nothing)`,
            );
        }
        bits |= bit;
    }
    try {
        // translateRegExp turns JavaScript spellings (\u0041, (?<name>…), \/) into RE2's.
        const re = RE2JS.compile(RE2JS.translateRegExp(parts.source), bits);
        return { kind: "regex", source: parts.source, flags: parts.flags, re };
    } catch (err) {
        const why = (err as Error).message.replace(/^error parsing regexp: /, "");
        throw new SerialPatternError(
            `serialPattern ${cut(pattern, 80)} is not a regular expression this provider can run (${why}). ` +
                "Patterns run on RE2, which has no backreferences (\\1) or lookarounds ((?=…), (?!…), (?<=…)) and repeats at most {1000}; " +
                "write plain text (no surrounding slashes) to look for a substring",
        );
    }
}

/** Why `pattern` cannot be used, or undefined when it can: the check a schema's refine calls. */
export function serialPatternProblem(pattern: string): string | undefined {
    try {
        parseSerialPattern(pattern);
        return undefined;
    } catch (err) {
        return (err as Error).message;
    }
}

/** The whole-text test `pattern` stands for (what the watcher does incrementally). */
export function serialMatcher(pattern: string): (console: string) => boolean {
    const p = parseSerialPattern(pattern);
    return p.kind === "text" ? (text) => text.includes(p.text) : (text) => p.re.matcher(text).find();
}

function cut(s: string, max: number): string {
    return JSON.stringify(s.length > max ? `${s.slice(0, max)}…` : s);
}

/** Serial output as a person would read it: escape sequences (colours, screen clears) and CRs removed. */
export function cleanConsole(raw: string): string {
    return raw
        .replace(/\x1b\[[0-?]*[ -/]*[@-~]/g, "")
        .replace(/\x1b[@-Z\\-_]/g, "")
        .replace(/\x1bc/g, "")
        .replace(/\r/g, "");
}

/** The start of an escape sequence that the next bytes may complete: kept back until they come. */
const UNFINISHED_ESCAPE = /\x1b(?:\[[0-?]*[ -/]*)?$/;
/** Longer than any real escape sequence: a "prefix" longer than this is junk, not kept back. */
const MAX_HELD_ESCAPE = 64;

/**
 * Console text fed in pieces, searched as it comes: each piece is cleaned as `cleanConsole` would
 * clean the whole log (an escape sequence cut in two is held until its end arrives), then searched
 * together with the last `overlap` characters before it. The search starts after one character of
 * context, so `^`, `$` and `\b` answer as they would on the whole text.
 */
export class ConsoleScanner {
    private held = "";
    /** Cleaned text kept for the next search: up to `overlap` characters plus one of context. */
    private tail = "";
    /** Whether `tail` begins at the very start of the console. */
    private tailAtStart = true;
    private found = false;
    readonly overlap: number;

    constructor(
        readonly pattern: SerialPattern,
        overlap = SERIAL_OVERLAP_CHARS,
    ) {
        // A substring match needs only its own length less one of what came before.
        this.overlap = pattern.kind === "text" ? Math.max(0, pattern.text.length - 1) : overlap;
    }

    /** Whether the pattern has been seen; once seen it stays seen. */
    get matched(): boolean {
        return this.found;
    }

    /** Feeds decoded console text; returns whether the pattern has been seen so far. */
    push(raw: string): boolean {
        if (this.found || raw.length === 0) return this.found;
        let text = this.held + raw;
        this.held = "";
        const unfinished = UNFINISHED_ESCAPE.exec(text);
        if (unfinished && unfinished[0].length < MAX_HELD_ESCAPE) {
            this.held = unfinished[0];
            text = text.slice(0, unfinished.index);
        }
        const fresh = cleanConsole(text);
        if (fresh.length === 0) return false;
        const window = this.tail + fresh;
        const from = this.tailAtStart ? 0 : 1;
        this.found =
            this.pattern.kind === "text"
                ? window.includes(this.pattern.text, from)
                : this.pattern.re.matcher(window).find(from);
        this.keepTail(window);
        return this.found;
    }

    private keepTail(window: string): void {
        const keep = this.overlap + 1;
        if (window.length <= keep) {
            this.tail = window;
            return;
        }
        let start = window.length - keep;
        // Never split a surrogate pair: the context character must be a whole one.
        if (start > 0 && /[\udc00-\udfff]/.test(window[start])) start--;
        this.tail = window.slice(start);
        this.tailAtStart = false;
    }
}
