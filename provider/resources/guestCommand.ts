import { placed, type PlacementInputs, type PlacementOutputs } from "./placement";
import type * as pulumi from "@pulumi/pulumi";
import { z } from "zod";
import { hashValue } from "../core/hash";
import { absolutePath, parseOrThrow } from "../core/validation";
import { callRemainingMs } from "../host/callDeadline";
import { vmReferenceSchema } from "../core/vmReference";
import { GuestChannelError } from "../host/guest/guestChannel";
import { checkOurDaemon } from "../host/qemu/qemuProcess";
import { openAgentChannel, type AgentTarget } from "./virtualMachine/agentChannel";
import { checkWith, hasUnknown, withoutUndefined } from "./common";
import { requireState } from "./stateGuard";
import { resolveVmById, VM_ID_PATTERN } from "./virtualMachine/byId";

/**
 * GuestCommand: a step inside a VM, over its agent channel (no SSH, no network), as
 * @pulumi/command's Command is on the host. `create` runs at create, `update` (or `create`
 * again) when the commands, environment or stdin change, `delete` at delete. `check` runs at
 * refresh: a non-zero exit is drift, kept in state, so the next `up` runs `create` again.
 *
 * The resource belongs to one run of one VM: its identity includes the VM's id and QEMU's
 * process start, so a VM that was replaced or restarted runs the command again (a replace).
 *
 * `vm` is the VirtualMachine's outputs or its id (the name of its directory under
 * `<stateDir>/vms/`); an id is resolved to the running QEMU at create, and what it resolved to
 * is kept in the `vmTarget` output, so read and delete talk to that same run.
 *
 * Commands, environment values and stdin may be secrets: errors never quote them, and any of
 * their text in the output shown in an error is masked.
 */

const DEFAULT_TIMEOUT_SECONDS = 300;
const ERROR_OUTPUT_CHARS = 2000;

const vmRefSchema = vmReferenceSchema;

const vmIdSchema = z.string().regex(VM_ID_PATTERN, {
    error: "vm must be the VirtualMachine's id (the name of its directory under <stateDir>/vms, like vm-AbC123) or its outputs",
});

const command = (field: string) =>
    z.string({ error: `${field} must be a shell command (text)` }).min(1, { error: `${field} must not be empty` });

const inputsSchema = z
    .object({
        vm: z.union([vmIdSchema, vmRefSchema]).meta({
            description:
                "The VirtualMachine (created with vm.agent set): the resource, its outputs, or its id (the name of its directory under <stateDir>/vms). A replaced or restarted VM runs create again.",
            tsType: 'import("./resources").VirtualMachine | DeepInput<VmReferenceOutput> | pulumi.Input<string>',
        }),
        stateDir: absolutePath("stateDir").optional().meta({
            description:
                "State directory a vm given by id is looked up in (the VirtualMachine's stateDir); default as for the other resources ($PULUMI_QEMU_STATE_DIR, else $XDG_STATE_HOME/pulumi-qemu, else ~/.local/state/pulumi-qemu).",
        }),
        create: command("create").meta({
            description: "Shell text run in the guest at create, and again after drift.",
        }),
        update: command("update").optional().meta({
            description: "Run instead of create when the commands, environment or stdin change; default create.",
        }),
        delete: command("delete")
            .optional()
            .meta({ description: "Run at delete, on the same VM run; skipped when that VM is gone. Default none." }),
        check: command("check").optional().meta({
            description:
                "Run at refresh: a non-zero exit reports drift, and the next up runs create again. Default none.",
        }),
        environment: z
            .record(
                z.string(),
                // A NUL ends a C string: the value would reach the guest cut short. Never quoted: it may be a secret.
                z.string({ error: "environment values must be strings" }).refine((v) => !v.includes("\0"), {
                    error: "environment values must not contain a NUL byte (the guest would see the value cut short there); the value is not shown",
                    params: { quote: false },
                }),
            )
            .superRefine((env, ctx) => {
                for (const name of Object.keys(env)) {
                    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(name))
                        ctx.addIssue({
                            code: "custom",
                            path: [name],
                            message: `environment name ${JSON.stringify(name)} must be letters, digits and _, not starting with a digit`,
                        });
                }
            })
            .optional()
            .meta({ description: "Environment variables for the commands; default none." }),
        stdin: z
            .string({ error: "stdin must be a string" })
            .optional()
            .meta({ description: "Text fed to each command's stdin; default empty." }),
        triggers: z.array(z.unknown()).optional().meta({
            description: "Arbitrary values; any change replaces the resource (runs delete, then create). Default none.",
            replaceOnChanges: true,
        }),
        timeoutSeconds: z
            .number({ error: "timeoutSeconds must be a number of seconds" })
            .int({ error: "timeoutSeconds must be a whole number" })
            .min(1)
            .max(86400)
            .default(DEFAULT_TIMEOUT_SECONDS)
            .meta({
                description: "Each command is killed in the guest after this long; at most 86400.",
                unit: "seconds",
            }),
    })
    .strict();

