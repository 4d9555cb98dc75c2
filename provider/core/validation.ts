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
        const shown = value === undefined || typeof value === "object" ? "" : ` (got ${JSON.stringify(value)})`;
        return { property, reason: `${issue.message}${shown}` };
    });
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
