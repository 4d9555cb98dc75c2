import type * as pulumi from "@pulumi/pulumi";
import { parseHost, placementOf, withAccess, type HostInput, type HostSpec } from "../core/hostSpec";
import { DYNAMIC_PROVIDER_KEY, InputError, quoteValue } from "../core/validation";
import { warn } from "../host/progress";
import { HostUnreachableError } from "../host/ssh/sshConnection";
import { runnerFor } from "../host/ssh/runnerClient";
import { hasUnknown, UNKNOWN } from "./common";
import { resourceNamed, type ResourceName } from "./registry";
import { isEmptyState } from "./stateGuard";

/**
 * Placement: which machine a resource lives on. Every lifecycle call of a resource placed on a
 * far host (`host: "ssh://…"`) runs there, through the runner (host/ssh/runnerClient.ts), except
 * the parts that need no host at all: validating inputs and comparing argv hashes, which give the
 * same answer anywhere (hashes leave out which host), so a preview of those needs no connection.
 * A resource keeps its placement in state (`host`, the normalised URL); a new placement replaces
 * it. Without a host nothing changes: the lifecycle is called as it always was.
 */

/** The placement inputs every resource takes (none: this machine). */
export interface PlacementInputs {
    host?: HostInput;
}

/** What state keeps of a placement. */
export interface PlacementOutputs {
    /** The host's normalised URL (`ssh://user@host:port`); absent on this machine. */
    host?: string;
    /** The paths of the key files used to reach the host (from the resource's `host` input or the provider's configuration). */
    hostAccess?: { identityFile?: string; knownHosts?: string };
}

export type ResourceKind = ResourceName;

export interface Lifecycle {
    check(olds: any, news: any): Promise<pulumi.dynamic.CheckResult>;
    diff(id: string, olds: any, news: any): Promise<pulumi.dynamic.DiffResult>;
    create(inputs: any, ...rest: any[]): Promise<pulumi.dynamic.CreateResult>;
    read(id: string, props: any): Promise<pulumi.dynamic.ReadResult>;
    update?(id: string, olds: any, news: any, ...rest: any[]): Promise<pulumi.dynamic.UpdateResult>;
    remove(id: string, props: any): Promise<void>;
}

/** The placement keys: `host` as given (input), and the access files kept beside it in state. */
const HOST_KEYS = ["host", "hostAccess"] as const;

/**
 * The host the provider plugin was configured with (provider config `host`), the default
 * placement of every resource it manages; the dynamic path has none, resources say it themselves.
 */
let configuredHost: HostSpec | undefined;
/** The provider's host is computed and not known yet (preview): so is every resource's placement. */
let configuredHostUnknown = false;

export function configureHost(spec: HostSpec | undefined, unknown = false): void {
    configuredHost = spec;
    configuredHostUnknown = unknown;
}

/**
 * Set in a far host's runner: everything it is asked to do happens where it runs. What it
 * receives still names its host (a command's vm outputs say where the VM is), which must not
 * send it on to itself.
 */
let atTheHost = false;

export function servingAsRunner(): void {
    atTheHost = true;
}

/**
 * Inputs that are not there at all (undefined, null: a program that passed nothing, a hand-made
 * call) are inputs with no fields, so every lifecycle answers with the fields it misses instead
 * of a TypeError from deep inside.
 */
function inputsOrEmpty(inputs: any): any {
    return inputs === undefined || inputs === null ? {} : inputs;
}

