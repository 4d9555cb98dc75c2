import { z } from "zod";

/**
 * File modes a user may ask for, written as octal text ("0640"). Numbers are refused: 640 in
 * a YAML or JSON program is decimal, and would quietly become another mode.
 */

export interface ModeRule {
    /** Bits the owner must keep, e.g. 0o400 for an image the provider must read. */
    required: number;
    /** Every bit that may be set. */
    allowed: number;
    /** What the file is, for the message. */
    what: string;
}

/** Others may read an image the user opens up, never write it: a guest's disk written by any local user is theirs to take over. */
export const IMAGE_MODE: ModeRule = {
    required: 0o400,
    allowed: 0o664,
    what: "an image (never writable by others; no execute, setuid or sticky bits; the owner must be able to read it)",
};
/** Others writing a launcher would run their code as its owner. */
export const LAUNCHER_MODE_RULE: ModeRule = {
    required: 0o500,
    allowed: 0o755,
    what: "a launcher (the owner must read and run it; no one else may write it)",
};

export function fileModeSchema(field: string, rule: ModeRule) {
    return z
        .string({
            error: `${field} must be a string of octal digits such as "0600" (numbers are refused: 640 would be read as decimal)`,
        })
        .regex(/^0?[0-7]{3}$/, { error: `${field} must be three octal digits, optionally after a 0, such as "0600"` })
        .transform((s) => parseInt(s, 8))
        .refine((m) => (m & ~rule.allowed) === 0 && (m & rule.required) === rule.required, {
            error: `${field} does not fit ${rule.what}: allowed bits ${octal(rule.allowed)}, required ${octal(rule.required)}`,
        });
}

export function octal(mode: number): string {
    return "0" + (mode & 0o7777).toString(8).padStart(3, "0");
}
