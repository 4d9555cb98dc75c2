/**
 * pulumi-qemu: local QEMU virtual machines, their disk images and launchers as Pulumi resources.
 */
export { DiskImage, GuestCommand, RunScript, VirtualMachine, Network } from "./resources";
export type { NicOutput, HostsOutput } from "./resources";
export { diskImageProvider, guestCommandProvider, runScriptProvider, virtualMachineProvider, networkProvider } from "./providers";
export type { DiskImageArgs, DiskImageSource, GuestCommandArgs, HostArgs, ReadyArgs, RunScriptArgs, VirtualMachineArgs, VmReferenceArgs, VmSpecArgs, DeepInput, NetworkArgs } from "./types";
export { mergeHosts, renderHosts } from "../provider/core/network";
export { vmAddress, networkDomain } from "../provider/core/dhcp";
export type { PlannedNic, NetworkFacts } from "../provider/core/dhcp";

// The engine-free core, for programs that want the argv or launcher text without resources.
export { buildQemuArgv, specArgvHash } from "../provider/core/qemuArgv";
export type { HostFacts, DaemonRuntime } from "../provider/core/qemuArgv";
export { renderLauncher, shellQuote } from "../provider/core/launcher";
export { mountTag } from "../provider/core/mountTag";
export { argvHash } from "../provider/core/hash";
export { parseVmSpec } from "../provider/core/vmSpec";
export type { VmSpec, VmSpecInput } from "../provider/core/vmSpec";

/*
 * PulumiPlugin.yaml makes this package a provider plugin too, with its own `main`. CLIs that
 * predate that attribute run a plugin by requiring the package's main module — this one — from
 * the language host's `run-plugin` command; loaded that way, it serves the plugin instead of
 * acting as a library.
 */
if (isRunAsPlugin(process.argv)) {
    require("../provider/plugin/serve").serve(process.argv.slice(2));
}

function isRunAsPlugin(argv: readonly string[]): boolean {
    const script = argv[1] ?? "";
    return /[\\/]cmd[\\/]run-plugin([\\/](index\.js)?)?$/.test(script);
}
