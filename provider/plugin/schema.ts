import { existsSync, readFileSync } from "node:fs";
import * as path from "node:path";
import { pulumiPackageSchema, type PackageInfo } from "../core/pulumiSchema";
import { RESOURCE_DECLARATIONS } from "../resources/declarations";
import { RESOURCES, tokenOf } from "../resources/registry";
import { providerConfigSchema } from "./providerConfig";

/**
 * The Pulumi package schema our plugin serves, so that Python, Go, .NET and YAML programs can
 * declare the same resources. Nothing here describes a field: the schema is written from the
 * zod specs the lifecycles validate with (resources/declarations.ts, core/pulumiSchema.ts), and
 * the package's metadata comes from package.json.
 */

/** The generated SDKs' package names: none is `pulumi-qemu`, the npm package this one is. */
const LANGUAGE = {
    nodejs: { packageName: "@pulumi-qemu/qemu", dependencies: { "@pulumi/pulumi": "^3.0.0" } },
    python: { packageName: "pulumi_qemu", requires: { pulumi: ">=3.0.0,<4.0.0" } },
    go: { importBasePath: "github.com/pulumi-qemu/pulumi-qemu/sdk/go/qemu", generateResourceContainerTypes: true },
    csharp: { rootNamespace: "PulumiQemu", packageReferences: { Pulumi: "3.*" } },
};

export function packageSchema(version: string): string {
    const pkg = ownPackageJson();
    const info: PackageInfo = {
        name: "qemu",
        displayName: "QEMU",
        version,
        description: pkg.description,
        keywords: ["pulumi", "kind/native", ...pkg.keywords.filter((k: string) => k !== "pulumi")],
        license: pkg.license,
        homepage: pkg.homepage,
        repository:
            typeof pkg.repository === "string"
                ? pkg.repository
                : pkg.repository.url.replace(/^git\+/, "").replace(/\.git$/, ""),
        publisher: pkg.author,
        language: LANGUAGE,
    };
    const schema = pulumiPackageSchema(info, RESOURCE_DECLARATIONS, {
        description: "The qemu provider: one instance per host its resources live on.",
        spec: providerConfigSchema,
    });
    return JSON.stringify(schema);
}

/** The resources' type tokens, as the schema names them. */
export const RESOURCE_TOKENS = RESOURCES.map((r) => tokenOf(r.name));

/** Our package.json, found from wherever this file was compiled to. */
export function ownPackageJson(): Record<string, any> {
    for (let dir = __dirname; dir !== path.dirname(dir); dir = path.dirname(dir)) {
        const file = path.join(dir, "package.json");
        if (existsSync(file)) {
            const pkg = JSON.parse(readFileSync(file, "utf8"));
            if (pkg.name === "pulumi-qemu") return pkg;
        }
    }
    throw new Error(`cannot find pulumi-qemu's package.json above ${__dirname}`);
}
