/**
 * A VirtualMachine's inputs judged: the VM spec, the readiness conditions, the state directory
 * and warmStart, all parsed at once so that every problem is reported together; and the rules
 * that tie them (a tcpPort must be forwarded, inside checks need an agent channel).
 */
import { z } from "zod";
import { VIRTUAL_MACHINE_OUTPUT_KEYS } from "../../core/resourceKeys";
import { serialPatternProblem } from "../../core/serialPattern";
import { snapshotProblems } from "../../core/snapshotRules";
import { absolutePath, InputError, parseOrThrow, port, refuseUnknownKeys } from "../../core/validation";
import { parseVmSpec, vmSpecSchema, type VmSpec } from "../../core/vmSpec";
import { problemCollector } from "../common";
import type { VirtualMachineInputs } from "./state";

export const DEFAULT_READY_TIMEOUT_SECONDS = 120;

const readySchema = z
    .object({
        serialPattern: z
            .string({ error: "serialPattern must be a string" })
            .min(1, { error: "serialPattern must not be empty" })
            .refine((s) => serialPatternProblem(s) === undefined, {
                error: (iss) => serialPatternProblem(iss.input as string),
            })
            .optional()
            .meta({
                description:
                    "Ready once the serial console prints this: plain text is a substring, /…/flags an RE2 regular expression. Matched with terminal escapes and carriage returns removed.",
            }),
        tcpPort: port("tcpPort").optional().meta({
            description:
                "Ready once this forwarded port answers with some bytes (a bare connect proves nothing under user networking): the host port, or the guest port of an auto-picked forward.",
        }),
        agent: z
            .literal(true, { error: "agent must be true (or left out)" })
            .optional()
            .meta({ description: "Ready once the guest agent channel (vm.agent) answers." }),
        command: z
            .string({ error: "command must be a shell command (text)" })
            .min(1, { error: "command must not be empty" })
            .optional()
            .meta({ description: "Ready once this shell command exits 0 inside the guest, over the agent channel." }),
        guestPort: port("guestPort").optional().meta({
            description:
                "Ready once something listens on this TCP port inside the guest (seen over the agent channel, not through a forward).",
        }),
        timeoutSeconds: z
            .number({ error: "timeoutSeconds must be a number of seconds" })
            .positive({ error: "timeoutSeconds must be more than 0" })
            .max(86400, { error: "timeoutSeconds must be at most 86400 (a day)" })
            .default(DEFAULT_READY_TIMEOUT_SECONDS)
            .meta({ description: "Give up, stop the VM and fail after this long; at most 86400.", unit: "seconds" }),
    })
    .strict()
    .meta({ typeName: "Ready", description: "When a VM counts as started." });

export type Ready = z.output<typeof readySchema>;

const stateDirSchema = z.object({
    stateDir: absolutePath("stateDir").optional().meta({
        description:
            "State directory for the VM's private directory; default $PULUMI_QEMU_STATE_DIR, else $XDG_STATE_HOME/pulumi-qemu, else ~/.local/state/pulumi-qemu. Another one replaces the VM.",
        replaceOnChanges: true,
    }),
});

/**
 * A VirtualMachine's inputs as the schema, the SDK and the docs show them; parseInputs judges
 * them one by one (warmStart by parseWarmStart, which also looks at the VM).
 */
export const virtualMachineInputs = z.object({
    vm: vmSpecSchema.meta({ description: "The virtual machine. A change to what QEMU runs replaces the VM." }),
    ready: readySchema
        .optional()
        .meta({ description: "When the VM counts as started; default as soon as QEMU runs. Changes update in place." }),
    stateDir: stateDirSchema.shape.stateDir,
    warmStart: z.literal(true).optional().meta({
        description:
            "Snapshot the VM once ready, and start this same VM (argv and disk identities) again by restoring that snapshot instead of booting. Needs a writable qcow2 disk, no shares, not volatile. Changes update in place.",
    }),
});
const VIRTUAL_MACHINE_INPUT_KEYS = Object.keys(virtualMachineInputs.shape);

