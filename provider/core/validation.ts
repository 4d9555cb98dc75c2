import { z } from "zod";

/**
 * Field helpers shared by every resource's schema, so that a path or a port is judged by the
 * same rule — and explained with the same words — wherever a user writes one.
 */

const CONTROL = /[\u0000\n\r]/;

/** Text that will end up in an argv or a shell script: NUL and line breaks have no safe form there. */
export function plainText(what: string) {
    return z
        .string({ error: `${what} must be a string` })
        .refine((s) => !CONTROL.test(s), { error: `${what} must not contain NUL, newline or carriage return characters` });
}

/** An absolute host path, because relative ones would depend on where `pulumi up` was run. */
export function absolutePath(what: string) {
    return plainText(what)
        .refine((s) => s.length > 0, { error: `${what} must not be empty` })
        .refine((s) => s.startsWith("/"), { error: `${what} must be an absolute path (start with "/")` });
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

/** Every problem zod found, each naming the field it belongs to, with the value when it helps. */
export function fieldProblems(error: z.ZodError, root: string, input?: unknown): FieldProblem[] {
    return error.issues.map((issue) => {
        const property = fieldName(root, issue.path);
        const value = valueAt(input, issue.path);
        // A URL's user and password never go into a message, not even as the value that was refused.
        const clean = typeof value === "string" ? value.replace(/\/\/[^/@\s]*@/g, "//") : value;
        const shown = value === undefined || typeof value === "object" ? "" : ` (got ${quoteValue(clean)})`;
        return { property, reason: `${issue.message}${shown}` };
    });
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
export function unknownKeyProblems(inputs: Record<string, unknown>, allowed: readonly string[], outputs: readonly string[] = []): FieldProblem[] {
    const problems: FieldProblem[] = [];
    for (const key of Object.keys(inputs)) {
        if (allowed.includes(key) || key === DYNAMIC_PROVIDER_KEY) continue;
        if (outputs.includes(key) && inputs[key] === undefined) continue;
        const meant = closest(key, allowed);
        const hint = meant ? `; did you mean ${JSON.stringify(meant)}?` : "";
        problems.push({ property: key, reason: `${quoteValue(key)} is not an input of this resource (inputs: ${allowed.join(", ")})${hint}` });
    }
    return problems;
}

/** Throws an InputError for every key `unknownKeyProblems` finds. */
export function refuseUnknownKeys(inputs: Record<string, unknown>, allowed: readonly string[], outputs: readonly string[] = []): void {
    const problems = unknownKeyProblems(inputs, allowed, outputs);
    if (problems.length) throw new InputError(problems);
}

/** The allowed key `key` was most likely meant to be: same letters in another case, or at most two edits away. */
function closest(key: string, allowed: readonly string[]): string | undefined {
    const lower = key.toLowerCase();
    const same = allowed.find((a) => a.toLowerCase() === lower);
    if (same) return same;
    let best: { name: string; d: number } | undefined;
    for (const a of allowed) {
        const d = editDistance(lower, a.toLowerCase());
        if (d <= 2 && (!best || d < best.d)) best = { name: a, d };
    }
    return best?.name;
}

function editDistance(a: string, b: string): number {
    if (Math.abs(a.length - b.length) > 2 || a.length > 64 || b.length > 64) return 99;
    let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
    for (let i = 1; i <= a.length; i++) {
        const cur = [i];
        for (let j = 1; j <= b.length; j++) cur[j] = Math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
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
    if (!result.success) throw new InputError(fieldProblems(result.error, root, input));
    return result.data;
}
