#!/usr/bin/env node
/**
 * Moving a stack from the npm package's dynamic resources to the provider plugin without
 * replacing anything. The two paths run the same lifecycles on the same state, but Pulumi knows
 * them under different type tokens and providers (`pulumi-nodejs:dynamic/qemu:VirtualMachine`
 * from the dynamic-provider plugin, `qemu:index:VirtualMachine` from ours), and an alias cannot
 * carry a resource across providers of different packages: the engine replaces it. So the stack's
 * state is rewritten instead, as `pulumi stack export` / `pulumi stack import` allow:
 *
 *     pulumi stack export --file before.json
 *     npx pulumi-qemu-migrate-state before.json > after.json
 *     pulumi stack import --file after.json
 *
 * Each of our dynamic resources gets the plugin's type token (in its type and URN, and in every
 * URN that names it: parents, dependencies, property dependencies, deleted-with), loses the
 * serialized dynamic provider (`__provider`, and `__timeouts`, see sdk/providers.ts) from its inputs and outputs, and is pointed at the
 * plugin's default provider, which is added to the state. Everything else is left as it was. The
 * next `pulumi up` of the program rewritten for the plugin (same names, same inputs) then shows
 * no change: the plugin's diff sees the state the dynamic create wrote.
 */

/** The resources the package declares, under the dynamic provider's module name "qemu". */
const DYNAMIC_TYPE = /^pulumi-nodejs:dynamic\/qemu:(DiskImage|RunScript|VirtualMachine|Network|GuestCommand)$/;
const PROVIDER_TYPE = "pulumi:providers:qemu";

export interface StateResource {
    urn: string;
    type: string;
    id?: string;
    custom?: boolean;
    parent?: string;
    provider?: string;
    inputs?: Record<string, unknown>;
    outputs?: Record<string, unknown>;
    dependencies?: string[];
    propertyDependencies?: Record<string, string[]>;
    deletedWith?: string;
    [key: string]: unknown;
}

export interface MigrationResult {
    resources: StateResource[];
    /** URN before → after, for each resource moved to the plugin. */
    moved: Map<string, string>;
}

/** `urn:pulumi:STACK::PROJECT::QUALIFIED-TYPE::NAME` with the plugin's tokens in the qualified type. */
function migrateUrn(urn: string): string {
    const parts = urn.split("::");
    if (parts.length < 4) return urn;
    parts[2] = parts[2]
        .split("$")
        .map((t) => t.replace(DYNAMIC_TYPE, "qemu:index:$1"))
        .join("$");
    return parts.join("::");
}

/** Without the serialized provider, and without the customTimeouts the SDK's classes hand their shims (the engine keeps a plugin resource's own). */
function withoutDynamicProvider(props: Record<string, unknown> | undefined): Record<string, unknown> | undefined {
    if (!props) return props;
    const { __provider: _dropped, __timeouts: _timeouts, ...rest } = props;
    return rest;
}

/**
 * The resources of a deployment (`deployment.resources` of `pulumi stack export`), with ours moved
 * to the plugin's provider of `version` (the default provider the engine will look for,
 * `default_<version with underscores>`). `newProviderId` names it; the engine keeps whatever id a
 * provider has.
 */
