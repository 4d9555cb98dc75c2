import { openDriver, type Driver, type PluginKind, type ResourceKind } from "../tests/engine/driver";
import type { Props } from "../tests/engine/wire";
import { childPids } from "../tests/support/process";

/** The protocol tests' driver (engine server, plugin, serialized shims), plus the plugin's pid. */
export interface BenchPlugin extends Driver {
    /** The plugin process, whose memory the benchmarks read from /proc. */
    pid: number;
    /** A property bag as the SDK registers it (and the dynamic plugin returns it): with `__provider` for the dynamic one. */
    bag(resource: ResourceKind, props: Props): Props;
}

export async function openPlugin(kind: PluginKind): Promise<BenchPlugin> {
    const before = new Set(childPids());
    const driver = await openDriver(kind);
    const spawned = childPids().filter((pid) => !before.has(pid));
    if (spawned.length !== 1) {
        await driver.close();
        throw new Error(`expected one new plugin process, found ${spawned.length}`);
    }
    return { ...driver, pid: spawned[0], bag: driver.news };
}