/** A GuestCommand's inputs as the schema, the SDK and the docs show them. */
export const guestCommandInputs = inputsSchema;

// Picked by the type of `vm`, so a bad field of the outputs is named (a union would only say "invalid").
const byIdSchema = inputsSchema.extend({ vm: vmIdSchema });
const byOutputsSchema = inputsSchema.extend({ vm: vmRefSchema });

type Parsed = z.output<typeof inputsSchema>;
type VmRef = z.output<typeof vmRefSchema>;

export interface GuestCommandInputs extends PlacementInputs {
    vm: unknown;
    /** Where a `vm` given by id is looked up; resolved like the other resources' stateDir. */
    stateDir?: string;
    create: string;
    update?: string;
    delete?: string;
    check?: string;
    environment?: Record<string, string>;
    stdin?: string;
    triggers?: unknown[];
    timeoutSeconds?: number;
}

export interface GuestCommandOutputs extends Omit<GuestCommandInputs, "host">, PlacementOutputs {
    stdout: string;
    stderr: string;
    exitCode: number;
    /** Which run of which VM the command ran on. */
    vmIdentity: string;
    /** With `vm` given by id: what the id resolved to at create (the channel and the QEMU run). */
    vmTarget?: VmRef;
    /** Set by a refresh whose `check` failed; the next `up` runs `create` again. */
    drift?: string;
}

function parse(inputs: unknown): Parsed {
    // The dynamic-provider plugin passes the serialized provider along with the inputs.
    const { __provider: _p, ...rest } = (inputs ?? {}) as Record<string, unknown>;
    return parseOrThrow(typeof rest.vm === "string" ? byIdSchema : byOutputsSchema, rest, "");
}

function vmIdentity(vm: VmRef): string {
    return hashValue({
        vm: vm.id ?? vm.vmDir ?? vm.agentSocket,
        pid: vm.pid,
        processStartTime: vm.processStartTime,
        bootId: vm.bootId,
    }).slice(0, 32);
}

/** The VM the inputs name: the outputs as given, or the VM directory an id names, resolved now. */
async function resolveVm(p: Parsed): Promise<VmRef> {
    return typeof p.vm === "string" ? ((await resolveVmById(p.vm, p.stateDir)) as unknown as VmRef) : p.vm;
}

/** The VM run a created command belongs to: the outputs it was given, or what its id resolved to then. */
function vmOf(p: Parsed, props: GuestCommandOutputs): VmRef {
    return typeof p.vm === "string" ? (props.vmTarget as VmRef) : p.vm;
}

function target(vm: VmRef): AgentTarget {
    return {
        agent: vm.agent,
        agentSocket: vm.agentSocket,
        qmpSocket: vm.qmpSocket,
        serialLog: vm.serialLog,
        pid: vm.pid,
        processStartTime: vm.processStartTime,
        bootId: vm.bootId,
        pidfile: vm.pidfile,
    };
}

async function checkHere(_olds: unknown, news: any): Promise<pulumi.dynamic.CheckResult> {
    if (hasUnknown(news)) return { inputs: news };
    return checkWith(() => parse(news), news);
}

/** What makes the command run again in place. */
const RERUN_KEYS = ["create", "update", "environment", "stdin"] as const;