export interface Parsed {
    spec: VmSpec;
    ready: Ready;
    stateDir?: string;
    warmStart?: true;
    /** ready.timeoutSeconds was left out: the wait follows the call's customTimeouts when there are any. */
    readyTimeoutDefaulted?: true;
}

/** Parses every input, reporting the problems of all of them at once rather than the first one's. */
export function parseInputs(inputs: VirtualMachineInputs): Parsed {
    const c = problemCollector();
    c.attempt(() =>
        refuseUnknownKeys(
            inputs as unknown as Record<string, unknown>,
            VIRTUAL_MACHINE_INPUT_KEYS,
            VIRTUAL_MACHINE_OUTPUT_KEYS,
        ),
    );
    const spec = c.attempt(() => parseVmSpec(inputs.vm, "vm"));
    const ready = c.attempt(() => parseOrThrow(readySchema, inputs.ready ?? {}, "ready"));
    const others = c.attempt(() => parseOrThrow(stateDirSchema, { stateDir: inputs.stateDir }, ""));
    if (spec && ready?.tcpPort !== undefined) c.attempt(() => forwardFor(spec, ready.tcpPort!));
    if (spec && ready) c.attempt(() => needsAgent(spec, ready));
    const warmStart = c.attempt(() => parseWarmStart(inputs.warmStart, spec));
    c.finish();
    const defaulted = (inputs.ready as { timeoutSeconds?: unknown } | undefined)?.timeoutSeconds === undefined;
    return {
        spec: spec!,
        ready: ready!,
        stateDir: others!.stateDir,
        ...(warmStart ? { warmStart } : {}),
        ...(defaulted ? { readyTimeoutDefaulted: true as const } : {}),
    };
}

/**
 * The forward that `ready.tcpPort` names — a host port it forwards, or the guest port of a
 * forward whose host port the provider picks; probing a port the VM does not forward would
 * only ever time out.
 */
export function forwardFor(
    spec: VmSpec,
    hostPort: number,
    picked: Record<number, number> = {},
): { address: string; port: number } {
    let i = spec.portForwards.findIndex((f) => f.host === hostPort && f.protocol === "tcp");
    if (i < 0)
        i = spec.portForwards.findIndex((f) => f.host === undefined && f.guest === hostPort && f.protocol === "tcp");
    const pf = spec.portForwards[i];
    if (!pf) {
        const forwarded = spec.portForwards
            .filter((f) => f.protocol === "tcp")
            .map((f) => f.host ?? `auto for guest ${f.guest}`);
        throw new InputError([
            {
                property: "ready.tcpPort",
                reason: `tcpPort must be a host port the VM forwards over TCP (got ${hostPort}; forwarded: ${forwarded.length ? forwarded.join(", ") : "none"})`,
            },
        ]);
    }
    // A wildcard bind is reachable on loopback; connect there.
    return {
        address: pf.hostAddress === "0.0.0.0" ? "127.0.0.1" : pf.hostAddress,
        port: pf.host ?? picked[i] ?? hostPort,
    };
}

/** `warmStart: true` (or left out), on a VM whose state can be snapshotted. */
function parseWarmStart(value: unknown, spec: VmSpec | undefined): true | undefined {
    if (value === undefined) return undefined;
    if (value !== true)
        throw new InputError([
            { property: "warmStart", reason: `warmStart must be true (or left out), got ${JSON.stringify(value)}` },
        ]);
    const problems = spec ? snapshotProblems(spec, "vm") : [];
    if (problems.length)
        throw new InputError(
            problems.map((p) => ({ property: p.property, reason: `warmStart snapshots the VM: ${p.reason}` })),
        );
    return true;
}

/** Readiness checked from inside needs the channel to ask through. */
function needsAgent(spec: VmSpec, ready: Ready): void {
    if (spec.agent !== "none") return;
    const fields = (["agent", "command", "guestPort"] as const).filter((k) => ready[k] !== undefined);
    if (fields.length) {
        throw new InputError(
            fields.map((k) => ({
                property: `ready.${k}`,
                reason: `${k} is checked inside the guest over its agent channel: set vm.agent to "shell" or "qga"`,
            })),
        );
    }
}
