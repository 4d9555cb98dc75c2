/**
 * Secrets as the engine sends them to a plugin that accepts secrets (the wire form of
 * @pulumi/pulumi's runtime/rpc): an object tagged with a signature key. The lifecycle code works
 * on plain values, so the plugin unwraps secrets on the way in and marks on the way out every
 * output that carries one: the output of the same name, and any other output whose value
 * contains a secret text (a secret VM name ends up inside `argv` too).
 */

export const SIG_KEY = "4dabf18193072939515e22adb298388d";
export const SECRET_SIG = "1b47061264138c4ac30d75fd1eb44270";

export type Props = Record<string, unknown>;

export function makeSecret(value: unknown): Props {
    return { [SIG_KEY]: SECRET_SIG, value };
}

export function isSecret(value: unknown): value is { value: unknown } {
    return isRecord(value) && value[SIG_KEY] === SECRET_SIG;
}

function isRecord(value: unknown): value is Props {
    return value !== null && typeof value === "object" && !Array.isArray(value);
}

export function containsSecrets(value: unknown): boolean {
    if (isSecret(value)) return true;
    if (Array.isArray(value)) return value.some(containsSecrets);
    if (isRecord(value)) return Object.values(value).some(containsSecrets);
    return false;
}

/** The value with every secret unwrapped. */
export function stripSecrets<T>(value: T): T {
    if (isSecret(value)) return stripSecrets(value.value) as T;
    if (Array.isArray(value)) return value.map(stripSecrets) as T;
    if (isRecord(value)) return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, stripSecrets(v)])) as T;
    return value;
}

/** Every string (and number, as text) held inside a secret anywhere in `value`. */
export function secretTexts(value: unknown, inSecret = false, into: Set<string> = new Set()): Set<string> {
    if (isSecret(value)) return secretTexts(value.value, true, into);
    if (Array.isArray(value)) value.forEach((v) => secretTexts(v, inSecret, into));
    else if (isRecord(value)) Object.values(value).forEach((v) => secretTexts(v, inSecret, into));
    else if (inSecret && (typeof value === "string" || typeof value === "number") && String(value) !== "")
        into.add(String(value));
    return into;
}

/**
 * Marks secret what came from a secret input: where an output mirrors an input (same key, at
 * any depth) the secret is marked at the same place; anything else whose text contains a
 * secret's text is marked as a whole — coarse, but it never shows a secret in the clear.
 */
export function protectOutputs(outs: Props, inputs: Props): Props {
    const texts = [...secretTexts(inputs)];
    if (texts.length === 0) return outs;
    return remark(outs, inputs, texts) as Props;
}

function remark(value: unknown, input: unknown, texts: readonly string[]): unknown {
    if (isSecret(value)) return value;
    if (isSecret(input)) return makeSecret(value);
    if (isRecord(value) && isRecord(input)) {
        return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, remark(v, input[k], texts)]));
    }
    if (Array.isArray(value) && Array.isArray(input) && value.length === input.length) {
        return value.map((v, i) => remark(v, input[i], texts));
    }
    return holdsText(value, texts) ? makeSecret(value) : value;
}

function holdsText(value: unknown, texts: readonly string[]): boolean {
    const json = JSON.stringify(value ?? null);
    return texts.some((t) => json.includes(JSON.stringify(t).slice(1, -1)));
}