export function migrateResources(
    resources: readonly StateResource[],
    version: string,
    newProviderId: string,
): MigrationResult {
    const moved = new Map<string, string>();
    for (const r of resources) if (DYNAMIC_TYPE.test(r.type)) moved.set(r.urn, migrateUrn(r.urn));
    // Children of our resources have our type in their URN's parent chain: rename them too.
    for (const r of resources)
        if (!moved.has(r.urn) && migrateUrn(r.urn) !== r.urn) moved.set(r.urn, migrateUrn(r.urn));
    if (moved.size === 0) return { resources: [...resources], moved };
    const rename = (urn: string | undefined) => (urn === undefined ? undefined : (moved.get(urn) ?? urn));

    const first = resources.find((r) => DYNAMIC_TYPE.test(r.type))!;
    const [prefix, project] = first.urn.split("::");
    const providerUrn = `${prefix}::${project}::${PROVIDER_TYPE}::default_${version.replace(/[.+-]/g, "_")}`;
    const existingProvider = resources.find((r) => r.urn === providerUrn);
    const providerRef = `${providerUrn}::${existingProvider?.id ?? newProviderId}`;

    const out: StateResource[] = [];
    if (!existingProvider) {
        out.push({
            urn: providerUrn,
            custom: true,
            id: newProviderId,
            type: PROVIDER_TYPE,
            inputs: { version },
            outputs: { version },
        });
    }
    for (const r of resources) {
        const ours = DYNAMIC_TYPE.test(r.type);
        const next: StateResource = { ...r, urn: rename(r.urn)! };
        if (ours) {
            next.type = r.type.replace(DYNAMIC_TYPE, "qemu:index:$1");
            next.inputs = withoutDynamicProvider(r.inputs);
            next.outputs = withoutDynamicProvider(r.outputs);
            next.provider = providerRef;
        }
        if (r.parent !== undefined) next.parent = rename(r.parent);
        if (r.deletedWith !== undefined) next.deletedWith = rename(r.deletedWith);
        if (r.dependencies) next.dependencies = r.dependencies.map((d) => rename(d)!);
        if (r.propertyDependencies) {
            next.propertyDependencies = Object.fromEntries(
                Object.entries(r.propertyDependencies).map(([k, ds]) => [k, ds.map((d) => rename(d)!)]),
            );
        }
        if (ours) {
            const { __provider: _p, ...deps } = next.propertyDependencies ?? {};
            if (next.propertyDependencies) next.propertyDependencies = deps;
        }
        out.push(next);
    }
    return { resources: out, moved };
}

/** A whole `pulumi stack export` document (version 3), migrated; refuses anything else. */
export function migrateExport(
    doc: unknown,
    version: string,
    newProviderId: string,
): { doc: unknown; moved: Map<string, string> } {
    const d = doc as { version?: number; deployment?: { resources?: StateResource[]; pending_operations?: unknown[] } };
    if (!d || typeof d !== "object" || d.version !== 3 || !d.deployment) {
        throw new Error(
            "not a `pulumi stack export` document of version 3 (expected { version: 3, deployment: { resources } })",
        );
    }
    if (d.deployment.pending_operations?.length) {
        throw new Error(
            "the stack has pending operations (an interrupted update): run `pulumi refresh` first, then export again",
        );
    }
    const { resources, moved } = migrateResources(d.deployment.resources ?? [], version, newProviderId);
    return { doc: { ...d, deployment: { ...d.deployment, resources } }, moved };
}

/** `pulumi-qemu-migrate-state EXPORT.json > MIGRATED.json`; what moved goes to stderr. */
export function main(argv: string[]): number {
    const fs = require("node:fs") as typeof import("node:fs");
    const crypto = require("node:crypto") as typeof import("node:crypto");
    const path = require("node:path") as typeof import("node:path");
    const file = argv[0];
    if (!file || argv.length > 1) {
        process.stderr.write(
            "usage: pulumi-qemu-migrate-state EXPORT.json > MIGRATED.json   (EXPORT.json from `pulumi stack export --file`)\n",
        );
        return 2;
    }
    const version = JSON.parse(fs.readFileSync(path.join(__dirname, "..", "..", "..", "package.json"), "utf8"))
        .version as string;
    try {
        const { doc, moved } = migrateExport(JSON.parse(fs.readFileSync(file, "utf8")), version, crypto.randomUUID());
        process.stdout.write(JSON.stringify(doc, null, 4) + "\n");
        for (const [from, to] of moved) process.stderr.write(`${from}\n  -> ${to}\n`);
        process.stderr.write(
            `${moved.size} resource(s) moved to the qemu provider plugin ${version}; import with \`pulumi stack import --file\`.\n`,
        );
        return 0;
    } catch (err) {
        process.stderr.write(
            `pulumi-qemu-migrate-state: ${file}: ${err instanceof Error ? err.message : String(err)}\n`,
        );
        return 1;
    }
}

if (require.main === module) process.exitCode = main(process.argv.slice(2));
