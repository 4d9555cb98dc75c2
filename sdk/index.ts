/**
 * pulumi-qemu: local QEMU virtual machines, their disk images and launchers as Pulumi resources.
 *
 * This module is the library and never starts anything: importing it has no effect beyond
 * defining what it exports. The provider plugin is package.json's `main`
 * (provider/plugin/main.ts), which Pulumi's nodejs language host reaches by requiring the
 * package's directory; `import "pulumi-qemu"` goes through `exports` to this file instead.
 */
export { DiskImage, GuestCommand, RunScript, VirtualMachine, Network } from "./resources";
export type { NicOutput, HostsOutput } from "./generatedTypes";
export { Host } from "./host";
export type { HostResourceArgs } from "./host";
export {
    diskImageProvider,
    guestCommandProvider,
    runScriptProvider,
    virtualMachineProvider,
    networkProvider,
} from "./providers";
export type {
    DiskImageArgs,
    DiskImageSource,
    GuestCommandArgs,
    HostArgs,
    ReadyArgs,
    RunScriptArgs,
    VirtualMachineArgs,
    VmReferenceArgs,
    VmSpecArgs,
    DeepInput,
    NetworkArgs,
} from "./types";
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