export function placed<T extends Lifecycle>(kind: ResourceKind, impl: T): T {
    // The dynamic provider's serialized closure (`__provider`) never leaves this machine: the far side has no use for it.
    const remote = (spec: HostSpec, method: string, args: unknown[]) =>
        runnerFor(spec).then((r) => r.call(kind, method, args.map(withoutClosure)));
    const lifecycle: Lifecycle = {
        async check(olds, given) {
            const news = inputsOrEmpty(given);
            const input = hostInput(news);
            if (hasUnknown(input)) return { inputs: news };
            let spec: HostSpec | undefined;
            try {
                spec = hostOf(input);
            } catch (err) {
                if (err instanceof InputError) return { inputs: news, failures: err.problems };
                throw err;
            }
            const elsewhere = vmElsewhere(kind, news, spec);
            if (elsewhere) return { inputs: news, failures: [elsewhere] };
            const rest = withoutHost(news);
            let result: pulumi.dynamic.CheckResult;
            if (spec && resourceNamed(kind)?.checkReadsHost) {
                try {
                    result = await remote(spec, "check", [withoutHost(olds), rest]);
                } catch (err) {
                    if (!(err instanceof HostUnreachableError)) throw err;
                    // Preview goes on from what is known; create checks again on the host.
                    warn(
                        `${err.message}; checked the inputs here only — what depends on the host is checked when it can be reached`,
                    );
                    result = await impl.check(withoutHost(olds), stripHostDependentCheck(rest));
                    result = { ...result, inputs: rest };
                }
            } else {
                result = await impl.check(withoutHost(olds), rest);
            }
            return { ...result, inputs: input === undefined ? result.inputs : { ...result.inputs, host: input } };
        },
        async diff(id, olds, given) {
            const news = inputsOrEmpty(given);
            const input = hostInput(news);
            if (hasUnknown(input)) return { changes: true, replaces: ["host"] };
            const before = placementOf(olds?.host);
            const spec = hostOf(input);
            // Moving to another host is a new resource there; the old one goes after it is made.
            if ((spec?.url ?? undefined) !== before) return { changes: true, replaces: ["host"] };
            if (spec && resourceNamed(kind)?.diffReadsHost)
                return remote(withAccess(spec, olds?.hostAccess), "diff", [id, withoutHost(olds), withoutHost(news)]);
            return impl.diff(id, withoutHost(olds), withoutHost(news));
        },
        async create(given, ...rest) {
            const inputs = inputsOrEmpty(given);
            const spec = hostOf(hostInput(inputs));
            if (!spec) return impl.create(inputs, ...rest);
            const result = await remote(spec, "create", [withoutHost(inputs), ...rest]);
            return { ...result, outs: { ...result.outs, ...placementOutputs(spec) } };
        },
        async read(id, props) {
            // No state: an import, which looks where the provider is configured to.
            const spec = isEmptyState(props) ? configuredHost : stateHost(props);
            if (!spec) return impl.read(id, props);
            const result: pulumi.dynamic.ReadResult = await remote(spec, "read", [id, withoutHost(props)]);
            const keep = placementOutputs(spec);
            const host = props?.host ?? spec.url;
            // Gone (read found nothing): the empty answer goes back as it is, so the engine drops the resource.
            if (!result.id) return result;
            return {
                ...result,
                props: { ...result.props, ...keep },
                ...(result.inputs ? { inputs: { ...result.inputs, host } } : {}),
            };
        },
        async remove(id, props) {
            const spec = stateHost(props);
            if (!spec) return impl.remove(id, props);
            await remote(spec, "remove", [id, withoutHost(props)]);
        },
    };
    if (impl.update) {
        lifecycle.update = async (id, olds, news, ...rest) => {
            const spec = hostOf(hostInput(news));
            if (!spec) return impl.update!(id, olds, news, ...rest);
            const result = await remote(spec, "update", [id, withoutHost(olds), withoutHost(news), ...rest]);
            return { ...result, outs: { ...result.outs, ...placementOutputs(spec) } };
        };
    }
    // Decided per call: a runner says what it is after the resource modules were loaded.
    const each = Object.keys(lifecycle).map((k) => {
        const key = k as keyof Lifecycle;
        return [
            key,
            (...args: unknown[]) => ((atTheHost ? impl[key] : lifecycle[key]) as (...a: unknown[]) => unknown)(...args),
        ];
    });
    return Object.fromEntries(each) as T;
}

