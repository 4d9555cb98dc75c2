import type * as pulumi from "@pulumi/pulumi";
import { RESOURCES, shimModulePath, type ResourceName } from "../provider/resources/registry";

/**
 * The dynamic providers Pulumi serializes into the stack's state and re-creates in its
 * dynamic-provider plugin. Each method is a thin shim that loads the real lifecycle from the
 * installed package when it is called: a serialized closure that captured zod schemas, execa
 * or module internals would fail to serialize or break in the plugin (pulumi/pulumi#5294,
 * #13960), and the state would carry a copy of the implementation instead of a reference.
 *
 * The module path names the package, not a file on this machine, so the same state works on
 * any machine where the program's node_modules has pulumi-qemu. The only value the closures
 * capture is that string.
 */
function lifecycleShim(modulePath: string, updatesInPlace: boolean): pulumi.dynamic.ResourceProvider {
    // Long calls send progress to the engine when run in the dynamic-provider plugin (plugin/engineLog.ts).
    const progressing = (inputs: unknown, work: () => Promise<any>) =>
        require(modulePath.replace(/resources\/[^/]+$/, "plugin/engineLog.js")).inDynamicProvider(modulePath.replace(/^.*\/|\.js$/g, ""), inputs, work);
    const provider: pulumi.dynamic.ResourceProvider = {
        check: async (olds, news) => progressing(news, () => require(modulePath).check(olds, news)),
        diff: async (id, olds, news) => progressing(news, () => require(modulePath).diff(id, olds, news)),
        create: async (inputs) => progressing(inputs, () => require(modulePath).create(inputs)),
        read: async (id, props) => progressing(props, () => require(modulePath).read(id, props)),
        delete: async (id, props) => progressing(props, () => require(modulePath).remove(id, props)),
    };
    if (updatesInPlace) provider.update = async (id, olds, news) => progressing(news, () => require(modulePath).update(id, olds, news));
    return provider;
}

/** The shim of each resource, made from the registry (the closures capture only the module path and whether it updates). */
export const PROVIDERS = Object.fromEntries(RESOURCES.map((r) => [r.name, lifecycleShim(shimModulePath(r), r.updatesInPlace)])) as Record<
    ResourceName,
    pulumi.dynamic.ResourceProvider
>;

// The names the package has exported since 0.1.
export const diskImageProvider = PROVIDERS.DiskImage;
export const runScriptProvider = PROVIDERS.RunScript;
export const virtualMachineProvider = PROVIDERS.VirtualMachine;
export const networkProvider = PROVIDERS.Network;
export const guestCommandProvider = PROVIDERS.GuestCommand;
