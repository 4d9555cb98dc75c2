import { existsSync, readdirSync, statSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import { startEngineServer, type EngineServer } from "./engineServer";
import { startDynamicPlugin, startQemuPlugin, type PluginClient } from "./plugin";
import { linkPackages } from "./program";
import { serializeProvider } from "./serialize";
import type { Props } from "./wire";
import { MAIN_ROOT } from "./paths";
export { MAIN_ROOT };

/**
 * One of the two ways the engine reaches our resources, ready to be driven call by call: the
 * dynamic-provider plugin fed the providers exactly as pulumi.dynamic.Resource serializes them
 * (from the compiled package, as users get it), or our own plugin with its `qemu:index:*` tokens.
 */

export type PluginKind = "dynamic" | "qemu";
export type ResourceKind = "DiskImage" | "RunScript" | "VirtualMachine" | "GuestCommand";
/** Every resource the driver can address; ResourceKind stays the ones the no-op benchmark times. */
export type AnyResourceKind = ResourceKind | "Network";

export const PROJECT = "pq-protocol";
export const STACK = "test";

export interface Driver {
    kind: PluginKind;
    engine: EngineServer;
    plugin: PluginClient;
    acceptSecrets: boolean;
    urn(resource: AnyResourceKind, name: string): string;
    /** Inputs as the SDK registers them: the dynamic ones carry `__provider`. */
    news(resource: AnyResourceKind, inputs: Props): Props;
    close(): Promise<void>;
}

const SHIM_EXPORTS: Record<AnyResourceKind, string> = {
    DiskImage: "diskImageProvider",
    RunScript: "runScriptProvider",
    VirtualMachine: "virtualMachineProvider",
    Network: "networkProvider",
    GuestCommand: "guestCommandProvider",
};

/** `env` is added to the plugin process's environment; `config` is the provider's configuration (qemu plugin). */
export async function openDriver(
    kind: PluginKind,
    opts: { env?: NodeJS.ProcessEnv; config?: Props } = {},
): Promise<Driver> {
    assertBuilt();
    const engine = await startEngineServer();
    let plugin: PluginClient | undefined;
    let cwd: string | undefined;
    const cleanUp = async () => {
        await plugin?.close();
        await engine.close();
        if (cwd) await rm(cwd, { recursive: true, force: true });
    };
    try {
        const providerTexts = new Map<AnyResourceKind, string>();
        if (kind === "dynamic") {
            // The plugin resolves the shims' `require("pulumi-qemu/…")` from its working directory, the program's.
            cwd = await mkdtemp(path.join(os.tmpdir(), "pq-dynamic-cwd-"));
            await linkPackages(cwd);
            plugin = await startDynamicPlugin(engine.address, { cwd, project: PROJECT, env: opts.env });
            const sdk = require(path.join(MAIN_ROOT, "bin", "sdk", "index.js"));
            for (const [resource, name] of Object.entries(SHIM_EXPORTS) as [AnyResourceKind, string][]) {
                providerTexts.set(resource, await serializeProvider(sdk[name]));
            }
        } else {
            plugin = await startQemuPlugin(engine.address, { env: opts.env });
        }
        const { acceptSecrets } = await plugin.configure(opts.config ?? {});
        const client: PluginClient = plugin;
        return {
            kind,
            engine,
            plugin: client,
            acceptSecrets,
            urn: (resource, name) => `urn:pulumi:${STACK}::${PROJECT}::${typeToken(kind, resource)}::${name}`,
            news: (resource, inputs) =>
                kind === "dynamic" ? { ...inputs, __provider: providerTexts.get(resource)! } : { ...inputs },
            close: cleanUp,
        };
    } catch (err) {
        await cleanUp();
        throw err;
    }
}

export function typeToken(kind: PluginKind, resource: AnyResourceKind): string {
    return kind === "dynamic" ? `pulumi-nodejs:dynamic/qemu:${resource}` : `qemu:index:${resource}`;
}

/**
 * The plugins run the compiled package: a build older than its sources would test old code
 * and pass or fail for the wrong reason.
 */
export function assertBuilt(): void {
    const problems: string[] = [];
    for (const src of sourcesUnder(["provider", "sdk"])) {
        const out = path.join(MAIN_ROOT, "bin", src.replace(/\.ts$/, ".js"));
        const srcPath = path.join(MAIN_ROOT, src);
        if (!existsSync(out)) problems.push(`bin/${src.replace(/\.ts$/, ".js")} is missing`);
        else if (statSync(out).mtimeMs < statSync(srcPath).mtimeMs)
            problems.push(`bin/${src.replace(/\.ts$/, ".js")} is older than ${src}`);
    }
    if (problems.length)
        throw new Error(`the compiled package is missing or stale (run \`npm run build\`): ${problems.join("; ")}`);
}

function sourcesUnder(dirs: string[]): string[] {
    const found: string[] = [];
    const walk = (rel: string) => {
        for (const entry of readdirSync(path.join(MAIN_ROOT, rel), { withFileTypes: true })) {
            const child = path.join(rel, entry.name);
            if (entry.isDirectory()) walk(child);
            else if (entry.name.endsWith(".ts") && !entry.name.endsWith(".d.ts")) found.push(child);
        }
    };
    dirs.forEach(walk);
    return found;
}
