import * as path from "node:path";
import { z } from "zod";

/**
 * Field helpers shared by every resource's schema, so that a path or a port is judged by the
 * same rule — and explained with the same words — wherever a user writes one.
 */

const CONTROL = /[\u0000\n\r]/;

/** Text that will end up in an argv or a shell script: NUL and line breaks have no safe form there. */
export function plainText(what: string) {
    return z.string({ error: `${what} must be a string` }).refine((s) => !CONTROL.test(s), {
        error: `${what} must not contain NUL, newline or carriage return characters`,
    });
}

/** An absolute host path, because relative ones would depend on where `pulumi up` was run. */
export function absolutePath(what: string) {
    return plainText(what)
        .refine((s) => s.length > 0, { error: `${what} must not be empty` })
        .refine((s) => s.startsWith("/"), { error: `${what} must be an absolute path (start with "/")` });
}

/**
 * Why `p` is no place for an image or a file to read one from: the kernel's pseudo-filesystems
 * (/proc, /sys) and device nodes (/dev) are not files a user means — /proc/self/environ would
 * copy the provider's environment into a guest's disk. /dev/shm, an ordinary tmpfs, is fine.
 */
export function pseudoFileProblem(what: string, p: string): string | undefined {
    const n = path.posix.normalize(p);
    if (n === "/dev/shm" || n.startsWith("/dev/shm/")) return undefined;
    const top = ["/proc", "/sys", "/dev"].find((d) => n === d || n.startsWith(`${d}/`));
    if (!top) return undefined;
    const kind = top === "/dev" ? "device nodes" : "the kernel's view of processes and devices, not files";
    return `${what} is under ${top} (${kind}); use a regular file elsewhere (/dev/shm is fine for a tmpfs)`;
}

/** An absolute path to a regular file of the user's: not under /proc, /sys or /dev (see pseudoFileProblem). */
export function hostFilePath(what: string) {
    return absolutePath(what).refine((s) => pseudoFileProblem(what, s) === undefined, {
        error: (iss) => pseudoFileProblem(what, iss.input as string),
    });
}

export function port(what: string) {
    return z
        .number({ error: `${what} must be a port number` })
        .int({ error: `${what} must be a whole number` })
        .min(1, { error: `${what} must be between 1 and 65535` })
        .max(65535, { error: `${what} must be between 1 and 65535` });
}

/** Renders a zod path such as ["portForwards", 1, "host"] as `vm.portForwards[1].host`. */
export function fieldName(root: string, path: ReadonlyArray<PropertyKey>): string {
    let out = root;
    for (const key of path) {
        out += typeof key === "number" ? `[${key}]` : out ? `.${String(key)}` : String(key);
    }
    return out || "(input)";
}

export interface FieldProblem {
    property: string;
    reason: string;
}

/**
 * Every problem zod found, each naming the field it belongs to by its full dotted path, saying
 * what is expected (zod's own wording, "Invalid input: expected array, received string", is
 * rewritten: a string given for a list shows the list it would be), and, for an unknown key,
 * the keys that object takes and the likely one meant. `schema` is what was parsed: it knows the keys.
 */
export function fieldProblems(error: z.ZodError, root: string, input?: unknown, schema?: z.ZodType): FieldProblem[] {
    return error.issues.flatMap((issue): FieldProblem[] => {
        if (issue.code === "unrecognized_keys") return unknownNestedKeys(issue.keys, issue.path, root, input, schema);
        const property = fieldName(root, issue.path);
        const value = valueAt(input, issue.path);
        // A URL's user and password never go into a message, not even as the value that was refused.
        const clean = typeof value === "string" ? value.replace(/\/\/[^/@\s]*@/g, "//") : value;
        // A check that may judge a secret says `params: { quote: false }`: its value stays out of the message.
        const quiet = issue.code === "custom" && (issue.params as { quote?: boolean } | undefined)?.quote === false;
        const shown = quiet || value === undefined || typeof value === "object" ? "" : ` (got ${quoteValue(clean)})`;
        return [{ property, reason: `${plainMessage(issue, value)}${shown}` }];
    });
}

