import type * as provider from "@pulumi/pulumi/provider";
import { withProgress } from "../host/progress";
import { RESOURCES, resourceOfToken, tokenOf } from "../resources/registry";
import { commandLineSecretProblems } from "./commandLineSecrets";
import { resourceSink } from "./engineLog";
import { servingConfig } from "./providerConfig";
import { honourRequestTimeouts } from "./requestTimeouts";
import { ownPackageJson, packageSchema } from "./schema";
import { containsSecrets, makeSecret, protectOutputs, secretTexts, stripSecrets, type Props } from "./secrets";

/** The resource type in a URN `urn:pulumi:stack::project::[parent$]type::name`. */
export function typeOfUrn(urn: string): string {
    const parts = urn.split("::");
    if (parts.length < 4) throw new Error(`malformed URN ${urn}`);
    const qualified = parts[2];
    return qualified.slice(qualified.lastIndexOf("$") + 1);
}

function lifecycle(urn: string) {
    const token = typeOfUrn(urn);
    const resource = resourceOfToken(token);
    if (!resource)
        throw new Error(
            `unknown resource type ${token}; this provider serves ${RESOURCES.map((r) => tokenOf(r.name)).join(", ")}`,
        );
    // Loaded on first use, the same modules the dynamic shims load: the plugin starts without all five.
    return require(`../resources/${resource.module}`);
}

/**
 * The custom-resource provider: each call goes to the lifecycle of the resource's type. This
 * plugin tells the engine it accepts secrets, so values arrive wrapped; the lifecycles see plain
 * values, and whatever they return that holds a secret goes back marked secret.
 */
export function qemuProvider(version: string, engineAddress?: string): provider.Provider {
    // Long calls report progress to the engine against the resource's URN (see host/progress.ts),
    // with secret input values hidden as in errors (a path or serialPattern may be secret).
    const reporting = <T>(urn: string, sources: unknown[], work: () => Promise<T>): Promise<T> =>
        engineAddress
            ? withProgress(
                  resourceSink(engineAddress, urn, (m) => redact(m, sources)),
                  work,
              )
            : work();
    return {
        version,
        schema: packageSchema(version),
        // Check and diff report too: a diff may hash a large file, a placed check may warn that its host is unreachable.
        check: (urn, olds, news) =>
            hidingSecrets([olds, news], () =>
                reporting(urn, [olds, news], async () => {
                    const result = await lifecycle(urn).check(stripSecrets(olds), stripSecrets(news));
                    // Only here are secrets marked: one that would land on QEMU's command line is refused (commandLineSecrets.ts).
                    const onCommandLine = commandLineSecretProblems(typeOfUrn(urn), news);
                    const found =
                        result.failures || onCommandLine.length
                            ? [...(result.failures ?? []), ...onCommandLine]
                            : undefined;
                    const failures = found?.map((f: { property: string; reason: string }) => ({
                        ...f,
                        reason: redact(f.reason, [olds, news]),
                    }));
                    return {
                        ...result,
                        ...(failures ? { failures } : {}),
                        inputs: protectOutputs(result.inputs ?? {}, news),
                    };
                }),
            ),
        diff: (id, urn, olds, news) =>
            hidingSecrets([olds, news], () =>
                reporting(urn, [olds, news], () => lifecycle(urn).diff(id, stripSecrets(olds), stripSecrets(news))),
            ),
        create: (urn, inputs) =>
            hidingSecrets([inputs], () =>
                reporting(urn, [inputs], async () => {
                    // Whether the inputs held secrets: only this plugin can tell (a VM keeps its inputs for import only without).
                    const result = await lifecycle(urn).create(stripSecrets(inputs), {
                        secretInputs: containsSecrets(inputs),
                    });
                    return {
                        ...result,
                        outs: protectCommandOutput(urn, protectOutputs(result.outs ?? {}, inputs), inputs),
                    };
                }),
            ),
        read: (id, urn, props) =>
            hidingSecrets([props], () =>
                reporting(urn, [props], async () => {
                    const result = await lifecycle(urn).read(id, stripSecrets(props));
                    return {
                        ...result,
                        props: protectCommandOutput(
                            urn,
                            protectOutputs(result.props ?? {}, (props ?? {}) as Props),
                            (props ?? {}) as Props,
                        ),
                    };
                }),
            ),
        update: (id, urn, olds, news) =>
            hidingSecrets([olds, news], () =>
                reporting(urn, [olds, news], async () => {
                    const impl = lifecycle(urn);
                    if (!impl.update)
                        throw new Error(`${typeOfUrn(urn)} has no in-place update; its diff always replaces`);
                    const result = await impl.update(id, stripSecrets(olds), stripSecrets(news), {
                        secretInputs: containsSecrets(news),
                    });
                    return {
                        ...result,
                        outs: protectCommandOutput(urn, protectOutputs(result.outs ?? {}, news), news),
                    };
                }),
            ),
        delete: (id, urn, props) =>
            hidingSecrets([props], () => reporting(urn, [props], () => lifecycle(urn).remove(id, stripSecrets(props)))),
    };
}

/** `text` with every secret value found in `sources` replaced by "[secret]". */
function redact(text: string, sources: unknown[]): string {
    const texts = new Set<string>();
    for (const s of sources) for (const t of secretTexts(s)) texts.add(t);
    // Longest first, so a secret containing another is hidden whole; JSON-escaped forms too (errors quote values).
    let out = text;
    for (const t of [...texts].sort((a, b) => b.length - a.length)) {
        for (const form of new Set([t, JSON.stringify(t).slice(1, -1)])) out = out.split(form).join("[secret]");
    }
    return out;
}

/** Runs a call; an error it throws reaches the engine (and the user's terminal) with secret values hidden. */
async function hidingSecrets<T>(sources: unknown[], call: () => Promise<T>): Promise<T> {
    try {
        return await call();
    } catch (err) {
        const message = err instanceof Error ? err.message : String(err);
        const hidden = redact(message, sources);
        if (hidden === message) throw err;
        const safe = new Error(hidden);
        safe.name = err instanceof Error ? err.name : "Error";
        throw safe;
    }
}

/**
 * A GuestCommand whose commands, environment or stdin hold a secret may print it in any form
 * (encoded, in part), which text matching cannot catch: its stdout and stderr are secret then.
 */
function protectCommandOutput(urn: string, outs: Props, inputs: Props): Props {
    if (typeOfUrn(urn) !== tokenOf("GuestCommand")) return outs;
    const { vm: _vm, ...commandInputs } = inputs;
    if (!containsSecrets(commandInputs)) return outs;
    const wrap = (v: unknown) => (v === undefined || containsSecrets(v) ? v : makeSecret(v));
    return { ...outs, stdout: wrap(outs.stdout), stderr: wrap(outs.stderr) };
}

/** Serves the plugin over gRPC; the engine address is the first argument, as Pulumi passes it. */
export function serve(args: string[]): Promise<void> {
    const { main } = require("@pulumi/pulumi/provider") as typeof provider;
    const { parseArgs } = require("@pulumi/pulumi/provider/internals");
    servingConfig();
    honourRequestTimeouts();
    return main(qemuProvider(packageVersion(), parseArgs(args)?.engineAddress), args);
}

/** The version in our package.json. */
function packageVersion(): string {
    return ownPackageJson().version;
}
