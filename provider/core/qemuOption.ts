/**
 * QEMU splits option strings such as `-drive file=…,format=raw` at commas; a literal comma
 * inside a value has to be doubled or QEMU reads the rest as another parameter.
 */
export function escapeOptionValue(value: string): string {
    return value.replace(/,/g, ",,");
}

/** Renders `key=value` pairs (and bare flags) as one QEMU option string, escaping each value. */
export function optionString(parts: ReadonlyArray<string | [string, string]>): string {
    return parts
        .map((part) => (typeof part === "string" ? part : `${part[0]}=${escapeOptionValue(part[1])}`))
        .join(",");
}