async function diffHere(
    _id: string,
    olds: GuestCommandOutputs,
    news: GuestCommandInputs,
): Promise<pulumi.dynamic.DiffResult> {
    requireState("GuestCommand", "diff", olds, stateFields(olds));
    const replaces: string[] = [];
    // An id in a state directory not known yet may name another VM run: replaced, as for unknown outputs.
    if (hasUnknown(news.vm) || (typeof news.vm === "string" && hasUnknown(news.stateDir))) replaces.push("vm");
    else if ((await identityNow(parse(news))) !== olds.vmIdentity) replaces.push("vm");
    if (!same(olds.triggers, news.triggers)) replaces.push("triggers");
    if (replaces.length) return { changes: true, replaces, deleteBeforeReplace: true };
    const changed = [...RERUN_KEYS, "delete", "check", "timeoutSeconds", "stateDir"].filter(
        (k) => !same((olds as any)[k], (news as any)[k]),
    );
    return { changes: changed.length > 0 || olds.drift !== undefined };
}

/** The identity of the VM run the inputs name now; an id that names no running VM matches nothing (create will say why). */
async function identityNow(p: Parsed): Promise<string | undefined> {
    try {
        return vmIdentity(await resolveVm(p));
    } catch {
        return undefined;
    }
}

function same(a: unknown, b: unknown): boolean {
    return JSON.stringify(a ?? null) === JSON.stringify(b ?? null);
}

async function createHere(inputs: GuestCommandInputs): Promise<pulumi.dynamic.CreateResult> {
    const p = parse(inputs);
    const vm = await resolveVm(p);
    const result = await runStep(p, vm, "create", p.create);
    const id = `${vmIdentity(vm).slice(0, 12)}-${hashValue({ create: p.create, at: Date.now(), r: Math.random() }).slice(0, 12)}`;
    return { id, outs: outputs(inputs, p, vm, result) };
}

/** Runs `update` (or `create`) when what it runs changed or a refresh found drift; otherwise only the inputs move. */
async function updateHere(
    _id: string,
    olds: GuestCommandOutputs,
    news: GuestCommandInputs,
): Promise<pulumi.dynamic.UpdateResult> {
    requireState("GuestCommand", "update", olds, stateFields(olds));
    const p = parse(news);
    // diff replaces the command when the VM run changed, so this is the run it was created on.
    const vm = typeof p.vm === "string" ? vmOf(parse(inputsOf(olds)), olds) : p.vm;
    const rerun = olds.drift !== undefined || RERUN_KEYS.some((k) => !same((olds as any)[k], (news as any)[k]));
    if (!rerun)
        return { outs: outputs(news, p, vm, { exitCode: olds.exitCode, stdout: olds.stdout, stderr: olds.stderr }) };
    const [step, text] =
        olds.drift !== undefined || !p.update ? (["create", p.create] as const) : (["update", p.update] as const);
    return { outs: outputs(news, p, vm, await runStep(p, vm, step, text)) };
}

/**
 * Refresh: a VM that is gone takes the command's effect with it (the resource is gone too);
 * otherwise `check`, when given, decides whether the effect is still there.
 */
async function readHere(id: string, props: GuestCommandOutputs): Promise<pulumi.dynamic.ReadResult> {
    requireState("GuestCommand", "read", props, stateFields(props));
    const p = parse(inputsOf(props));
    const vm = vmOf(p, props);
    if (!(await vmAlive(vm))) return { id: "", props: {} };
    if (!p.check) return { id, props };
    const r = await exec(p, vm, "check", p.check);
    const { drift: _old, ...rest } = props;
    if (r.exitCode === 0) return { id, props: rest };
    return { id, props: { ...rest, drift: `check exited ${r.exitCode}: the next up runs create again` } };
}

/** Runs `delete` on the VM the command ran on; a VM that is gone has nothing left to undo. */
async function removeHere(_id: string, props: GuestCommandOutputs): Promise<void> {
    requireState("GuestCommand", "delete", props, stateFields(props));
    const p = parse(inputsOf(props));
    if (!p.delete) return;
    const vm = vmOf(p, props);
    if (!(await vmAlive(vm))) return;
    await runStep(p, vm, "delete", p.delete);
}

