import { placed, type PlacementInputs, type PlacementOutputs } from "./placement";
import type * as pulumi from "@pulumi/pulumi";
import * as path from "node:path";
import { sha256Hex } from "../core/hash";
import { launcherHash, launcherText } from "../core/launcher";
import { acceptedArgvHashes } from "../core/qemuArgv";
// What this module has exported since 0.1 (its built path is frozen in users' state).
export { launcherHash, launcherText } from "../core/launcher";
import { RUN_SCRIPT_OUTPUT_KEYS } from "../core/resourceKeys";
import { absolutePath, InputError, parseOrThrow, refuseUnknownKeys } from "../core/validation";
import { parseVmSpec, vmSpecSchema, type VmSpec } from "../core/vmSpec";
import { resolveAccel } from "../host/qemu/accel";
import { fileModeSchema, LAUNCHER_MODE_RULE, octal } from "../core/fileMode";
import { inspectLauncherFile, LAUNCHER_MODE, removeLauncherFile, writeLauncherFile } from "../host/files/launcherFile";
import { ensureOwnDir, ensureStateDir, ownDirChain, resolveStateDir } from "../host/files/stateDir";
import { z } from "zod";
import { explainHostFileError } from "../host/files/hostErrors";
import { isEmptyState, requireState, RUN_SCRIPT_STATE } from "./stateGuard";
import { importLauncher } from "./runScript/import";
import { checkWith, hasUnknown, instanceSuffix, problemCollector, withoutUndefined } from "./common";

/**
 * RunScript: Guix's run-vm.sh. A launcher file that execs the VM's QEMU command line, written
 * once and kept as written. Its identity is `argvHash` — the argv with the accelerator as asked
 * plus the overlays it makes — so a spec that spells out a default is no change, while a changed
 * argument or overlay replaces the file.
 */

export interface RunScriptInputs extends PlacementInputs {
    vm: unknown;
    path?: string;
    stateDir?: string;
    /** Octal text such as "0700"; 0500 when absent. */
    mode?: string;
}

export interface RunScriptOutputs extends PlacementOutputs {
    vm: unknown;
    stateDir?: string;
    path: string;
    /** The path the user asked for; absent when the launcher went to its default place. */
    requestedPath?: string;
    argv: string[];
    argvHash: string;
    /** The accelerator written into the launcher ("auto" resolved on this host). */
    accel: "kvm" | "tcg";
    /** The mode written, octal ("0500"). */
    mode?: string;
    /** sha256 of the text written: read compares the file against it. */
    contentHash: string;
    /** Set by read when the file no longer holds what was written; the next update rewrites it. */
    drift?: string;
}

interface Parsed {
    spec: VmSpec;
    requestedPath?: string;
    stateDir?: string;
    argvHash: string;
    mode: number;
}

const otherInputsSchema = z.object({
    path: absolutePath("path").optional().meta({
        description:
            "Absolute path where the launcher goes; default under the state directory's launchers/, named after the argv hash.",
    }),
    stateDir: absolutePath("stateDir").optional().meta({
        description:
            "State directory for default paths; default $PULUMI_QEMU_STATE_DIR, else $XDG_STATE_HOME/pulumi-qemu, else ~/.local/state/pulumi-qemu.",
    }),
    mode: fileModeSchema("mode", LAUNCHER_MODE_RULE).optional().meta({
        description:
            'The launcher\'s mode as octal text, e.g. "0755"; default "0500". No group or other write; rewritten in place.',
    }),
});

/** A RunScript's inputs as the schema, the SDK and the docs show them; parseInputs judges them one by one. */
export const runScriptInputs = z.object({
    vm: vmSpecSchema.meta({
        description: "The virtual machine the launcher starts. A change to its command line writes a new launcher.",
    }),
    ...otherInputsSchema.shape,
});
const RUN_SCRIPT_INPUT_KEYS = Object.keys(runScriptInputs.shape);

