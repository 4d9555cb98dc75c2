import * as path from "node:path";
import { readFileSync } from "node:fs";

/**
 * Checks on the package schema a plugin serves: every resource, input and output property,
 * nested types included, documents itself, and the whole validates against the package
 * metaschema (tests/fixtures/package-schema). SDK generators copy these descriptions into
 * Python docstrings, Go comments and editor hovers; a property without one is a blank there.
 */

type Json = Record<string, any>;

/** Each place that lacks a description, as `resources.qemu:index:X.inputProperties.name`. */
export function undocumented(schema: Json): string[] {
    const missing: string[] = [];
    const described = (where: string, node: Json | undefined) => {
        if (typeof node?.description !== "string" || node.description.trim().length < 3) missing.push(where);
    };
    const properties = (where: string, map: Json | undefined) => {
        for (const [name, prop] of Object.entries(map ?? {})) described(`${where}.${name}`, prop as Json);
    };
    for (const [token, r] of Object.entries<Json>(schema.resources ?? {})) {
        described(`resources.${token}`, r);
        properties(`resources.${token}.inputProperties`, r.inputProperties);
        properties(`resources.${token}.properties`, r.properties);
    }
    for (const [token, t] of Object.entries<Json>(schema.types ?? {})) {
        described(`types.${token}`, t);
        properties(`types.${token}.properties`, t.properties);
    }
    return missing;
}

/** Names in `required`/`requiredInputs` lists that are not properties, and `$ref`s to types not defined. */
export function danglingNames(schema: Json): string[] {
    const bad: string[] = [];
    const check = (where: string, names: string[] | undefined, map: Json | undefined) => {
        for (const n of names ?? []) if (!(n in (map ?? {}))) bad.push(`${where}: ${n}`);
    };
    for (const [token, r] of Object.entries<Json>(schema.resources ?? {})) {
        check(`resources.${token}.required`, r.required, r.properties);
        check(`resources.${token}.requiredInputs`, r.requiredInputs, r.inputProperties);
    }
    for (const [token, t] of Object.entries<Json>(schema.types ?? {}))
        check(`types.${token}.required`, t.required, t.properties);
    for (const m of JSON.stringify(schema).matchAll(/"\$ref":"#\/types\/([^"]+)"/g))
        if (!(m[1] in (schema.types ?? {}))) bad.push(`$ref to undefined type ${m[1]}`);
    return bad;
}

/** ajv's complaints about `schema` against the package metaschema, one line each; empty when valid. */
export function metaschemaErrors(schema: Json): string[] {
    const Ajv2020 = require("ajv/dist/2020").default;
    const metaschema = JSON.parse(
        readFileSync(path.join(__dirname, "..", "fixtures", "package-schema", "metaschema.json"), "utf8"),
    );
    const ajv = new Ajv2020({ allErrors: true, strict: false });
    const validate = ajv.compile(metaschema);
    if (validate(schema)) return [];
    return (validate.errors ?? []).map(
        (e: { instancePath: string; message?: string; params?: unknown }) =>
            `${e.instancePath || "/"} ${e.message} ${JSON.stringify(e.params)}`,
    );
}