/** What read, update and delete rely on: the command, which run it belongs to, and the VM (outputs, or an id with what it resolved to). */
function stateFields(props: unknown): Record<string, "string" | "number" | "object"> {
    const byId =
        props !== null && typeof props === "object" && typeof (props as Record<string, unknown>).vm === "string";
    return {
        create: "string",
        exitCode: "number",
        vmIdentity: "string",
        ...(byId ? { vmTarget: "object" } : { vm: "object" }),
    };
}

function inputsOf(props: GuestCommandOutputs): GuestCommandInputs {
    const { stdout: _o, stderr: _e, exitCode: _c, vmIdentity: _v, drift: _d, vmTarget: _t, ...inputs } = props;
    return inputs;
}

async function vmAlive(vm: VmRef): Promise<boolean> {
    return (await checkOurDaemon({ pid: vm.pid, startTime: vm.processStartTime, bootId: vm.bootId }, vm.pidfile)).alive;
}

interface StepResult {
    exitCode: number;
    stdout: string;
    stderr: string;
}

function outputs(inputs: GuestCommandInputs, p: Parsed, vm: VmRef, r: StepResult): GuestCommandOutputs {
    const vmTarget = typeof p.vm === "string" ? vm : undefined;
    // The placement outputs are the placement layer's to write (placement.ts).
    const { host: _host, ...rest } = inputs;
    return withoutUndefined({
        ...rest,
        stdout: r.stdout,
        stderr: r.stderr,
        exitCode: r.exitCode,
        vmIdentity: vmIdentity(vm),
        vmTarget,
    });
}

/** Runs one step; a non-zero exit fails it, with the (masked) output in the error. */
async function runStep(p: Parsed, vm: VmRef, step: string, text: string): Promise<StepResult> {
    const r = await exec(p, vm, step, text);
    if (r.exitCode !== 0) {
        throw new Error(
            `GuestCommand ${step} exited ${r.exitCode}.\nstdout: ${masked(p, r.stdout)}\nstderr: ${masked(p, r.stderr)}`,
        );
    }
    return r;
}

async function exec(p: Parsed, vm: VmRef, step: string, text: string): Promise<StepResult> {
    const channel = openAgentChannel(target(vm));
    try {
        // The resource's customTimeouts cut a longer timeoutSeconds (the command is killed in the guest).
        const left = callRemainingMs();
        const timeoutSeconds =
            left === undefined ? p.timeoutSeconds : Math.max(1, Math.min(p.timeoutSeconds, Math.floor(left / 1000)));
        const r = await channel.execute(text, { env: p.environment, stdin: p.stdin, timeoutSeconds });
        return { exitCode: r.exitCode, stdout: r.stdout.toString("utf8"), stderr: r.stderr.toString("utf8") };
    } catch (err) {
        // The channel's messages hold no input text (commands, values, stdin); output is masked.
        if (err instanceof GuestChannelError) {
            const partial = err.partial
                ? `\nstdout: ${masked(p, err.partial.stdout.toString("utf8"))}\nstderr: ${masked(p, err.partial.stderr.toString("utf8"))}`
                : "";
            throw new Error(`GuestCommand ${step}: ${err.message}${partial}`);
        }
        throw err;
    } finally {
        channel.close();
    }
}

/** The tail of an output with every command, environment value and stdin text replaced by [secret]. */
function masked(p: Parsed, text: string): string {
    let t = text;
    const hidden = [p.create, p.update, p.delete, p.check, p.stdin, ...Object.values(p.environment ?? {})]
        .filter((s): s is string => typeof s === "string" && s.length >= 3)
        .sort((a, b) => b.length - a.length);
    for (const s of hidden) t = t.split(s).join("[secret]");
    if (t.length > ERROR_OUTPUT_CHARS) t = "…" + t.slice(-ERROR_OUTPUT_CHARS);
    return t ? JSON.stringify(t) : "(empty)";
}

// ---------------------------------------------------------------------------------------------
// The lifecycle as the plugin, the dynamic shims and a far host's runner call it: placed where its `host` says (placement.ts).

export const { check, diff, create, read, update, remove } = placed("GuestCommand", {
    check: checkHere,
    diff: diffHere,
    create: createHere,
    read: readHere,
    update: updateHere,
    remove: removeHere,
});
