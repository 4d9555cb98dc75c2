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
 * capture is that string (and whether the resource updates in place).
 */
function lifecycleShim(modulePath: string, updatesInPlace: boolean): pulumi.dynamic.ResourceProvider {
    // Long calls send progress to the engine when run in the dynamic-provider plugin (plugin/engineLog.ts).
    const progressing = (inputs: unknown, work: () => Promise<any>) =>
        require(modulePath.replace(/resources\/[^/]+$/, "plugin/engineLog.js")).inDynamicProvider(
            modulePath.replace(/^.*\/|\.js$/g, ""),
            inputs,
            work,
        );
    // customTimeouts reach a dynamic provider only as an input the SDK adds ("__timeouts", seconds
    // per operation): taken off before the lifecycle sees anything, kept in the state (inputs and
    // outputs, so delete has it), and the call run under it (host/callDeadline.ts).
    const split = (props: any): [any, any] => {
        if (!props || typeof props !== "object" || !("__timeouts" in props)) return [props, undefined];
        const { __timeouts, ...rest } = props;
        return [rest, __timeouts];
    };
    const keep = (props: any, timeouts: any) =>
        timeouts === undefined || !props ? props : { ...props, __timeouts: timeouts };
    const within = (timeouts: any, op: string, work: () => Promise<any>) =>
        require(modulePath.replace(/resources\/[^/]+$/, "host/callDeadline.js")).withCallDeadline(
            timeouts?.[op],
            op,
            work,
        );
    const provider: pulumi.dynamic.ResourceProvider = {
        check: async (olds, news) => {
            const [n, t] = split(news);
            const r = await progressing(n, () => require(modulePath).check(split(olds)[0], n));
            return { ...r, inputs: keep(r.inputs, t) };
        },
        diff: async (id, olds, news) => {
            const n = split(news)[0];
            return progressing(n, () => require(modulePath).diff(id, split(olds)[0], n));
        },
        create: async (inputs) => {
            const [i, t] = split(inputs);
            const r = await progressing(i, () => within(t, "create", () => require(modulePath).create(i)));
            return { ...r, outs: keep(r.outs, t) };
        },
        read: async (id, props) => {
            const [p, t] = split(props);
            const r = await progressing(p, () => require(modulePath).read(id, p));
            return r.id ? { ...r, props: keep(r.props, t) } : r;
        },
        delete: async (id, props) => {
            const [p, t] = split(props);
            return progressing(p, () => within(t, "delete", () => require(modulePath).remove(id, p)));
        },
    };
    if (updatesInPlace) {
        provider.update = async (id, olds, news) => {
            const [n, t] = split(news);
            const r = await progressing(n, () =>
                within(t, "update", () => require(modulePath).update(id, split(olds)[0], n)),
            );
            return { ...r, outs: keep(r.outs, t) };
        };
    }
    return provider;
}

/** The input under which the SDK's classes hand their customTimeouts to the shims above. */
export const TIMEOUTS_KEY = "__timeouts";

/** The shim of each resource, made from the registry (the closures capture only the module path and whether it updates). */
export const PROVIDERS = Object.fromEntries(
    RESOURCES.map((r) => [r.name, lifecycleShim(shimModulePath(r), r.updatesInPlace)]),
) as Record<ResourceName, pulumi.dynamic.ResourceProvider>;

// The names the package has exported since 0.1.
export const diskImageProvider = PROVIDERS.DiskImage;
export const runScriptProvider = PROVIDERS.RunScript;
export const virtualMachineProvider = PROVIDERS.VirtualMachine;
export const networkProvider = PROVIDERS.Network;
export const guestCommandProvider = PROVIDERS.GuestCommand;
