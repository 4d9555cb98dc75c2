import { mkdtemp, rm } from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import { assertBuilt, PROJECT, STACK, typeToken, type PluginKind, type ResourceKind } from "../tests/engine/driver";
import { startEngineServer, type EngineServer } from "../tests/engine/engineServer";
import { startDynamicPlugin, startQemuPlugin, type PluginClient } from "../tests/engine/plugin";
import { linkPackages } from "../tests/engine/program";
import { serializeProvider } from "../tests/engine/serialize";
import { MAIN_ROOT } from "../tests/engine/paths";
import type { Props } from "../tests/engine/wire";
import { childPids } from "../tests/support/process";

/**
 * A plugin as the engine starts it, built from the protocol tests' parts. Unlike their
 * openDriver it removes the dynamic plugin's working directory on close, and it finds the
 * plugin's pid, which the benchmarks read /proc for.
 */
export interface BenchPlugin {
    kind: PluginKind;
    plugin: PluginClient;
    engine: EngineServer;
    pid: number;
    urn(resource: ResourceKind, name: string): string;
    /** A property bag as the SDK registers it (and the dynamic plugin returns it): with `__provider` for the dynamic one. */
    bag(resource: ResourceKind, props: Props): Props;
    close(): Promise<void>;
}

const SHIMS: Record<ResourceKind, string> = {
    DiskImage: "diskImageProvider",
    RunScript: "runScriptProvider",
    VirtualMachine: "virtualMachineProvider",
};

export async function openPlugin(kind: PluginKind): Promise<BenchPlugin> {
    assertBuilt();
    const before = new Set(childPids());
    const engine = await startEngineServer();
    let cwd: string | undefined;
    let plugin: PluginClient | undefined;
    try {
        const texts = new Map<ResourceKind, string>();
        if (kind === "dynamic") {
            // The serialized shims require("pulumi-qemu/…") from the plugin's working directory, the program's.
            cwd = await mkdtemp(path.join(os.tmpdir(), "pq-bench-cwd-"));
            await linkPackages(cwd);
            plugin = await startDynamicPlugin(engine.address, { cwd, project: PROJECT });
            const sdk = require(path.join(MAIN_ROOT, "bin", "sdk", "index.js"));
            for (const [resource, name] of Object.entries(SHIMS) as [ResourceKind, string][]) texts.set(resource, await serializeProvider(sdk[name]));
        } else {
            plugin = await startQemuPlugin(engine.address);
        }
        await plugin.configure({});
        const spawned = childPids().filter((pid) => !before.has(pid));
        if (spawned.length !== 1) throw new Error(`expected one new plugin process, found ${spawned.length}`);
        const client = plugin;
        const dir = cwd;
        return {
            kind,
            plugin: client,
            engine,
            pid: spawned[0],
            urn: (resource, name) => `urn:pulumi:${STACK}::${PROJECT}::${typeToken(kind, resource)}::${name}`,
            bag: (resource, props) => (kind === "dynamic" ? { ...props, __provider: texts.get(resource)! } : { ...props }),
            async close() {
                await client.close();
                await engine.close();
                if (dir) await rm(dir, { recursive: true, force: true });
            },
        };
    } catch (err) {
        await plugin?.close();
        await engine.close();
        if (cwd) await rm(cwd, { recursive: true, force: true });
        throw err;
    }
}

