import { z } from "zod";
import { pulumiPackageSchema, type PackageInfo } from "../../provider/core/pulumiSchema";
import { objectShape } from "../../provider/core/specModel";
import { metaschemaErrors } from "../engine/schemaDocs";

/** The zod → field tree → package schema path, on a small spec that has one of everything. */

const disk = z
    .object({
        path: z.string().meta({ description: "Where." }),
        format: z.enum(["raw", "qcow2"]).meta({ description: "Format." }),
    })
    .strict()
    .meta({ typeName: "Disk" });
const spec = z
    .object({
        memoryMiB: z.number().int().min(16).default(256).meta({ description: "Memory.", unit: "MiB" }),
        machine: z.enum(["pc", "q35"]).default("pc").meta({ description: "Machine type." }),
        password: z.string().optional().meta({ description: "A password.", secret: true }),
        disks: z.array(disk).default([]).meta({ description: "Disks." }),
        size: z
            .unknown()
            .transform((v) => Number(v))
            .meta({ description: "Size.", accepts: ["number", "string"] }),
        labels: z.record(z.string(), z.string()).optional().meta({ description: "Labels." }),
        source: z
            .discriminatedUnion("kind", [
                z
                    .object({
                        kind: z.literal("blank"),
                        format: z.enum(["raw", "qcow2"]).meta({ description: "Blank's format." }),
                    })
                    .strict(),
                z
                    .object({
                        kind: z.literal("seed"),
                        format: z.enum(["iso", "vfat"]).default("iso").meta({ description: "Seed's format." }),
                        userData: z.string().meta({ description: "User data." }),
                    })
                    .strict(),
            ])
            .meta({ typeName: "Source", description: "What it is made from.", replaceOnChanges: true }),
    })
    .strict();

const pkg: PackageInfo = {
    name: "t",
    displayName: "T",
    version: "9.9.9",
    description: "A test.",
    keywords: ["x"],
    license: "MIT",
    homepage: "https://h",
    repository: "https://r",
    publisher: "P",
    language: { nodejs: { packageName: "@t/t" } },
};

const schema = () =>
    pulumiPackageSchema(
        pkg,
        [
            {
                name: "Thing",
                description: "A thing.",
                inputs: spec,
                outputs: z.object({ id2: z.string().meta({ description: "Its id." }) }),
            },
        ],
        {
            description: "Provider.",
            spec: z.object({ host: z.string().optional().meta({ description: "Where it runs." }) }),
        },
    );

test("a field's type, default, unit, enum, secrecy and required-ness come from its zod declaration", () => {
    const fields = Object.fromEntries(objectShape(spec, "Spec").fields.map((f) => [f.name, f]));
    expect(fields.memoryMiB).toMatchObject({
        required: false,
        default: 256,
        unit: "MiB",
        shape: { kind: "primitive", type: "integer" },
    });
    expect(fields.machine.shape).toMatchObject({ kind: "enum", values: ["pc", "q35"], name: "SpecMachine" });
    expect(fields.password).toMatchObject({ secret: true, required: false });
    expect(fields.size).toMatchObject({
        required: true,
        shape: { kind: "union", options: [{ type: "number" }, { type: "string" }] },
    });
    expect(fields.disks.shape).toMatchObject({ kind: "array", items: { kind: "object", name: "Disk" } });
    expect(fields.source.shape).toMatchObject({ kind: "union", discriminator: "kind", name: "Source" });
});

test("the package schema: enums as named enum types, defaults, secret, replaceOnChanges, and a flattened discriminated union", () => {
    const s = schema();
    const inputs = s.resources["t:index:Thing"].inputProperties;
    expect(inputs.machine).toEqual({
        $ref: "#/types/t:index:ThingMachine",
        description: "Machine type.",
        default: "pc",
    });
    expect(s.types["t:index:ThingMachine"]).toMatchObject({
        type: "string",
        enum: [{ value: "pc" }, { value: "q35" }],
    });
    expect(inputs.memoryMiB).toEqual({ type: "integer", description: "Memory. Unit: MiB.", default: 256 });
    expect(inputs.password.secret).toBe(true);
    expect(inputs.size.oneOf).toEqual([{ type: "number" }, { type: "string" }]);
    expect(inputs.labels).toMatchObject({ type: "object", additionalProperties: { type: "string" } });
    expect(inputs.source).toMatchObject({ $ref: "#/types/t:index:Source", replaceOnChanges: true });
    expect(s.resources["t:index:Thing"].requiredInputs).toEqual(["size", "source"]);
    const source = s.types["t:index:Source"];
    expect(Object.keys(source.properties)).toEqual(["kind", "format", "userData"]);
    expect(source.required).toEqual(["kind"]);
    expect(s.types["t:index:SourceKind"].enum.map((e: { value: string }) => e.value)).toEqual(["blank", "seed"]);
    expect(s.types["t:index:SourceFormat"].enum.map((e: { value: string }) => e.value)).toEqual([
        "raw",
        "qcow2",
        "iso",
        "vfat",
    ]);
    expect(source.properties.format.description).toBe("blank: Blank's format. seed: Seed's format.");
    expect(s).toMatchObject({
        version: "9.9.9",
        license: "MIT",
        repository: "https://r",
        publisher: "P",
        homepage: "https://h",
        keywords: ["x"],
    });
    expect(metaschemaErrors(s)).toEqual([]);
});

test("two different types under one name are refused, naming the fix", () => {
    const clash = z.object({
        a: z.enum(["x", "y"]).meta({ typeName: "Same" }),
        b: z.enum(["p", "q"]).meta({ typeName: "Same" }),
    });
    expect(() =>
        pulumiPackageSchema(pkg, [{ name: "C", description: "c", inputs: clash, outputs: z.object({}) }], {
            description: "p",
            spec: z.object({}),
        }),
    ).toThrow(/two different types named Same; give one a typeName/);
});