function parseInputs(inputs: RunScriptInputs): Parsed {
    const c = problemCollector();
    c.attempt(() =>
        refuseUnknownKeys(inputs as unknown as Record<string, unknown>, RUN_SCRIPT_INPUT_KEYS, RUN_SCRIPT_OUTPUT_KEYS),
    );
    const parsedSpec = c.attempt(() => parseVmSpec(inputs.vm, "vm"));
    const parsedOthers = c.attempt(() =>
        parseOrThrow(otherInputsSchema, { path: inputs.path, stateDir: inputs.stateDir, mode: inputs.mode }, ""),
    );
    if (parsedSpec) c.attempt(() => assertFixedLauncher(parsedSpec));
    c.finish();
    const spec = parsedSpec!;
    const others = parsedOthers!;
    return {
        spec,
        argvHash: launcherHash(spec),
        stateDir: others.stateDir,
        requestedPath: others.path,
        mode: others.mode ?? LAUNCHER_MODE,
    };
}

/** A launcher is fixed text: what only a running VirtualMachine resolves (leased addresses, picked ports) cannot be in it. */
function assertFixedLauncher(spec: VmSpec): void {
    const problems = [
        ...spec.portForwards.flatMap((pf, i) =>
            pf.host === undefined
                ? [
                      {
                          property: `vm.portForwards[${i}].host`,
                          reason: "a launcher needs a fixed host port; only a VirtualMachine picks one",
                      },
                  ]
                : [],
        ),
        ...(spec.networks?.length
            ? [
                  {
                      property: "vm.networks",
                      reason: "a launcher cannot join private networks (their addresses are leased at start); use a VirtualMachine",
                  },
              ]
            : []),
    ];
    if (problems.length) throw new InputError(problems);
}

/** Launchers written before 0.3 were 0555: the next up rewrites them owner-only. */
const LAUNCHER_MODE_BEFORE_0_3 = 0o555;

const LAUNCHER_DIR = "launchers";

/** `launchers` is the state directory's subdirectory for launchers at their default place. */
export function defaultLauncherPath(launchers: string, hash: string): string {
    return path.join(launchers, `run-vm-${hash.slice(0, 16)}-${instanceSuffix()}.sh`);
}

async function checkHere(_olds: unknown, news: any): Promise<pulumi.dynamic.CheckResult> {
    if (hasUnknown(news)) return { inputs: news };
    return checkWith(() => parseInputs(news), news);
}

async function diffHere(
    _id: string,
    olds: RunScriptOutputs,
    news: RunScriptInputs,
): Promise<pulumi.dynamic.DiffResult> {
    if (hasUnknown(news)) return { changes: true, replaces: ["vm"], deleteBeforeReplace: true };
    requireState("RunScript", "diff", olds, isImported(olds) ? IMPORTED_STATE : { argvHash: "string" });
    const next = parseInputs(news);
    const replaces: string[] = [];
    // An adopted launcher has no argvHash: the program's vm matches when it renders the very text found.
    const oldHash = isImported(olds)
        ? importedTextMatches(olds, next.spec)
            ? next.argvHash
            : undefined
        : olds.argvHash;
    // A launcher written before onReboot existed is kept as VMs are (acceptedArgvHashes).
    const accepted = isImported(olds)
        ? [next.argvHash]
        : acceptedArgvHashes(next.spec, news.vm).map((h) => launcherHash(next.spec, h));
    if (oldHash === undefined || !accepted.includes(oldHash)) replaces.push("vm");
    // Compared as asked, not as resolved: a default path is new on every create.
    if (next.requestedPath !== olds.requestedPath) replaces.push("path");
    if (replaces.length) {
        // Where the new file would land on the old one, it would be written first and then deleted with the old.
        const samePath = next.requestedPath !== undefined && next.requestedPath === olds.path;
        return { changes: true, replaces, deleteBeforeReplace: samePath };
    }
    // A new mode is rewritten in place, like drift. Records from before modes were set have none.
    const modeChanged = octal(next.mode) !== (olds.mode ?? octal(LAUNCHER_MODE_BEFORE_0_3));
    return { changes: olds.drift !== undefined || modeChanged || (news.stateDir ?? null) !== (olds.stateDir ?? null) };
}

async function createHere(inputs: RunScriptInputs): Promise<pulumi.dynamic.CreateResult> {
    const p = parseInputs(inputs);
    const field = p.requestedPath === undefined ? "stateDir" : "path";
    try {
        let file = p.requestedPath;
        if (file === undefined) {
            const stateDir = await ensureStateDir(resolveStateDir(p.stateDir));
            file = defaultLauncherPath(await ensureOwnDir(path.join(stateDir, LAUNCHER_DIR)), p.argvHash);
        }
        const outs = await writeAt(file, inputs, p);
        return { id: outs.path, outs };
    } catch (err) {
        throw await explainHostFileError(err, field, p.requestedPath ?? resolveStateDir(p.stateDir));
    }
}

