import * as pulumi from "@pulumi/pulumi";

/**
 * Placement for the npm package's resources as a provider object gives it to a plugin's: a
 * `Host` names a machine once, and every resource below it — given it as `parent`, or inside a
 * component whose parent it is, at any depth — lives there, as resources below a component with
 * `providers` use those providers. Dynamic resources cannot take a `provider` of their own (the
 * dynamic-provider plugin is theirs), so the Host is a component and placement follows the parent
 * chain: a resource's own `host` input wins, then the nearest Host above it, then this machine.
 */

/** Where a Host's resources live. */
export interface HostResourceArgs {
    /** "ssh://user@host:port" (port 22 when left out). No password: use a key or your ssh agent. */
    url: string;
    /** Absolute path of the private key; default your ssh agent and ~/.ssh/config. */
    identityFile?: string;
    /** Absolute path of a known_hosts file with the host's key; default ~/.ssh/known_hosts. */
    knownHosts?: string;
}

/** Marks a Host across copies of this package (instanceof would not). */
const HOST_BRAND = Symbol.for("pulumi-qemu.Host");

/** A machine the resources below it live on, reached over SSH (docs/remote-hosts.md). */
export class Host extends pulumi.ComponentResource {
    /** The URL as given. */
    public readonly url: string;
    /** What the resources below it get as their `host` input. */
    public readonly placement: HostResourceArgs;

    constructor(name: string, args: HostResourceArgs, opts?: pulumi.ComponentResourceOptions) {
        super("qemu:index:Host", name, {}, opts);
        if (!args || typeof args.url !== "string" || !args.url) {
            throw new Error(`Host ${JSON.stringify(name)}: url must be an ssh:// URL such as "ssh://user@host:22"`);
        }
        this.url = args.url;
        this.placement = {
            url: args.url,
            ...(args.identityFile ? { identityFile: args.identityFile } : {}),
            ...(args.knownHosts ? { knownHosts: args.knownHosts } : {}),
        };
        (this as unknown as Record<symbol, boolean>)[HOST_BRAND] = true;
        this.registerOutputs({ url: args.url });
    }
}

function isHost(r: unknown): r is Host {
    return typeof r === "object" && r !== null && (r as Record<symbol, unknown>)[HOST_BRAND] === true;
}

/**
 * The placement of the nearest Host among a resource's parents. Pulumi keeps each resource's
 * parent on it (`__parentResource`, set when a parent is given), which is how a Host reaches
 * resources inside the user's own components.
 */
export function hostAbove(opts: pulumi.CustomResourceOptions | undefined): HostResourceArgs | undefined {
    const seen = new Set<unknown>();
    for (let r: unknown = opts?.parent; r && !seen.has(r); r = (r as { __parentResource?: unknown }).__parentResource) {
        seen.add(r);
        if (isHost(r)) return r.placement;
    }
    return undefined;
}