/** zod's generic wording, said as what the field needs; a message a schema wrote itself is kept. */
function plainMessage(issue: z.core.$ZodIssue, value: unknown): string {
    const m = issue.message;
    if (issue.code === "invalid_type" && /^Invalid input/.test(m)) {
        const expected = describeType(String(issue.expected));
        if (value === undefined) return `required, and missing: expected ${expected}`;
        if (issue.expected === "array" && typeof value === "string") {
            return `expected a list, not a single string: write ${quoteValue(value.includes(" ") ? value.split(/\s+/).filter(Boolean) : [value])}`;
        }
        return `expected ${expected}, not ${value === null ? "null" : Array.isArray(value) ? "a list" : `a ${typeof value}`}`;
    }
    if (issue.code === "invalid_value" && /^Invalid (option|input)/.test(m)) {
        return `expected one of ${issue.values.map((v) => JSON.stringify(v)).join(", ")}`;
    }
    if (issue.code === "invalid_union" && /^Invalid input/.test(m)) return "does not match any form this field takes";
    if ((issue.code === "too_small" || issue.code === "too_big") && /^Too (small|big)/.test(m)) {
        return m
            .replace(/^Too (small|big): expected \w+ to (have|be) /, "must be ")
            .replace(/>=1 characters$/, "at least 1 character long (not empty)");
    }
    return m;
}

function describeType(t: string): string {
    if (t === "array") return "a list";
    if (t === "object") return "an object ({ key: value, … })";
    if (t === "int") return "a whole number";
    return /^[aeiou]/.test(t) ? `an ${t}` : `a ${t}`;
}

/** One problem per unknown key, named by its full path, with the keys its object takes and the likely one. */
function unknownNestedKeys(
    keys: string[],
    at: ReadonlyArray<PropertyKey>,
    root: string,
    input: unknown,
    schema?: z.ZodType,
): FieldProblem[] {
    const allowed = schema ? keysOfObjectAt(schema, at, input) : undefined;
    const owner = at.length || root ? fieldName(root, at) : "the inputs";
    return keys.map((key) => {
        const meant = allowed && closest(key, allowed);
        const list = allowed ? ` (it takes: ${allowed.join(", ")})` : "";
        const hint = meant ? `; did you mean ${JSON.stringify(meant)}?` : "";
        return {
            property: fieldName(root, [...at, key]),
            reason: `${quoteValue(key)} is not a key of ${owner}${list}${hint}`,
        };
    });
}

/* eslint-disable @typescript-eslint/no-explicit-any -- zod's internal definitions are walked by their `type`. */
const WRAPPERS = new Set(["optional", "nullable", "default", "prefault", "catch", "readonly", "nonoptional"]);

function unwrap(s: any): any {
    for (let i = 0; i < 32 && s?._zod?.def; i++) {
        const d = s._zod.def;
        if (WRAPPERS.has(d.type)) s = d.innerType;
        else if (d.type === "pipe") s = d.in;
        else if (d.type === "lazy") s = d.getter();
        else return s;
    }
    return s;
}

/** Of a union, the object schema the input picks (by its discriminator), or the only object in it. */
function pickObject(s: any, value: unknown): any {
    const d = s?._zod?.def;
    if (d?.type !== "union") return s;
    const objects = (d.options as any[]).map(unwrap).filter((o) => o?._zod?.def?.type === "object");
    const tag = d.discriminator as string | undefined;
    if (tag && value !== null && typeof value === "object") {
        const v = (value as Record<string, unknown>)[tag];
        const hit = objects.find((o) => {
            const lit = unwrap(o._zod.def.shape[tag])?._zod?.def;
            return lit?.type === "literal" && (lit.values as unknown[]).includes(v);
        });
        if (hit) return hit;
    }
    return objects.length === 1 ? objects[0] : s;
}

/** The keys the object schema at `path` takes, following the input through lists and unions. */
export function keysOfObjectAt(
    schema: z.ZodType,
    path: ReadonlyArray<PropertyKey>,
    input: unknown,
): string[] | undefined {
    let s: any = unwrap(schema);
    let v: unknown = input;
    for (const key of path) {
        s = pickObject(s, v);
        const d = s?._zod?.def;
        if (d?.type === "object") s = d.shape[key as string] ?? d.catchall;
        else if (d?.type === "array") s = d.element;
        else if (d?.type === "record") s = d.valueType;
        else return undefined;
        s = unwrap(s);
        v = v !== null && typeof v === "object" ? (v as Record<PropertyKey, unknown>)[key] : undefined;
    }
    s = pickObject(s, v);
    return s?._zod?.def?.type === "object" ? Object.keys(s._zod.def.shape) : undefined;
}
/* eslint-enable @typescript-eslint/no-explicit-any */

/** How deep `value` nests objects and lists, counted without recursion and up to `limit + 1`. */
export function nestingDepth(value: unknown, limit: number): number {
    let deepest = 0;
    const pending: Array<[unknown, number]> = [[value, 0]];
    while (pending.length) {
        const [v, depth] = pending.pop()!;
        if (v === null || typeof v !== "object") continue;
        deepest = Math.max(deepest, depth + 1);
        if (deepest > limit) return deepest;
        for (const x of Object.values(v)) pending.push([x, depth + 1]);
    }
    return deepest;
}

