import type { z } from "zod";
import { objectShape, type Field, type Shape } from "./specModel";

/**
 * The Pulumi package schema (what Python, Go, .NET and YAML SDKs are generated from), written
 * from the resources' zod specs (specModel.ts): types, enums as named enum types, defaults,
 * `secret` and `replaceOnChanges` all come from the spec, so the schema cannot drift from what
 * the provider accepts.
 *
 * A discriminated union (a DiskImage's `source`, picked by `kind`) becomes one object type with
 * every variant's fields, `kind` required: Pulumi's SDK generators handle object unions poorly in
 * Go and .NET, and the provider judges the combination anyway.
 */

type Json = Record<string, any>;

/** One resource as the schema shows it: its zod input and output declarations. */
export interface ResourceDeclaration {
    name: string;
    description: string;
    inputs: z.ZodType;
    outputs: z.ZodType;
}

/** The package's metadata (mostly package.json's) and its per-language package names. */
export interface PackageInfo {
    name: string;
    displayName: string;
    version: string;
    description: string;
    keywords: string[];
    license: string;
    homepage: string;
    repository: string;
    publisher: string;
    language: Json;
}

export function pulumiPackageSchema(
    pkg: PackageInfo,
    resources: readonly ResourceDeclaration[],
    config: { description: string; spec: z.ZodType },
): Json {
    const w = new SchemaWriter(pkg.name);
    const configShape = objectShape(config.spec, "ProviderConfig");
    const configProps = w.properties(configShape.fields);
    const out: Json = {};
    for (const r of resources) {
        const inputs = objectShape(r.inputs, r.name);
        const outputs = objectShape(r.outputs, r.name);
        out[w.token(r.name)] = {
            description: r.description,
            inputProperties: w.properties(inputs.fields),
            requiredInputs: inputs.fields.filter((f) => f.required).map((f) => f.name),
            properties: w.properties(outputs.fields),
            required: outputs.fields.filter((f) => f.required).map((f) => f.name),
        };
    }
    return {
        name: pkg.name,
        displayName: pkg.displayName,
        version: pkg.version,
        description: pkg.description,
        keywords: pkg.keywords,
        homepage: pkg.homepage,
        license: pkg.license,
        repository: pkg.repository,
        publisher: pkg.publisher,
        config: { variables: configProps },
        provider: { description: config.description, inputProperties: configProps },
        types: w.types,
        resources: out,
        language: pkg.language,
    };
}

class SchemaWriter {
    readonly types: Json = {};

    constructor(private readonly pkg: string) {}

    token(name: string): string {
        return `${this.pkg}:index:${name}`;
    }

    properties(fields: readonly Field[]): Json {
        return Object.fromEntries(fields.map((f) => [f.name, this.property(f)]));
    }

    private property(f: Field): Json {
        const p: Json = { ...this.typeSpec(f.shape, f.description), description: describe(f) };
        if (f.default !== undefined && (f.shape.kind === "primitive" || f.shape.kind === "enum")) p.default = f.default;
        if (f.secret) p.secret = true;
        if (f.replaceOnChanges) p.replaceOnChanges = true;
        return p;
    }

    private typeSpec(s: Shape, description?: string): Json {
        switch (s.kind) {
            case "primitive":
                return { type: s.type };
            case "any":
                return { $ref: "pulumi.json#/Any" };
            case "array":
                return { type: "array", items: this.typeSpec(s.items, description) };
            case "map":
                return { type: "object", additionalProperties: this.typeSpec(s.values, description) };
            case "enum":
                // `true` alone (warmStart, ready.agent) is a flag: a boolean, not a one-value enum type.
                if (s.type === "boolean") return { type: "boolean" };
                this.define(s.name, {
                    type: s.type,
                    description: description ?? `One of ${s.values.join(", ")}.`,
                    enum: s.values.map((value) => ({ value })),
                });
                return { $ref: `#/types/${this.token(s.name)}` };
            case "object":
                // An unnamed open-keyed object (cloud-init meta-data) takes any key: Pulumi's Any says so.
                if (s.openKeys && !s.named) return { $ref: "pulumi.json#/Any" };
                this.defineObject(s.name, s.description ?? description, s.fields);
                return { $ref: `#/types/${this.token(s.name)}` };
            case "union":
                if (s.discriminator) {
                    this.defineObject(s.name!, s.description ?? description, flatten(s));
                    return { $ref: `#/types/${this.token(s.name!)}` };
                }
                return { oneOf: s.options.map((o) => this.typeSpec(o, description)) };
        }
    }

