import { z } from "zod";
import { hostInput } from "../core/hostSpec";
import {
    diskImageOutputs,
    guestCommandOutputs,
    networkOutputs,
    runScriptOutputs,
    virtualMachineOutputs,
} from "../core/outputSpecs";
import type { ResourceDeclaration } from "../core/pulumiSchema";
import { diskImageInputs } from "./diskImage/spec";
import { guestCommandInputs } from "./guestCommand";
import { networkInputs } from "./network";
import { RESOURCES, type ResourceName } from "./registry";
import { runScriptInputs } from "./runScript";
import { virtualMachineInputs } from "./virtualMachine/inputs";

/**
 * Each resource as its users see it: what it is, the zod object of its inputs (the one its
 * lifecycle validates with) and of its outputs. The plugin's package schema, the SDK's generated
 * types and docs/reference.md are all written from these; keyed by the registry's names, so a
 * resource missing here fails to compile.
 */
const DECLARATIONS: Record<ResourceName, Omit<ResourceDeclaration, "name">> = {
    DiskImage: {
        description:
            "A disk image: blank, imported from a file, built from a directory, a qcow2 overlay, or a cloud-init seed. Its id is its path; `pulumi import` adopts an image pulumi-qemu made by that path.",
        inputs: diskImageInputs,
        outputs: diskImageOutputs,
    },
    RunScript: {
        description:
            "A launcher script (Guix's run-vm.sh) that execs one QEMU command line. Its id is its path; `pulumi import` adopts a launcher pulumi-qemu wrote by that path.",
        inputs: runScriptInputs,
        outputs: runScriptOutputs,
    },
    VirtualMachine: {
        description:
            "A running QEMU guest controlled over QMP. Its id is the name of its directory under <stateDir>/vms (vm-AbC123); `pulumi import` adopts a running VM pulumi-qemu started by that id (or by the directory's absolute path, for a VM outside the default state directory).",
        inputs: virtualMachineInputs,
        outputs: virtualMachineOutputs,
    },
    Network: {
        description:
            "A private Ethernet segment on this host: a vde_switch only this user can join. VMs join with `vm.networks: [{ network: net.id }]`.",
        inputs: networkInputs,
        outputs: networkOutputs,
    },
    GuestCommand: {
        description:
            'A command run inside a VM over its agent channel (vm.agent "shell" or "qga"): `create` at create, `update` (or `create`) when the commands, environment or stdin change, `delete` at delete, `check` at refresh (a non-zero exit is drift; the next up runs `create` again). A replaced or restarted VM runs it again.',
        inputs: guestCommandInputs,
        outputs: guestCommandOutputs,
    },
};

/** The declarations in the registry's order. */
export const RESOURCE_DECLARATIONS: readonly ResourceDeclaration[] = RESOURCES.map((r) => ({
    name: r.name,
    ...DECLARATIONS[r.name],
}));

/** What every resource takes in the TypeScript SDK besides its own inputs: where it lives. */
export const PLACEMENT_INPUTS = z.object({ host: hostInput });
