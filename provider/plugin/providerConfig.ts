import { z } from "zod";
import { parseHost, sshFilePath, type HostSpec } from "../core/hostSpec";
import { InputError, parseOrThrow, unknownKeyProblems, type FieldProblem } from "../core/validation";
import { hasUnknown, UNKNOWN } from "../resources/common";
import { configureHost } from "../resources/placement";
import { stripSecrets } from "./secrets";

/**
 * Provider configuration: `host` (with `identityFile`, `knownHosts`) places every resource of a
 * provider instance on that host, the idiomatic Pulumi way (`new qemu.Provider("lab-2", { host })`
 * and `{ provider }` on resources). The engine starts one plugin per provider instance and calls
 * CheckConfig, DiffConfig and Configure on it; @pulumi/pulumi's provider server (3.x) leaves those
 * unimplemented or ignores the configuration, so `servingConfig` puts ours in front of it.
 */

/** Keys the engine itself may put among a provider's inputs. */
const ENGINE_KEYS = ["version", "pluginDownloadURL"];
export const PROVIDER_CONFIG_KEYS = ["host", "identityFile", "knownHosts"] as const;

const configSchema = z.object({
    host: z
        .string({ error: 'host must be an ssh:// URL string, e.g. "ssh://lab@lab-2.example.com:22"' })
        .optional()
        .meta({
            description:
                'Where this provider instance\'s resources live: "ssh://user@host:port" of a far host reached with OpenSSH (host keys checked strictly; its `node` runs the lifecycles there). Default: this machine. Changing it replaces every resource of the provider.',
        }),
    identityFile: sshFilePath("identityFile").optional().meta({
        description: "Absolute path of the private key ssh uses for host; default: your ssh agent and ~/.ssh/config.",
    }),
    knownHosts: sshFilePath("knownHosts").optional().meta({
        description:
            "Absolute path of a known_hosts file holding host's key; default ~/.ssh/known_hosts. An unknown key is refused, never trusted on first use.",
    }),
});

/** The provider's configuration as the package schema and the reference docs show it. */
export const providerConfigSchema = configSchema;

export interface ProviderConfig {
    host?: HostSpec;
    /** The host is computed and not known yet (preview). */
    hostUnknown?: true;
}

/**
 * Validates a provider's configuration; throws an InputError naming each bad key. A value not
 * known yet (a host computed from another resource, at preview) is left unjudged: `hostUnknown`.
 */
export function parseProviderConfig(raw: Record<string, unknown>): ProviderConfig {
    const given = Object.entries(stripSecrets(raw)).filter(([k]) => !ENGINE_KEYS.includes(k) && !k.startsWith("__"));
    const unknown = given.filter(([, v]) => hasUnknown(v)).map(([k]) => k);
    const values = Object.fromEntries(given.filter(([k]) => !unknown.includes(k)));
    if (unknown.includes("host")) {
        const problems = unknownKeyProblems(values, PROVIDER_CONFIG_KEYS);
        if (problems.length) throw new InputError(problems);
        return { hostUnknown: true };
    }
    const problems: FieldProblem[] = unknownKeyProblems(values, PROVIDER_CONFIG_KEYS);
    if (problems.length) throw new InputError(problems);
    const c = parseOrThrow(configSchema, values, "");
    if (!c.host && (c.identityFile || c.knownHosts)) {
        throw new InputError([
            {
                property: c.identityFile ? "identityFile" : "knownHosts",
                reason: "only means something with host set; set host to the ssh:// URL of the far host, or leave this out",
            },
        ]);
    }
    if (!c.host) return {};
    const host = parseHost(c.host, "host")!;
    return {
        host: {
            ...host,
            ...(c.identityFile ? { identityFile: c.identityFile } : {}),
            ...(c.knownHosts ? { knownHosts: c.knownHosts } : {}),
        },
    };
}