    private defineObject(name: string, description: string | undefined, fields: Field[]): void {
        const existing = this.types[this.token(name)];
        if (existing) {
            if (
                existing.type !== "object" ||
                (existing.properties && Object.keys(existing.properties).join() !== fields.map((f) => f.name).join())
            ) {
                throw new Error(`pulumiSchema: two different types named ${name}; give one a typeName in its .meta()`);
            }
            return;
        }
        // Reserved first: a type that refers to itself stops here.
        this.types[this.token(name)] = {};
        this.types[this.token(name)] = {
            type: "object",
            description: description ?? name,
            properties: this.properties(fields),
            required: fields.filter((f) => f.required).map((f) => f.name),
        };
    }

    private define(name: string, spec: Json): void {
        const token = this.token(name);
        if (this.types[token] && JSON.stringify(this.types[token].enum) !== JSON.stringify(spec.enum)) {
            throw new Error(`pulumiSchema: two different types named ${name}; give one a typeName in its .meta()`);
        }
        this.types[token] ??= spec;
    }
}

/** A field's description with its unit, as SDK generators copy it into docstrings. */
function describe(f: Field): string | undefined {
    if (!f.description) return undefined;
    return f.unit && !f.description.includes(f.unit) ? `${f.description} Unit: ${f.unit}.` : f.description;
}

/**
 * The variants of a discriminated union as one object: each field once, required only when every
 * variant requires it, enums of one name merged, described per variant when they differ.
 */
function flatten(u: Extract<Shape, { kind: "union" }>): Field[] {
    const byName = new Map<
        string,
        {
            field: Field;
            in: string[];
            requiredIn: number;
            descriptions: Map<string, string[]>;
            values: Set<string | number | boolean>;
        }
    >();
    const variants = u.options.filter((o): o is Extract<Shape, { kind: "object" }> => o.kind === "object");
    for (const v of variants) {
        const tag = String(enumValues(v.fields.find((f) => f.name === u.discriminator)!.shape)[0]);
        for (const f of v.fields) {
            let entry = byName.get(f.name);
            if (!entry) {
                const shape =
                    f.shape.kind === "enum"
                        ? { ...f.shape, name: `${u.name}${f.name[0].toUpperCase()}${f.name.slice(1)}` }
                        : f.shape;
                entry = { field: { ...f, shape }, in: [], requiredIn: 0, descriptions: new Map(), values: new Set() };
                byName.set(f.name, entry);
            }
            entry.in.push(tag);
            if (f.required) entry.requiredIn++;
            for (const value of enumValues(f.shape)) entry.values.add(value);
            if (f.description)
                entry.descriptions.set(f.description, [...(entry.descriptions.get(f.description) ?? []), tag]);
        }
    }
    return [...byName.values()].map(({ field, in: kinds, requiredIn, descriptions, values }) => {
        const shape: Shape = field.shape.kind === "enum" ? { ...field.shape, values: [...values] } : field.shape;
        const texts = [...descriptions.entries()];
        const description =
            texts.length === 1 && kinds.length === variants.length && field.name !== u.discriminator
                ? texts[0][0]
                : texts.map(([text, tags]) => `${tags.join(", ")}: ${text}`).join(" ") ||
                  `One of ${[...values].join(", ")}.`;
        return {
            ...field,
            shape,
            description,
            required: requiredIn === variants.length,
            default: sameDefault(field, kinds.length === variants.length),
        };
    });
}

function enumValues(s: Shape): Array<string | number | boolean> {
    return s.kind === "enum" ? s.values : [];
}

/** A default shown only when the field is in every variant; otherwise it depends on the kind. */
function sameDefault(f: Field, everywhere: boolean): unknown {
    return everywhere ? f.default : undefined;
}