async function writeAt(file: string, inputs: RunScriptInputs, p: Parsed): Promise<RunScriptOutputs> {
    const { accel } = await resolveAccel(p.spec.accel, { qemu: p.spec.qemu, cacheDir: resolveStateDir(p.stateDir) });
    const { argv, text } = launcherText(p.spec, accel);
    const { contentHash } = await writeLauncherFile(file, text, p.mode);
    return withoutUndefined({
        vm: inputs.vm,
        stateDir: p.stateDir,
        path: file,
        requestedPath: p.requestedPath,
        argv,
        argvHash: p.argvHash,
        accel,
        mode: octal(p.mode),
        contentHash,
    });
}

async function readHere(id: string, props: RunScriptOutputs): Promise<pulumi.dynamic.ReadResult> {
    // No state at all: `pulumi import` or the import option, which give the id alone.
    if (isEmptyState(props)) return importLauncher(id);
    requireState("RunScript", "read", props, isImported(props) ? IMPORTED_STATE : RUN_SCRIPT_STATE);
    const st = await inspectLauncherFile(props.path);
    if (st.state === "missing") return { id: "", props: {} };
    const { drift: _old, ...rest } = props;
    let drift: string | undefined;
    if (st.state === "foreign") drift = `${props.path} is now a ${st.kind}, not the launcher pulumi-qemu wrote`;
    else if (!st.ours)
        drift = `${props.path} no longer carries the pulumi-qemu header: it was replaced by another file`;
    else if (st.contentHash !== props.contentHash)
        drift = `${props.path} was edited (sha256 ${st.contentHash}, written ${props.contentHash}); the next update rewrites it`;
    return { id, props: drift ? { ...rest, drift } : rest };
}

/** Reached for drift (or a stateDir spelled out without moving the file): rewrite the launcher where it is. */
async function updateHere(
    _id: string,
    olds: RunScriptOutputs,
    news: RunScriptInputs,
): Promise<pulumi.dynamic.UpdateResult> {
    requireState("RunScript", "update", olds, isImported(olds) ? IMPORTED_STATE : RUN_SCRIPT_STATE);
    return { outs: await writeAt(olds.path, news, parseInputs(news)) };
}

async function removeHere(_id: string, props: RunScriptOutputs): Promise<void> {
    requireState("RunScript", "delete", props, isImported(props) ? IMPORTED_STATE : RUN_SCRIPT_STATE);
    // At its default place the launcher lies in the state directory's `launchers`; swapped for a link, it leads elsewhere.
    if (props.requestedPath === undefined) {
        const dir = path.dirname(props.path);
        if (!(await ownDirChain(path.dirname(dir), dir)).ok) return;
    }
    // A file that is no longer ours stays: it was the user's to keep.
    await removeLauncherFile(props.path);
}

/** What an adopted launcher's state must hold: it has no argvHash (see runScript/import.ts). */
const IMPORTED_STATE = { path: "string", contentHash: "string" } as const;

function isImported(props: unknown): boolean {
    return (
        (props as { imported?: unknown } | undefined)?.imported === true &&
        (props as { argvHash?: unknown }).argvHash === undefined
    );
}

/** Whether `spec` renders, for the accelerator the file names, exactly the text that was adopted. */
function importedTextMatches(olds: RunScriptOutputs, spec: VmSpec): boolean {
    if (olds.accel !== "kvm" && olds.accel !== "tcg") return false;
    if (spec.accel !== "auto" && spec.accel !== olds.accel) return false;
    return sha256Hex(launcherText(spec, olds.accel).text) === olds.contentHash;
}

// ---------------------------------------------------------------------------------------------
// The lifecycle as the plugin, the dynamic shims and a far host's runner call it: placed where its `host` says (placement.ts).

export const { check, diff, create, read, update, remove } = placed("RunScript", {
    check: checkHere,
    diff: diffHere,
    create: createHere,
    read: readHere,
    update: updateHere,
    remove: removeHere,
});
