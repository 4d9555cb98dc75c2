import * as pulumi from "@pulumi/pulumi";

/**
 * What `attach()` (testing.ts) may be given, turned into the VM's plain outputs: what a test,
 * an Automation API program or a Pulumi program has in hand.
 * - the plain outputs (`stack.outputs()["web"].value`, or a create's outputs);
 * - one Automation API output, `{ value, secret }` (`stack.outputs()["web"]`);
 * - an Automation API stack's outputs and the name of the one holding the VM;
 * - the VirtualMachine resource itself, inside a Pulumi program: its outputs once it is created.
 */

/** One Automation API stack output (`OutputValue`). */
export interface StackOutputValue {
    value: unknown;
    secret?: boolean;
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === "object" && v !== null && !Array.isArray(v);

/** A `{ value, secret }` wrapper rather than the outputs themselves (which never have `value`). */
function isOutputValue(v: unknown): v is StackOutputValue {
    return isObject(v) && "value" in v && Object.keys(v).every((k) => k === "value" || k === "secret");
}

/** Plain outputs from the synchronous forms; throws naming what is missing. */
export function plainOutputs(arg: unknown, name?: string): Record<string, unknown> {
    if (name !== undefined) {
        if (!isObject(arg))
            throw new Error(
                `attach(outputs, ${JSON.stringify(name)}): outputs must be a stack's outputs (await stack.outputs())`,
            );
        if (!(name in arg)) {
            throw new Error(
                `attach: the stack has no output ${JSON.stringify(name)} (it has ${
                    Object.keys(arg)
                        .map((k) => JSON.stringify(k))
                        .join(", ") || "none"
                }); export the VirtualMachine under that name`,
            );
        }
        return plainOutputs(arg[name]);
    }
    if (isOutputValue(arg)) return plainOutputs(arg.value);
    if (!isObject(arg))
        throw new Error(
            "attach: pass a VirtualMachine's outputs, a stack output holding them, or the stack's outputs and the output's name",
        );
    return arg;
}

/** Whether `arg` is a Pulumi resource (the VirtualMachine itself, in a program). */
export function isResource(arg: unknown): arg is pulumi.CustomResource {
    return pulumi.Resource.isInstance(arg);
}

/**
 * The resource's outputs once the engine has them: every Output-valued property it declares
 * (`id`, `pid`, `qmpSocket`…). A preview has none to give, so it is refused rather than left waiting.
 */
export function resourceOutputs(resource: pulumi.CustomResource): Promise<Record<string, unknown>> {
    if (pulumi.runtime.isDryRun()) {
        return Promise.reject(
            new Error(
                "attach(vm): a VirtualMachine's outputs exist only during `pulumi up`; in a preview there is no VM to attach to",
            ),
        );
    }
    const outputs: Record<string, pulumi.Output<unknown>> = {};
    for (const key of Object.keys(resource)) {
        const value = (resource as unknown as Record<string, unknown>)[key];
        if (pulumi.Output.isInstance(value) && key !== "urn") outputs[key] = value;
    }
    return new Promise((resolve) => {
        pulumi.all(outputs).apply((values) => {
            resolve(values as Record<string, unknown>);
            return undefined;
        });
    });
}
