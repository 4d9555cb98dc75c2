import { hashValue } from "./hash";
import { buildQemuArgv, specArgvHash, type DaemonRuntime, type Resolved } from "./qemuArgv";
import { OVMF_VARS_TEMPLATE, UEFI_VARS_FILE } from "./firmware";
import { shellQuote } from "./shellQuote";
import type { VmSpec } from "./vmSpec";
/**
 * The launcher is Guix's run-vm.sh: a POSIX shell script that execs one QEMU command line.
 * Everything in it is single-quoted, the one shell quoting with no special characters inside,
 * so any argument comes out of `sh` exactly as it went in.
 */

export interface OverlayStep {
    /** The read-only image the overlay sits on. */
    base: string;
    baseFormat: "raw" | "qcow2";
    overlay: string;
    qemuImg: string;
}

/** A UEFI variable store to copy from OVMF's template before QEMU starts (firmware "uefi"). */
export interface VarsStep {
    template: string;
    file: string;
}

export interface LauncherOptions {
    /** Overlays to create before QEMU starts, each only when missing (persistent VMs keep their writes). */
    overlays?: OverlayStep[];
    uefiVars?: VarsStep;
}

export const LAUNCHER_HEADER =
    "# Written by pulumi-qemu. Edits are reported as drift and replaced on the next `pulumi up`.";

// Re-exported: the SDK has exported shellQuote from here since 0.1.
export { shellQuote };

function commandLine(argv: readonly string[]): string {
    return argv.map(shellQuote).join(" \\\n    ");
}

function overlayStep(step: OverlayStep): string {
    const create = commandLine([
        step.qemuImg,
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        step.base,
        "-F",
        step.baseFormat,
        step.overlay,
    ]);
    return `[ -e ${shellQuote(step.overlay)} ] || ${create}`;
}

/**
 * Only when nothing is there, not even a dangling link: the guest's saved variables, or a file
 * that is not ours, are never written over. umask 077: owner-only, whatever the template's mode.
 */
function varsStep(step: VarsStep): string {
    const f = shellQuote(step.file);
    return `[ -e ${f} ] || [ -L ${f} ] || (umask 077 && cp ${shellQuote(step.template)} ${f})`;
}

/** The text of a launcher that runs `argv`, passing the launcher's own arguments on to QEMU. */
export function renderLauncher(argv: readonly string[], opts: LauncherOptions = {}): string {
    if (argv.length === 0) throw new Error("renderLauncher needs at least the QEMU binary");
    const lines = ["#!/bin/sh", LAUNCHER_HEADER, "set -e"];
    for (const step of opts.overlays ?? []) lines.push(overlayStep(step));
    if (opts.uefiVars) lines.push(varsStep(opts.uefiVars));
    lines.push(`exec ${commandLine(argv)} "$@"`);
    return lines.join("\n") + "\n";
}

/** The overlay steps a spec needs: one per disk that names an overlay, unless writes are thrown away. */
export function overlaySteps(spec: {
    qemuImg: string;
    volatile: boolean;
    disks: ReadonlyArray<{ path: string; format: "raw" | "qcow2"; overlay?: string }>;
}): OverlayStep[] {
    if (spec.volatile) return [];
    return spec.disks.flatMap((d) =>
        d.overlay ? [{ base: d.path, baseFormat: d.format, overlay: d.overlay, qemuImg: spec.qemuImg }] : [],
    );
}

/**
 * The launcher's identity: the argv hash of the spec, plus the overlay steps when it makes
 * any (they are in the file but not in the argv: another qemu-img binary is another launcher).
 */
/** `argv`: the argv hash to build on (default the spec's; a VM made before onReboot has another, see acceptedArgvHashes). */
export function launcherHash(spec: VmSpec, argv = specArgvHash(spec)): string {
    const overlays = overlaySteps(spec);
    return overlays.length ? hashValue({ argv, overlays }) : argv;
}

/** The launcher text for `spec` on this host, and the argv it runs. */
export function launcherText(
    spec: VmSpec,
    accel: "kvm" | "tcg",
    daemon?: DaemonRuntime,
    resolved: Resolved = {},
): { argv: string[]; text: string } {
    const argv = buildQemuArgv(spec, { accel, ...resolved }, daemon);
    const uefiVars =
        spec.firmware === "uefi"
            ? { template: OVMF_VARS_TEMPLATE, file: daemon?.uefiVars ?? UEFI_VARS_FILE }
            : undefined;
    return { argv, text: renderLauncher(argv, { overlays: overlaySteps(spec), uefiVars }) };
}

/**
 * The QEMU argv a launcher runs, read back from its text: the inverse of renderLauncher's
 * `exec WORD \
 *     WORD … "$@"` line, whose words are plain or single-quoted by shellQuote ('\'' for a
 * quote). Only our own launchers are read this way; anything else yields undefined.
 */
export function launcherArgv(text: string): string[] | undefined {
    const start = text.search(/^exec /m);
    if (start < 0) return undefined;
    const words: string[] = [];
    let i = start + "exec ".length;
    for (;;) {
        // Between words: spaces, and the backslash-newline that continues the command.
        while (i < text.length && (text[i] === " " || (text[i] === "\\" && text[i + 1] === "\n")))
            i += text[i] === "\\" ? 2 : 1;
        if (text.startsWith('"$@"', i)) return words.length ? words : undefined;
        if (i >= text.length || text[i] === "\n") return undefined;
        let word = "";
        while (i < text.length && text[i] !== " " && text[i] !== "\n") {
            if (text[i] === "'") {
                const end = text.indexOf("'", i + 1);
                if (end < 0) return undefined;
                word += text.slice(i + 1, end);
                i = end + 1;
            } else if (text[i] === "\\" && i + 1 < text.length && text[i + 1] !== "\n") {
                word += text[i + 1];
                i += 2;
            } else if (text[i] === "\\") {
                break;
            } else {
                word += text[i++];
            }
        }
        words.push(word);
    }
}