/**
 * The `host` a resource asks for: its own input, else the provider's configured host, else —
 * for a GuestCommand given its VM's outputs — the host that VM lives on (a command runs where its VM is).
 */
function hostInput(news: any): unknown {
    const own = news?.host;
    if (own !== undefined && own !== null) return own;
    if (configuredHostUnknown) return UNKNOWN;
    if (configuredHost) return configuredHost.url;
    const vm = news?.vm;
    // A vm.host that is no URL is left for vmElsewhere to name.
    if (vm && typeof vm === "object" && typeof vm.host === "string" && /^ssh:\/\//.test(vm.host)) {
        const access = vm.hostAccess && typeof vm.hostAccess === "object" ? vm.hostAccess : {};
        return { url: vm.host, ...access };
    }
    return undefined;
}

/** A command and its VM must be on one host: the agent channel is a socket there. */
function vmElsewhere(
    kind: ResourceKind,
    news: any,
    spec: HostSpec | undefined,
): { property: string; reason: string } | undefined {
    const vm = news?.vm;
    if (kind !== "GuestCommand" || !vm || typeof vm !== "object" || hasUnknown(vm.host)) return undefined;
    let vmHost: string | undefined;
    try {
        vmHost = placementOf(vm.host);
    } catch {
        return {
            property: "vm",
            reason: `vm.host must be the VirtualMachine's host output (an ssh:// URL), got ${quoteValue(vm.host)}`,
        };
    }
    if (vmHost === spec?.url) return undefined;
    const where = (url: string | undefined) => (url ? `host ${url}` : "this machine");
    return {
        property: "vm",
        reason:
            `the VM runs on ${where(vmHost)} but this GuestCommand is placed on ${where(spec?.url)}; a command reaches its VM through the agent socket on the VM's host, ` +
            (vmHost
                ? `so set the GuestCommand's host to ${JSON.stringify(vmHost)} (or give it the provider of that host)`
                : "so leave the GuestCommand's host out, as the VM's"),
    };
}

/** The input parsed; the configured host's key files go with its URL. */
function hostOf(input: unknown): HostSpec | undefined {
    const spec = parseHost(input);
    if (spec && configuredHost && spec.url === configuredHost.url && typeof input === "string") return configuredHost;
    return spec;
}

/** Where a resource in state lives, with the files to reach it (the provider's config first: it is current). */
function stateHost(props: any): HostSpec | undefined {
    const url = placementOf(props?.host);
    if (!url) return undefined;
    if (configuredHost?.url === url) return configuredHost;
    return withAccess(parseHost(url)!, props?.hostAccess);
}

/** What state keeps of the placement: the URL, and the paths of the key files used. */
function placementOutputs(spec: HostSpec): Record<string, unknown> {
    const access = {
        ...(spec.identityFile ? { identityFile: spec.identityFile } : {}),
        ...(spec.knownHosts ? { knownHosts: spec.knownHosts } : {}),
    };
    // Kept even when the provider's configuration gave them (they are paths, not keys): whatever reads this
    // state without that configuration (a GuestCommand handed the VM's outputs) can still reach the host.
    return { host: spec.url, ...(Object.keys(access).length ? { hostAccess: access } : {}) };
}

function withoutHost<T>(value: T): T {
    if (value === null || typeof value !== "object") return value;
    const copy: Record<string, unknown> = { ...(value as Record<string, unknown>) };
    for (const k of HOST_KEYS) delete copy[k];
    return copy as T;
}

/** A VM's inputs without what only the host can judge (its networks' records), for a check done here. */
function stripHostDependentCheck(news: any): any {
    if (!news?.vm?.networks) return news;
    const { networks: _judgedThere, ...vm } = news.vm;
    return { ...news, vm };
}

function withoutClosure(value: unknown): unknown {
    if (value === null || typeof value !== "object" || Array.isArray(value) || !(DYNAMIC_PROVIDER_KEY in value))
        return value;
    const { [DYNAMIC_PROVIDER_KEY]: _closure, ...rest } = value as Record<string, unknown>;
    return rest;
}
