import { z } from "zod";

/**
 * The one description of every input and output: a resource's zod spec, read back as a tree of
 * fields. The plugin's package schema, the SDK's Args types and docs/reference.md are all written
 * from this tree, so a field declared once in a spec (with its `.meta()`) reaches all three.
 *
 * The meta vocabulary (`.meta({ … })` on a zod field; see FieldMeta):
 *   description      what the field is, why you'd set it (required on every field: tests check)
 *   unit             "MiB", "seconds", "bytes"…: shown in the docs beside the type
 *   secret           the value is a secret: marked `secret` in the package schema
 *   replaceOnChanges any change of this input replaces the resource (the diff says so)
 *   typeName         name of an object or enum type in the schema and the SDK ("Disk", "Machine")
 *   accepts          the JSON types a field takes whose zod type cannot say it (a transform
 *                    from unknown, a z.custom): ["number", "string"], ["object"] (any map)
 *   tsType           the SDK's TypeScript type, when it knows more than the spec (a resource
 *                    class accepted in place of its outputs)
 * Defaults come from zod's `.default()`, enums from `z.enum`/`z.literal`, required-ness from
 * `.optional()`: nothing said twice.
 */

export interface FieldMeta {
    description?: string;
    unit?: string;
    secret?: boolean;
    replaceOnChanges?: boolean;
    typeName?: string;
    accepts?: Array<"string" | "number" | "integer" | "boolean" | "object">;
    tsType?: string;
}

export type Primitive = "string" | "integer" | "number" | "boolean";

/** A field's type, as the three writers need it. */
export type Shape =
    | { kind: "primitive"; type: Primitive }
    | { kind: "enum"; type: Primitive; values: Array<string | number | boolean>; name: string }
    | { kind: "array"; items: Shape }
    | { kind: "map"; values: Shape }
    | { kind: "object"; name: string; description?: string; fields: Field[]; openKeys: boolean; named: boolean }
    | { kind: "union"; options: Shape[]; discriminator?: string; name?: string; description?: string }
    | { kind: "any" };

export interface Field {
    name: string;
    shape: Shape;
    required: boolean;
    description?: string;
    default?: unknown;
    unit?: string;
    secret?: boolean;
    replaceOnChanges?: boolean;
    tsType?: string;
}

type Json = Record<string, any>;

/** The fields of a zod object schema; `typeName` names it (the object's own meta wins). */
export function objectShape(schema: z.ZodType, typeName: string): Extract<Shape, { kind: "object" }> {
    const json = z.toJSONSchema(schema, {
        io: "input",
        unrepresentable: "any",
        // A named type keeps its own description where a field that holds it says what the field is.
        override: (ctx) => {
            const own = typeDescriptionOf(ctx.zodSchema);
            if (own !== undefined) ctx.jsonSchema.typeDescription = own;
        },
    }) as Json;
    const shape = toShape(json, typeName);
    if (shape.kind !== "object") throw new Error(`specModel: ${typeName} is not an object schema`);
    return shape;
}

/** The description a named type (`typeName`) was declared with, before a field's `.meta()` said what the field is. */
function typeDescriptionOf(schema: unknown): string | undefined {
    let s = schema as { _zod: { def: { type: string; innerType?: unknown }; parent?: unknown } } | undefined;
    while (s && ["optional", "default", "nullable", "readonly"].includes(s._zod.def.type) && s._zod.def.innerType)
        s = s._zod.def.innerType as typeof s;
    let origin: typeof s;
    for (
        let cur = s;
        cur && z.globalRegistry.get(cur as never)?.typeName !== undefined;
        cur = cur._zod.parent as typeof s
    )
        origin = cur;
    return origin ? (z.globalRegistry.get(origin as never)?.description as string | undefined) : undefined;
}

const pascal = (s: string) => s.replace(/(^|[-_ ])(\w)/g, (_m, _sep, c: string) => c.toUpperCase());

