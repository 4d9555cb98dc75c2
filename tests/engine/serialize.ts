import type * as pulumi from "@pulumi/pulumi";

/**
 * The `__provider` text of a dynamic resource, produced by the same call pulumi.dynamic.Resource
 * makes (resource.ts serializeProvider), so a test feeds the plugin exactly what a stack stores.
 */
export async function serializeProvider(provider: pulumi.dynamic.ResourceProvider): Promise<string> {
    const { serializeFunction } =
        require("@pulumi/pulumi/runtime/closure/serializeClosure") as typeof import("@pulumi/pulumi/runtime/closure/serializeClosure");
    const serialized = await serializeFunction(() => provider, { allowSecrets: true });
    return serialized.text;
}
