import type * as pulumi from "@pulumi/pulumi";
import * as path from "node:path";
import { hashValue } from "../core/hash";
import { overlaySteps, renderLauncher } from "../core/launcher";
import { buildQemuArgv, specArgvHash, type DaemonRuntime } from "../core/qemuArgv";
import { absolutePath, InputError, parseOrThrow, type FieldProblem } from "../core/validation";
import { parseVmSpec, type VmSpec } from "../core/vmSpec";
import { resolveAccel } from "../host/accel";
import { inspectLauncherFile, removeLauncherFile, writeLauncherFile } from "../host/launcherFile";
import { ensurePrivateDir, resolveStateDir } from "../host/stateDir";
import { z } from "zod";

/**
 * RunScript: Guix's run-vm.sh. A launcher file that execs the VM's QEMU command line, written
 * once and kept as written. Its identity is `argvHash` — the argv with the accelerator as asked
 * plus the overlays it makes — so a spec that spells out a default is no change, while a changed
 * argument or overlay replaces the file.
 */

/** What Pulumi passes for a value not known until apply (previews). */
export const UNKNOWN = "04da6b54-80e4-46f7-96ec-b56ff0331ba9";

export function hasUnknown(value: unknown): boolean {
    if (value === UNKNOWN) return true;
    if (Array.isArray(value)) return value.some(hasUnknown);
    if (value !== null && typeof value === "object") return Object.values(value).some(hasUnknown);
    return false;
}

/** Pulumi rejects `undefined` anywhere in outputs; a JSON round trip drops such keys. */
export function withoutUndefined<T>(value: T): T {
    return JSON.parse(JSON.stringify(value)) as T;
}

/** Runs `parse`, turning an InputError into Pulumi check failures. */
export function checkWith(parse: () => unknown, inputs: Record<string, unknown>): pulumi.dynamic.CheckResult {
    try {
        parse();
        return { inputs };
    } catch (err) {
        if (err instanceof InputError) return { inputs, failures: err.problems.map(toFailure) };
        throw err;
    }
}

/**
 * Parses several inputs, gathering the problems of all of them so a user sees every bad field
 * at once. `attempt` returns undefined for a part that failed; `finish` throws if any did.
 */
export function problemCollector() {
    const problems: FieldProblem[] = [];
    return {
        attempt<T>(parse: () => T): T | undefined {
            try {
                return parse();
            } catch (err) {
                if (!(err instanceof InputError)) throw err;
                problems.push(...err.problems);
                return undefined;
            }
        },
        finish(): void {
            if (problems.length) throw new InputError(problems);
        },
    };
}

function toFailure(p: FieldProblem): pulumi.dynamic.CheckFailure {
    return { property: p.property, reason: p.reason };
}

export interface RunScriptInputs {
    vm: unknown;
    path?: string;
    stateDir?: string;
}

export interface RunScriptOutputs {
    vm: unknown;
    stateDir?: string;
    path: string;
    argv: string[];
    argvHash: string;
    /** The accelerator written into the launcher ("auto" resolved on this host). */
    accel: "kvm" | "tcg";
    /** sha256 of the text written: read compares the file against it. */
    contentHash: string;
    /** Set by read when the file no longer holds what was written; the next update rewrites it. */
    drift?: string;
}

interface Parsed {
    spec: VmSpec;
    path: string;
    stateDir?: string;
    argvHash: string;
}

const otherInputsSchema = z.object({
    path: absolutePath("path").optional(),
    stateDir: absolutePath("stateDir").optional(),
});

function parseInputs(inputs: RunScriptInputs): Parsed {
    const c = problemCollector();
    const parsedSpec = c.attempt(() => parseVmSpec(inputs.vm, "vm"));
    const parsedOthers = c.attempt(() => parseOrThrow(otherInputsSchema, { path: inputs.path, stateDir: inputs.stateDir }, ""));
    c.finish();
    const spec = parsedSpec!;
    const others = parsedOthers!;
    const hash = launcherHash(spec);
    return {
        spec,
        argvHash: hash,
        stateDir: others.stateDir,
        path: others.path ?? defaultLauncherPath(resolveStateDir(others.stateDir), hash),
    };
}

