import { networkOutputs, outputNames, runScriptOutputs, virtualMachineOutputs } from "./outputSpecs";

/**
 * The output names the SDK declares (as undefined) for RunScript, Network and VirtualMachine,
 * which their checks' `refuseUnknownKeys` lets through; read from their output declarations
 * (outputSpecs.ts), as the SDK's are. DiskImage's live in diskImageSpec.ts.
 */

export const RUN_SCRIPT_OUTPUT_KEYS: readonly string[] = outputNames(runScriptOutputs);
export const NETWORK_OUTPUT_KEYS: readonly string[] = outputNames(networkOutputs);
export const VIRTUAL_MACHINE_OUTPUT_KEYS: readonly string[] = outputNames(virtualMachineOutputs);