/** Longest bad value quoted in an error: enough to recognise it, not a wall of text (or of someone's secret file). */
export const MAX_QUOTED_CHARS = 200;

/** A value as an error shows it: JSON, cut to MAX_QUOTED_CHARS with the full length said. */
export function quoteValue(value: unknown): string {
    const text = JSON.stringify(value) ?? String(value);
    if (text.length <= MAX_QUOTED_CHARS) return text;
    const length = typeof value === "string" ? `${value.length} characters` : `${text.length} characters as JSON`;
    return `${text.slice(0, MAX_QUOTED_CHARS)}… (cut; ${length})`;
}

/** The key Pulumi's dynamic providers add to every resource's inputs. */
export const DYNAMIC_PROVIDER_KEY = "__provider";

/**
 * Refuses top-level input keys a resource does not take (`pth`, `redy`, `statedir`), naming each
 * with the allowed ones and a likely meant one. Let through: Pulumi's `__provider`, and the
 * resource's output names when their value is undefined (the SDK declares outputs that way).
 */
export function unknownKeyProblems(
    inputs: Record<string, unknown>,
    allowed: readonly string[],
    outputs: readonly string[] = [],
): FieldProblem[] {
    const problems: FieldProblem[] = [];
    for (const key of Object.keys(inputs)) {
        if (allowed.includes(key) || key === DYNAMIC_PROVIDER_KEY) continue;
        if (outputs.includes(key) && inputs[key] === undefined) continue;
        const meant = closest(key, allowed);
        const hint = meant ? `; did you mean ${JSON.stringify(meant)}?` : "";
        problems.push({
            property: key,
            reason: `${quoteValue(key)} is not an input of this resource (inputs: ${allowed.join(", ")})${hint}`,
        });
    }
    return problems;
}

/** Throws an InputError for every key `unknownKeyProblems` finds. */
export function refuseUnknownKeys(
    inputs: Record<string, unknown>,
    allowed: readonly string[],
    outputs: readonly string[] = [],
): void {
    const problems = unknownKeyProblems(inputs, allowed, outputs);
    if (problems.length) throw new InputError(problems);
}

/**
 * The allowed key `key` was most likely meant to be: same letters in another case, at most two
 * edits away, or a key that starts with what was meant (`memmory` for `memoryMiB`).
 */
function closest(key: string, allowed: readonly string[]): string | undefined {
    const lower = key.toLowerCase();
    const same = allowed.find((a) => a.toLowerCase() === lower);
    if (same) return same;
    let best: { name: string; d: number } | undefined;
    for (const a of allowed) {
        const al = a.toLowerCase();
        let d = editDistance(lower, al);
        // A unit or qualifier left off the end (memoryMiB, timeoutSeconds) costs one edit, not its length.
        if (al.length > lower.length && lower.length >= 4) {
            for (const n of [lower.length - 1, lower.length, lower.length + 1])
                d = Math.min(d, editDistance(lower, al.slice(0, n)) + 1);
        }
        if (d <= 2 && (!best || d < best.d)) best = { name: a, d };
    }
    return best?.name;
}

function editDistance(a: string, b: string): number {
    if (Math.abs(a.length - b.length) > 2 || a.length > 64 || b.length > 64) return 99;
    let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
    for (let i = 1; i <= a.length; i++) {
        const cur = [i];
        for (let j = 1; j <= b.length; j++)
            cur[j] = Math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
        prev = cur;
    }
    return prev[b.length];
}

function valueAt(input: unknown, path: ReadonlyArray<PropertyKey>): unknown {
    let cur: unknown = input;
    for (const key of path) {
        if (cur === null || typeof cur !== "object") return undefined;
        cur = (cur as Record<PropertyKey, unknown>)[key];
    }
    return cur;
}

/** Thrown for invalid input; `problems` keeps the per-field list for Pulumi's check failures. */
export class InputError extends Error {
    constructor(readonly problems: FieldProblem[]) {
        super(problems.map((p) => `${p.property}: ${p.reason}`).join("\n"));
        this.name = "InputError";
    }
}

/** Parses `input` with `schema`, or throws an InputError naming every bad field under `root`. */
export function parseOrThrow<S extends z.ZodType>(schema: S, input: unknown, root: string): z.output<S> {
    const result = schema.safeParse(input);
    if (!result.success) throw new InputError(fieldProblems(result.error, root, input, schema));
    return result.data;
}
