import { z } from "zod";
import { absolutePath, fieldName, InputError, quoteValue } from "./validation";

/**
 * Where a resource lives. No host means this machine, exactly as before placement existed; an
 * `ssh://[user@]host[:port]` URL means another machine reached through OpenSSH. The URL is the
 * placement identity (kept in state, compared by diff); the key and known-hosts files only say how
 * to get there, so changing them moves nothing.
 */
export interface HostSpec {
    /** Normalised: `ssh://user@host:port` (user left out when not given; port always written). */
    url: string;
    user?: string;
    hostname: string;
    port: number;
    identityFile?: string;
    knownHosts?: string;
}

/** What a user may write: the URL alone, or the URL with the files ssh should use. */
export type HostInput = string | { url: string; identityFile?: string; knownHosts?: string };

const USER = /^[A-Za-z_][A-Za-z0-9_.-]{0,31}$/;
// A DNS name or IPv4 address; IPv6 goes in brackets. Nothing ssh would read as an option or a command.
const HOSTNAME =
    /^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/;
const IPV6 = /^[0-9A-Fa-f:.]{2,45}$/;

const EXAMPLE = `write it as "ssh://user@host:port", e.g. "ssh://lab@lab-2.example.com:22"`;

function urlProblem(raw: string): string | undefined {
    if (raw === "") return `must not be empty; leave host out to use this machine, or ${EXAMPLE}`;
    const m = /^ssh:\/\/(?:([^@/]*)@)?(\[[^\]]*\]|[^:/?#@]*)(?::([^/?#]*))?(.*)$/.exec(raw);
    if (!m) return `must be an ssh:// URL; ${EXAMPLE}`;
    const [, user, host, port, rest] = m;
    if (rest !== "" && rest !== "/")
        return `must not have a path, query or fragment (found ${quoteValue(rest)}); ${EXAMPLE}`;
    if (user !== undefined && user.includes(":"))
        return "must not hold a password: pulumi-qemu never stores one; use a key (identityFile) or your ssh agent";
    if (user !== undefined && !USER.test(user))
        return `has an invalid user name ${quoteValue(user)}: letters, digits, "_", ".", "-", starting with a letter or "_"`;
    const bare = host.startsWith("[") ? host.slice(1, -1) : host;
    if (host.startsWith("[") ? !IPV6.test(bare) || !bare.includes(":") : !HOSTNAME.test(host)) {
        return `has an invalid host name ${quoteValue(host)}: a DNS name, an IPv4 address, or an IPv6 address in brackets`;
    }
    if (port !== undefined && !(/^\d{1,5}$/.test(port) && Number(port) >= 1 && Number(port) <= 65535))
        return `has an invalid port ${quoteValue(port)}: 1 to 65535`;
    return undefined;
}

const hostUrl = z.string({ error: `host must be a string; ${EXAMPLE}` }).superRefine((s, ctx) => {
    const problem = urlProblem(s);
    if (problem) ctx.addIssue({ code: "custom", message: problem });
});

/**
 * A key or known_hosts file as ssh's options take it: ssh splits UserKnownHostsFile on
 * whitespace and expands %-tokens and ${VAR} in both, so such characters would name another file.
 */
export function sshFilePath(what: string) {
    return absolutePath(what).refine((s) => !/[\s%$"'\\]/.test(s), {
        error: `${what} must not contain whitespace, %, $, quotes or backslashes (ssh would read them as separators or tokens and open another file); use a path without them, e.g. a symbolic link`,
    });
}

const hostObject = z
    .object({
        url: hostUrl.meta({
            description: '"ssh://user@host:port" (port 22 when left out). No password: use a key or your ssh agent.',
        }),
        identityFile: sshFilePath("identityFile")
            .optional()
            .meta({ description: "Absolute path of the private key; default your ssh agent and ~/.ssh/config." }),
        knownHosts: sshFilePath("knownHosts").optional().meta({
            description: "Absolute path of a known_hosts file with the host's key; default ~/.ssh/known_hosts.",
        }),
    })
    .strict()
    .meta({ typeName: "FarHost", description: "A far host's ssh:// URL with the key files ssh should use." });

const hostSchema = z.union([hostUrl, hostObject], {
    error: `host must be an ssh:// URL string or { url, identityFile?, knownHosts? }; ${EXAMPLE}`,
});

/** The `host` input every resource takes in the SDK, as its generated types and the docs show it. */
export const hostInput = hostSchema.optional().meta({
    description:
        "Where this resource lives: a far host's \"ssh://user@host:port\" (or `{ url, identityFile, knownHosts }`), reached with OpenSSH, host keys checked strictly; its lifecycle runs there with that host's node, qemu-img and QEMU. Default: this machine. Another host replaces the resource.",
    tsType: "pulumi.Input<HostArgs>",
});

/** Parses a `host` input (undefined means this machine); throws an InputError naming `field`. */
export function parseHost(value: unknown, field = "host"): HostSpec | undefined {
    if (value === undefined || value === null) return undefined;
    // Problems without the value: a URL may carry a password, which must not reach an error.
    const result = hostSchema.safeParse(value);
    if (!result.success)
        throw new InputError(
            result.error.issues.map((i) => ({ property: fieldName(field, i.path), reason: i.message })),
        );
    const parsed = result.data;
    const given = typeof parsed === "string" ? { url: parsed } : parsed;
    const m = /^ssh:\/\/(?:([^@/]*)@)?(\[[^\]]*\]|[^:/?#@]*)(?::(\d+))?\/?$/.exec(given.url)!;
    const [, user, host, port] = m;
    const hostname = host.toLowerCase();
    const portNumber = port === undefined ? 22 : Number(port);
    return {
        url: `ssh://${user ? `${user}@` : ""}${hostname}:${portNumber}`,
        ...(user ? { user } : {}),
        hostname: hostname.startsWith("[") ? hostname.slice(1, -1) : hostname,
        port: portNumber,
        ...(given.identityFile ? { identityFile: given.identityFile } : {}),
        ...(given.knownHosts ? { knownHosts: given.knownHosts } : {}),
    };
}

/** The placement a state records: its normalised URL, or undefined for this machine. */
export function placementOf(value: unknown): string | undefined {
    if (value === undefined || value === null) return undefined;
    if (typeof value === "string") return parseHost(value)?.url;
    if (typeof value === "object" && typeof (value as { url?: unknown }).url === "string") return parseHost(value)?.url;
    return undefined;
}

/**
 * `spec` with the key files a state's `hostAccess` recorded, where the spec names none of its
 * own (a spec parsed from a bare URL): how a reader of state reaches the host.
 */
export function withAccess(spec: HostSpec, access: unknown): HostSpec {
    if (spec.identityFile || spec.knownHosts || !access || typeof access !== "object") return spec;
    const a = access as { identityFile?: unknown; knownHosts?: unknown };
    return {
        ...spec,
        ...(typeof a.identityFile === "string" ? { identityFile: a.identityFile } : {}),
        ...(typeof a.knownHosts === "string" ? { knownHosts: a.knownHosts } : {}),
    };
}

/** A key that names one connection: same URL and same files share one. */
export function connectionKey(spec: HostSpec): string {
    return JSON.stringify([spec.url, spec.identityFile ?? null, spec.knownHosts ?? null]);
}
