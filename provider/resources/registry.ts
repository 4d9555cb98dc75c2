/**
 * The resources this package serves, listed once. The plugin (token → lifecycle), the far host's
 * runner, the dynamic shims (module path in users' state), placement (which calls read the host),
 * the schema and the SDK are all built from this list, so a new resource is one entry here plus
 * its lifecycle module, not six hand-kept lists.
 *
 * Pure data: the SDK imports it, and so does the serialized shim's maker, so it must pull in no
 * lifecycle code.
 */

export const RESOURCES = [
    // Every change to an image's inputs replaces it, so it has no update; its diff hashes its sources on the host.
    { name: "DiskImage", module: "diskImage", updatesInPlace: false, checkReadsHost: false, diffReadsHost: true },
    { name: "RunScript", module: "runScript", updatesInPlace: true, checkReadsHost: false, diffReadsHost: false },
    // A VM's check looks at its networks' records on the host.
    {
        name: "VirtualMachine",
        module: "virtualMachine",
        updatesInPlace: true,
        checkReadsHost: true,
        diffReadsHost: false,
    },
    // A network's identity changes make a new switch; `dhcp`, and a dead DHCP server, are updated in place (its diff asks whether that server runs).
    { name: "Network", module: "network", updatesInPlace: true, checkReadsHost: false, diffReadsHost: true },
    // A command's diff asks whether its VM still runs.
    { name: "GuestCommand", module: "guestCommand", updatesInPlace: true, checkReadsHost: false, diffReadsHost: true },
] as const;

export type ResourceEntry = (typeof RESOURCES)[number];
export type ResourceName = ResourceEntry["name"];

/** The Pulumi type token of a resource, as the schema and the engine name it. */
export function tokenOf(name: ResourceName): string {
    return `qemu:index:${name}`;
}

/** The resource a type token names, or undefined when this package does not serve it. */
export function resourceOfToken(token: string): ResourceEntry | undefined {
    return RESOURCES.find((r) => tokenOf(r.name) === token);
}

export function resourceNamed(name: string): ResourceEntry | undefined {
    return RESOURCES.find((r) => r.name === name);
}

/**
 * The module a dynamic shim loads, as the stack's state stores it: a package path, so the same
 * state works on any machine. FROZEN: users' existing state names these files, so each lifecycle
 * stays at bin/provider/resources/<module>.js.
 */
export function shimModulePath(entry: ResourceEntry): string {
    return `pulumi-qemu/bin/provider/resources/${entry.module}.js`;
}
