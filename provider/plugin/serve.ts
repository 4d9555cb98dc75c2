import type * as provider from "@pulumi/pulumi/provider";
import { packageSchema } from "./schema";
import { containsSecrets, makeSecret, protectOutputs, stripSecrets, type Props } from "./secrets";

/** The lifecycle module behind each resource token; the same modules the dynamic shims load. */
const LIFECYCLES: Record<string, string> = {
    "qemu:index:DiskImage": "../resources/diskImage",
    "qemu:index:RunScript": "../resources/runScript",
    "qemu:index:VirtualMachine": "../resources/virtualMachine",
    "qemu:index:GuestCommand": "../resources/guestCommand",
};

/** The resource type in a URN `urn:pulumi:stack::project::[parent$]type::name`. */
export function typeOfUrn(urn: string): string {
    const parts = urn.split("::");
    if (parts.length < 4) throw new Error(`malformed URN ${urn}`);
    const qualified = parts[2];
    return qualified.slice(qualified.lastIndexOf("$") + 1);
}

function lifecycle(urn: string) {
    const token = typeOfUrn(urn);
    const modulePath = LIFECYCLES[token];
    if (!modulePath) throw new Error(`unknown resource type ${token}; this provider serves ${Object.keys(LIFECYCLES).join(", ")}`);
    return require(modulePath);
}

/**
 * The custom-resource provider: each call goes to the lifecycle of the resource's type. This
 * plugin tells the engine it accepts secrets, so values arrive wrapped; the lifecycles see plain
 * values, and whatever they return that holds a secret goes back marked secret.
 */
export function qemuProvider(version: string): provider.Provider {
    return {
        version,
        schema: packageSchema(version),
        check: async (urn, olds, news) => {
            const result = await lifecycle(urn).check(stripSecrets(olds), stripSecrets(news));
            return { ...result, inputs: protectOutputs(result.inputs ?? {}, news) };
        },
        diff: (id, urn, olds, news) => lifecycle(urn).diff(id, stripSecrets(olds), stripSecrets(news)),
        create: async (urn, inputs) => {
            const result = await lifecycle(urn).create(stripSecrets(inputs));
            return { ...result, outs: protectCommandOutput(urn, protectOutputs(result.outs ?? {}, inputs), inputs) };
        },
        read: async (id, urn, props) => {
            const result = await lifecycle(urn).read(id, stripSecrets(props));
            return { ...result, props: protectCommandOutput(urn, protectOutputs(result.props ?? {}, (props ?? {}) as Props), (props ?? {}) as Props) };
        },
        update: async (id, urn, olds, news) => {
            const impl = lifecycle(urn);
            if (!impl.update) throw new Error(`${typeOfUrn(urn)} has no in-place update; its diff always replaces`);
            const result = await impl.update(id, stripSecrets(olds), stripSecrets(news));
            return { ...result, outs: protectCommandOutput(urn, protectOutputs(result.outs ?? {}, news), news) };
        },
        delete: (id, urn, props) => lifecycle(urn).remove(id, stripSecrets(props)),
    };
}

/**
 * A GuestCommand whose commands, environment or stdin hold a secret may print it in any form
 * (encoded, in part), which text matching cannot catch: its stdout and stderr are secret then.
 */
function protectCommandOutput(urn: string, outs: Props, inputs: Props): Props {
    if (typeOfUrn(urn) !== "qemu:index:GuestCommand") return outs;
    const { vm: _vm, ...commandInputs } = inputs;
    if (!containsSecrets(commandInputs)) return outs;
    const wrap = (v: unknown) => (v === undefined || containsSecrets(v) ? v : makeSecret(v));
    return { ...outs, stdout: wrap(outs.stdout), stderr: wrap(outs.stderr) };
}

/** Serves the plugin over gRPC; the engine address is the first argument, as Pulumi passes it. */
export function serve(args: string[]): Promise<void> {
    const { main } = require("@pulumi/pulumi/provider") as typeof provider;
    return main(qemuProvider(packageVersion()), args);
}

/** The version in our package.json, found from wherever this file was compiled to. */
function packageVersion(): string {
    const { existsSync, readFileSync } = require("node:fs") as typeof import("node:fs");
    const path = require("node:path") as typeof import("node:path");
    for (let dir = __dirname; dir !== path.dirname(dir); dir = path.dirname(dir)) {
        const file = path.join(dir, "package.json");
        if (existsSync(file)) {
            const pkg = JSON.parse(readFileSync(file, "utf8"));
            if (pkg.name === "pulumi-qemu") return pkg.version;
        }
    }
    throw new Error(`cannot find pulumi-qemu's package.json above ${__dirname}`);
}
