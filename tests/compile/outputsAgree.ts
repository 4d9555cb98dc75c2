import type { z } from "zod";
import type {
    diskImageOutputs,
    guestCommandOutputs,
    networkOutputs,
    runScriptOutputs,
    virtualMachineOutputs,
} from "../../provider/core/outputSpecs";
import type { DiskImageOutputs } from "../../provider/resources/diskImage/state";
import type { GuestCommandOutputs } from "../../provider/resources/guestCommand";
import type { NetworkOutputs } from "../../provider/resources/network";
import type { RunScriptOutputs } from "../../provider/resources/runScript";
import type { VirtualMachineOutputs } from "../../provider/resources/virtualMachine/state";

/**
 * Never run, only compiled: every output a resource declares (core/outputSpecs.ts, what the
 * schema, the SDK and the docs show) is a field its lifecycle's state type writes. An output
 * declared but never written, or renamed on one side only, fails `tsc --noEmit`.
 */

type Undeclared<Declared extends z.ZodType, Written> = Exclude<keyof z.input<Declared>, keyof Written>;
type None<T> = [T] extends [never] ? true : { missing: T };

export const agree: [
    None<Undeclared<typeof diskImageOutputs, DiskImageOutputs>>,
    // An adopted launcher's state says `imported` instead of argvHash (runScript/import.ts writes it).
    None<Undeclared<typeof runScriptOutputs, RunScriptOutputs & { imported?: true }>>,
    None<Undeclared<typeof virtualMachineOutputs, VirtualMachineOutputs>>,
    None<Undeclared<typeof networkOutputs, NetworkOutputs>>,
    None<Undeclared<typeof guestCommandOutputs, GuestCommandOutputs>>,
] = [true, true, true, true, true];