/** A name for a nested type: its own typeName, else the parent's name and the field's ("VmSpecAccel"). */
function nestedName(json: Json, parent: string, field: string): string {
    return json.typeName ?? `${parent}${pascal(field)}`;
}

function toShape(json: Json, name: string): Shape {
    if (Array.isArray(json.accepts)) {
        const options = (json.accepts as string[]).map((t): Shape =>
            t === "object" ? { kind: "map", values: { kind: "any" } } : { kind: "primitive", type: t as Primitive },
        );
        return options.length === 1 ? options[0] : { kind: "union", options };
    }
    const choices: Json[] | undefined = json.oneOf ?? json.anyOf;
    if (choices) {
        const discriminator = commonConst(choices);
        const options = choices.map((c, i) =>
            toShape(
                c,
                c.typeName ??
                    (discriminator ? `${pascal(String(c.properties[discriminator].const))}${name}` : `${name}${i}`),
            ),
        );
        return {
            kind: "union",
            options,
            discriminator,
            name: json.typeName ?? name,
            description: json.typeDescription ?? json.description,
        };
    }
    if (json.enum || json.const !== undefined) {
        const values = json.enum ?? [json.const];
        return { kind: "enum", type: json.type ?? typeof values[0], values, name: json.typeName ?? name };
    }
    switch (json.type) {
        case "string":
        case "integer":
        case "number":
        case "boolean":
            return { kind: "primitive", type: json.type };
        case "array":
            return { kind: "array", items: toShape(json.items ?? {}, json.items?.typeName ?? name) };
        case "object": {
            if (!json.properties) return { kind: "map", values: toShape(json.additionalProperties ?? {}, name) };
            const required: string[] = json.required ?? [];
            const fields = Object.entries<Json>(json.properties).map(([key, prop]) =>
                toField(
                    key,
                    prop,
                    required.includes(key),
                    nestedName(
                        prop.type === "array" ? (prop.items ?? {}) : prop,
                        json.typeName ?? name,
                        singular(prop, key),
                    ),
                ),
            );
            const openKeys = json.additionalProperties !== undefined && json.additionalProperties !== false;
            return {
                kind: "object",
                name: json.typeName ?? name,
                description: json.typeDescription ?? json.description,
                fields,
                openKeys,
                named: json.typeName !== undefined,
            };
        }
        default:
            return { kind: "any" };
    }
}

/** "disks" names its items "Disk"; other fields keep their name. */
function singular(prop: Json, key: string): string {
    return prop.type === "array" && key.endsWith("s") ? key.slice(0, -1) : key;
}

/** The property every choice pins to one constant (`kind`), if there is one: a discriminated union. */
function commonConst(choices: Json[]): string | undefined {
    const first = choices[0]?.properties ?? {};
    return Object.keys(first).find((key) =>
        choices.every((c) => c.type === "object" && c.properties?.[key]?.const !== undefined),
    );
}

function toField(name: string, json: Json, required: boolean, typeName: string): Field {
    return {
        name,
        shape: toShape(json, typeName),
        required,
        description: json.description,
        default: json.default,
        unit: json.unit,
        secret: json.secret,
        replaceOnChanges: json.replaceOnChanges,
        tsType: json.tsType,
    };
}

/** Every named type under `shape` (objects, enums, unions), each once, parents first. */
export function namedTypes(shape: Shape, into = new Map<string, Shape>()): Map<string, Shape> {
    const visit = (s: Shape) => {
        switch (s.kind) {
            case "object":
                if (!into.has(s.name)) into.set(s.name, s);
                for (const f of s.fields) visit(f.shape);
                break;
            case "enum":
                if (!into.has(s.name)) into.set(s.name, s);
                break;
            case "union":
                for (const o of s.options) visit(o);
                break;
            case "array":
                visit(s.items);
                break;
            case "map":
                visit(s.values);
                break;
        }
    };
    visit(shape);
    return into;
}
