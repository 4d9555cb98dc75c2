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

export interface LauncherOptions {
    /** Overlays to create before QEMU starts, each only when missing (persistent VMs keep their writes). */
    overlays?: OverlayStep[];
}

export const LAUNCHER_HEADER = "# Written by pulumi-qemu. Edits are reported as drift and replaced on the next `pulumi up`.";

/** Quotes one word for POSIX sh. NUL cannot be passed in an argv at all, so it is refused. */
export function shellQuote(word: string): string {
    if (word.includes("\0")) throw new Error("a shell word cannot contain NUL");
    if (/^[A-Za-z0-9_@%+=:,./-]+$/.test(word)) return word;
    return `'${word.replace(/'/g, `'\\''`)}'`;
}

function commandLine(argv: readonly string[]): string {
    return argv.map(shellQuote).join(" \\\n    ");
}

function overlayStep(step: OverlayStep): string {
    const create = commandLine([step.qemuImg, "create", "-q", "-f", "qcow2", "-b", step.base, "-F", step.baseFormat, step.overlay]);
    return `[ -e ${shellQuote(step.overlay)} ] || ${create}`;
}

/** The text of a launcher that runs `argv`, passing the launcher's own arguments on to QEMU. */
export function renderLauncher(argv: readonly string[], opts: LauncherOptions = {}): string {
    if (argv.length === 0) throw new Error("renderLauncher needs at least the QEMU binary");
    const lines = ["#!/bin/sh", LAUNCHER_HEADER, "set -e"];
    for (const step of opts.overlays ?? []) lines.push(overlayStep(step));
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