/**
 * The launcher's identity: the argv hash of the spec, plus the overlay steps when it makes
 * any (they are in the file but not in the argv: another qemu-img binary is another launcher).
 */
export function launcherHash(spec: VmSpec): string {
    const overlays = overlaySteps(spec);
    const argv = specArgvHash(spec);
    return overlays.length ? hashValue({ argv, overlays }) : argv;
}

export function defaultLauncherPath(stateDir: string, hash: string): string {
    return path.join(stateDir, "launchers", `run-vm-${hash.slice(0, 16)}.sh`);
}

/** The launcher text for `spec` on this host, and the argv it runs. */
export function launcherText(spec: VmSpec, accel: "kvm" | "tcg", daemon?: DaemonRuntime): { argv: string[]; text: string } {
    const argv = buildQemuArgv(spec, { accel }, daemon);
    return { argv, text: renderLauncher(argv, { overlays: overlaySteps(spec) }) };
}

export async function check(_olds: unknown, news: any): Promise<pulumi.dynamic.CheckResult> {
    if (hasUnknown(news)) return { inputs: news };
    return checkWith(() => parseInputs(news), news);
}

export async function diff(_id: string, olds: RunScriptOutputs, news: RunScriptInputs): Promise<pulumi.dynamic.DiffResult> {
    if (hasUnknown(news)) return { changes: true, replaces: ["vm"], deleteBeforeReplace: true };
    const next = parseInputs(news);
    const replaces: string[] = [];
    if (next.argvHash !== olds.argvHash) replaces.push("vm");
    if (next.path !== olds.path) replaces.push("path");
    if (replaces.length) {
        // At the same path the new file would be written first and then deleted with the old.
        return { changes: true, replaces, deleteBeforeReplace: next.path === olds.path };
    }
    return { changes: olds.drift !== undefined || (news.stateDir ?? null) !== (olds.stateDir ?? null) };
}

export async function create(inputs: RunScriptInputs): Promise<pulumi.dynamic.CreateResult> {
    const outs = await writeFor(inputs);
    return { id: outs.path, outs };
}

async function writeFor(inputs: RunScriptInputs): Promise<RunScriptOutputs> {
    const p = parseInputs(inputs);
    const { accel } = await resolveAccel(p.spec.accel, { qemu: p.spec.qemu, cacheDir: resolveStateDir(p.stateDir) });
    const { argv, text } = launcherText(p.spec, accel);
    if (!inputs.path) {
        const stateDir = resolveStateDir(p.stateDir);
        await ensurePrivateDir(stateDir);
        await ensurePrivateDir(path.dirname(p.path));
    }
    const { contentHash } = await writeLauncherFile(p.path, text);
    return withoutUndefined({ vm: inputs.vm, stateDir: p.stateDir, path: p.path, argv, argvHash: p.argvHash, accel, contentHash });
}

export async function read(id: string, props: RunScriptOutputs): Promise<pulumi.dynamic.ReadResult> {
    const st = await inspectLauncherFile(props.path);
    if (st.state === "missing") return { id: "", props: {} };
    const { drift: _old, ...rest } = props;
    let drift: string | undefined;
    if (st.state === "foreign") drift = `${props.path} is now a ${st.kind}, not the launcher pulumi-qemu wrote`;
    else if (!st.ours) drift = `${props.path} no longer carries the pulumi-qemu header: it was replaced by another file`;
    else if (st.contentHash !== props.contentHash) drift = `${props.path} was edited (sha256 ${st.contentHash}, written ${props.contentHash}); the next update rewrites it`;
    return { id, props: drift ? { ...rest, drift } : rest };
}

/** Reached for drift (or a stateDir spelled out without moving the file): rewrite the launcher where it is. */
export async function update(_id: string, _olds: RunScriptOutputs, news: RunScriptInputs): Promise<pulumi.dynamic.UpdateResult> {
    return { outs: await writeFor(news) };
}

export async function remove(_id: string, props: RunScriptOutputs): Promise<void> {
    // A file that is no longer ours stays: it was the user's to keep.
    await removeLauncherFile(props.path);
}
