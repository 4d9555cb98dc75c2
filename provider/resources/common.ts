import type * as pulumi from "@pulumi/pulumi";
import { randomBytes } from "node:crypto";
import { InputError, type FieldProblem } from "../core/validation";

/** What Pulumi passes for a value not known until apply (previews). */
export const UNKNOWN = "04da6b54-80e4-46f7-96ec-b56ff0331ba9";

/** Walked with a list, not recursion: inputs nested thousands deep (a generated userData) must not overflow the stack. */
export function hasUnknown(value: unknown): boolean {
    const pending: unknown[] = [value];
    while (pending.length) {
        const v = pending.pop();
        if (v === UNKNOWN) return true;
        if (v !== null && typeof v === "object") pending.push(...Object.values(v));
    }
    return false;
}

/** Pulumi rejects `undefined` anywhere in outputs; a JSON round trip drops such keys. */
export function withoutUndefined<T>(value: T): T {
    return JSON.parse(JSON.stringify(value)) as T;
}

/** Runs `parse`, turning an InputError into Pulumi check failures. */
export function checkWith(parse: () => unknown, inputs: Record<string, unknown>): pulumi.dynamic.CheckResult {
    try {
        parse();
        return { inputs };
    } catch (err) {
        if (err instanceof InputError) return { inputs, failures: err.problems.map(toFailure) };
        throw err;
    }
}

/**
 * Parses several inputs, gathering the problems of all of them so a user sees every bad field
 * at once. `attempt` returns undefined for a part that failed; `finish` throws if any did.
 */
export function problemCollector() {
    const problems: FieldProblem[] = [];
    return {
        attempt<T>(parse: () => T): T | undefined {
            try {
                return parse();
            } catch (err) {
                if (!(err instanceof InputError)) throw err;
                problems.push(...err.problems);
                return undefined;
            }
        },
        finish(): void {
            if (problems.length) throw new InputError(problems);
        },
    };
}

function toFailure(p: FieldProblem): pulumi.dynamic.CheckFailure {
    return { property: p.property, reason: p.reason };
}

/**
 * A suffix that makes a default file name this resource's own. The input hash in the name
 * lets a replacement be written before the old file goes; the suffix keeps two resources with
 * identical inputs from sharing — and then deleting — one file.
 */
export function instanceSuffix(): string {
    return randomBytes(4).toString("hex");
}

const lastRun = new Map<string, number>();

/**
 * Runs `fn` unless it ran for `key` in this process less than `intervalMs` ago. For sweeps of
 * leftovers: worth doing on the next operation, not on each of the hundreds in one refresh.
 * A sweep that fails is only a sweep: the operation it rides on goes on.
 */
export async function oncePerInterval(key: string, intervalMs: number, fn: () => Promise<unknown>): Promise<void> {
    const now = Date.now();
    const last = lastRun.get(key);
    if (last !== undefined && now - last < intervalMs) return;
    lastRun.set(key, now);
    await fn().catch(() => undefined);
}
