/**
 * Property values in their wire forms (@pulumi/pulumi runtime/rpc): an unknown is a magic
 * string, a secret an object tagged with the signature key.
 */

import {
    containsSecrets,
    isSecret,
    makeSecret,
    SIG_KEY,
    stripSecrets,
    type Props,
} from "../../provider/plugin/secrets";

import { UNKNOWN } from "../../provider/resources/common";

export { UNKNOWN };

// The secret wire form is the plugin's own code; the engine's side of it is emulated below.
export {
    containsSecrets,
    isSecret,
    makeSecret,
    stripSecrets,
    SIG_KEY,
    SECRET_SIG,
    type Props,
} from "../../provider/plugin/secrets";

/** A plain object: not an array, not a signature-tagged value. */
export function isPlainObject(value: unknown): value is Props {
    return isRecord(value) && !(SIG_KEY in value);
}

function isRecord(value: unknown): value is Props {
    return value !== null && typeof value === "object" && !Array.isArray(value);
}

export function containsUnknowns(value: unknown): boolean {
    if (value === UNKNOWN) return true;
    if (Array.isArray(value)) return value.some(containsUnknowns);
    if (isRecord(value)) return Object.values(value).some(containsUnknowns);
    return false;
}

/**
 * The engine's annotateSecrets (sdk/go/common/resource/plugin/provider_plugin.go), applied to
 * what a provider that answered acceptSecrets=false returns: an output keeps the secretness of
 * the input of the same name. Objects on both sides are walked key by key; anything else that
 * held a secret anywhere (an array, a secret object) becomes one secret as a whole.
 */
export function annotateSecrets(outs: Props, ins: Props): Props {
    const result: Props = { ...outs };
    for (const [key, inValue] of Object.entries(ins)) {
        if (!(key in result)) continue;
        const outValue = result[key];
        if (isPlainObject(outValue) && isPlainObject(inValue)) result[key] = annotateSecrets(outValue, inValue);
        else if (!isSecret(outValue) && containsSecrets(inValue)) result[key] = makeSecret(outValue);
    }
    return result;
}

/** What the engine sends a plugin: secrets unwrapped when the plugin answered acceptSecrets=false. */
export function forProvider(acceptSecrets: boolean, value: Props): Props {
    return acceptSecrets ? value : stripSecrets(value);
}

/** What the engine keeps of a plugin's answer: re-marked from what it sent when the plugin refused secrets. */
export function fromProvider(acceptSecrets: boolean, answer: Props, sent: Props): Props {
    return acceptSecrets ? answer : annotateSecrets(answer, sent);
}

/** Structural equality of JSON values, keys in any order. */
export function deepEqual(a: unknown, b: unknown): boolean {
    if (a === b) return true;
    if (Array.isArray(a) && Array.isArray(b)) return a.length === b.length && a.every((x, i) => deepEqual(x, b[i]));
    if (isRecord(a) && isRecord(b)) {
        const ka = Object.keys(a);
        return ka.length === Object.keys(b).length && ka.every((k) => k in b && deepEqual(a[k], b[k]));
    }
    return false;
}
