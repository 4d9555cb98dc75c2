/**
 * pulumi-qemu/testing, the package's second entry point: one machine driven from test code
 * (attach, Machine: machine.ts), and the fleet-level tools, each in its own module — fleet
 * snapshots, faults, partitions, the debug command's attach line (docs/fleet-testing.md,
 * docs/networks.md). Only this file gathers them, so none of them imports another through it.
 */
export * from "./machine";
export { heal, isolate, partition, switchPorts } from "./partitions";
export type { PartitionMember, PartitionNetwork } from "./partitions";
// Fleet-level tools (docs/fleet-testing.md), each in its own module.
export {
    fleet,
    setGuestClock,
    type Fleet,
    type FleetRestoreOptions,
    type FleetRestoreReport,
    type FleetSnapshotOptions,
    type FleetSnapshotReport,
} from "./fleet";
export { faults, type DiskRef, type Fault, type Faults } from "./faults";
export { attachCommand } from "./debugCommand";