/** The engine's configuration variables (`qemu:config:host`) as the keys of the provider's inputs. */
function fromVariables(variables: Map<string, string> | undefined): Record<string, unknown> {
    const out: Record<string, unknown> = {};
    for (const [k, v] of variables?.entries() ?? []) {
        const key = k.replace(/^qemu:(config:)?/, "");
        out[key] = v;
    }
    return out;
}

/**
 * Wraps the gRPC service implementation the SDK registers, so CheckConfig, DiffConfig and
 * Configure judge and apply our configuration before (or instead of) the SDK's own handling.
 */
export function servingConfig(): void {
    const pulumiDir = require("node:path").dirname(require.resolve("@pulumi/pulumi/package.json"));
    const grpc = require(require.resolve("@grpc/grpc-js", { paths: [pulumiDir] }));
    const provproto = require("@pulumi/pulumi/proto/provider_pb");
    const structproto = require("google-protobuf/google/protobuf/struct_pb");
    const original = grpc.Server.prototype.addService;
    if (original.__pulumiQemu) return;
    const wrapped = function (this: unknown, service: unknown, impl: Record<string, (...a: any[]) => void>) {
        const configure = impl.configure?.bind(impl);
        const failure = (err: unknown) => ({
            code: grpc.status.INVALID_ARGUMENT,
            details: `qemu provider configuration: ${err instanceof Error ? err.message : String(err)}`,
        });
        impl.configure = (call: any, callback: (err: unknown, resp?: unknown) => void) => {
            const req = call.request;
            const args = req.hasArgs?.() ? req.getArgs().toJavaScript() : undefined;
            try {
                const config = parseProviderConfig(
                    args && Object.keys(args).length ? args : fromVariables(req.getVariablesMap?.()),
                );
                configureHost(config.host, config.hostUnknown === true);
            } catch (err) {
                return callback(failure(err));
            }
            if (configure) configure(call, callback);
            else callback(undefined, new provproto.ConfigureResponse().setAcceptsecrets(true).setAcceptresources(true));
        };
        impl.checkConfig = (call: any, callback: (err: unknown, resp?: unknown) => void) => {
            const news = call.request.getNews()?.toJavaScript() ?? {};
            const resp = new provproto.CheckResponse().setInputs(structproto.Struct.fromJavaScript(news));
            try {
                parseProviderConfig(news);
            } catch (err) {
                if (!(err instanceof InputError)) return callback(failure(err));
                resp.setFailuresList(
                    err.problems.map((p) => new provproto.CheckFailure().setProperty(p.property).setReason(p.reason)),
                );
            }
            callback(undefined, resp);
        };
        impl.diffConfig = (call: any, callback: (err: unknown, resp?: unknown) => void) => {
            const olds = call.request.getOlds()?.toJavaScript() ?? {};
            const news = call.request.getNews()?.toJavaScript() ?? {};
            const resp = new provproto.DiffResponse();
            // Only the host is compared: a key this version does not know must not move every resource.
            const placeOf = (c: Record<string, unknown>) => {
                const host = stripSecrets(c.host);
                if (hasUnknown(host)) return UNKNOWN;
                try {
                    return parseHost(host)?.url;
                } catch {
                    return String(host);
                }
            };
            const [before, after] = [placeOf(olds), placeOf(news)];
            // A host not known yet may be another: the engine shows the provider (and what it manages) as replaced.
            const moved = before !== after || after === UNKNOWN;
            const changedFiles = ["identityFile", "knownHosts"].filter(
                (k) => JSON.stringify(stripSecrets(olds[k])) !== JSON.stringify(stripSecrets(news[k])),
            );
            resp.setChanges(
                moved || changedFiles.length
                    ? provproto.DiffResponse.DiffChanges.DIFF_SOME
                    : provproto.DiffResponse.DiffChanges.DIFF_NONE,
            );
            resp.setReplacesList(moved ? ["host"] : []);
            resp.setDiffsList(moved ? ["host", ...changedFiles] : changedFiles);
            callback(undefined, resp);
        };
        return original.call(this, service, impl);
    };
    (wrapped as any).__pulumiQemu = true;
    grpc.Server.prototype.addService = wrapped;
}
