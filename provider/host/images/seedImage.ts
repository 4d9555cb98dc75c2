import { chmod, mkdir, mkdtemp, rename, rm, utimes, writeFile } from "node:fs/promises";
import * as path from "node:path";
import { runTool, ToolTimeoutError, type ToolResult } from "../process/toolRun";
import { SEED_LABEL, type SeedFile, type SeedFormat } from "../../core/cloudInitSeed";

/**
 * Writes a cloud-init NoCloud seed image: ISO 9660 (label `cidata`, Rock Ridge and Joliet
 * names) with xorriso, or FAT with mkfs.fat and mtools. The same files give the same bytes:
 * every date in the image comes from SEED_TIME (file dates set on the staged files, volume dates
 * and UUIDs from SOURCE_DATE_EPOCH, which xorriso and mkfs.fat honour), owners and modes are
 * normalised (`-r`), and the FAT volume id is fixed.
 */

/** 2000-01-01T00:00:00Z: every timestamp in a seed image. */
export const SEED_TIME = 946684800;

/** Each tool gets this long; a seed is at most 1 MiB, so a run that takes longer is stuck. */
const TOOL_DEADLINE_MS = 60_000;

export class SeedImageError extends Error {
    constructor(
        readonly tool: string,
        readonly stderr: string,
    ) {
        super(`${tool} failed while writing a cloud-init seed: ${stderr.trim() || "no message"}`);
        this.name = "SeedImageError";
    }
}

export interface SeedBuild {
    files: readonly SeedFile[];
    format: SeedFormat;
    /** Where the image goes; must not exist. It is created owner-only (0600): user data holds secrets. */
    out: string;
    xorriso?: string;
    mkfsFat?: string;
    mcopy?: string;
}

function fixedEnv(): NodeJS.ProcessEnv {
    return { PATH: process.env.PATH, LC_ALL: "C", SOURCE_DATE_EPOCH: String(SEED_TIME), MTOOLS_SKIP_CHECK: "1" };
}

/**
 * Stages the files in a private directory beside `out` (never in /tmp: a seed holds secrets and
 * must live where the image lives), builds the image there, and renames it into place.
 */
export async function writeSeedImage(b: SeedBuild): Promise<void> {
    const staging = await mkdtemp(path.join(path.dirname(b.out), ".seed-"));
    try {
        const tree = path.join(staging, "files");
        await mkdir(tree, { mode: 0o700 });
        for (const f of b.files) {
            const file = path.join(tree, f.name);
            await writeFile(file, f.text, { mode: 0o600, flag: "wx" });
            await utimes(file, SEED_TIME, SEED_TIME);
        }
        await utimes(tree, SEED_TIME, SEED_TIME);
        const image = path.join(staging, "seed.img");
        if (b.format === "iso") await writeIso(tree, image, b);
        else await writeVfat(tree, image, b);
        await chmod(image, 0o600);
        await rename(image, b.out);
    } finally {
        await rm(staging, { recursive: true, force: true });
    }
}

/** One tool call, with a deadline, that dies with the provider (setpriv --pdeathsig, as every tool we run). */
async function run(tool: string, args: string[], what: string): Promise<void> {
    let r: ToolResult;
    try {
        r = await runTool(tool, args, { env: fixedEnv(), extendEnv: false, timeoutMs: TOOL_DEADLINE_MS, label: what });
    } catch (err) {
        if (err instanceof ToolTimeoutError)
            throw new SeedImageError(what, `did not finish within ${TOOL_DEADLINE_MS / 1000} s`);
        throw err;
    }
    if (r.exitCode !== 0)
        throw new SeedImageError(what, r.stderr || r.stdout || r.spawnError || `exit code ${r.exitCode}`);
}

async function writeIso(tree: string, image: string, b: SeedBuild): Promise<void> {
    // mkisofs emulation: -r gives every file owner 0 and mode 0444 (0555 for directories), so the
    // bytes do not depend on who built the seed; -J adds Joliet names for other readers.
    const args = [
        "-as",
        "mkisofs",
        "-quiet",
        "-input-charset",
        "utf-8",
        "-output",
        image,
        "-volid",
        SEED_LABEL,
        "-joliet",
        "-rock",
        tree,
    ];
    await run(b.xorriso ?? "xorriso", args, "xorriso -as mkisofs");
}

/** FAT needs a size up front: twice the data, plus room for the tables, never under 1 MiB. */
export function vfatBlocks(files: readonly SeedFile[]): number {
    const dataKiB = files.reduce((n, f) => n + Math.ceil(Buffer.byteLength(f.text) / 1024) + 4, 0);
    return Math.max(1024, 256 + 2 * dataKiB);
}

async function writeVfat(tree: string, image: string, b: SeedBuild): Promise<void> {
    const blocks = vfatBlocks(b.files);
    // --invariant fixes what mkfs.fat would draw from the clock or at random; -i fixes the volume id.
    await run(
        b.mkfsFat ?? "mkfs.fat",
        ["--invariant", "-i", "c1da7a00", "-n", SEED_LABEL.toUpperCase(), "-C", image, String(blocks)],
        "mkfs.fat",
    );
    // -m keeps the staged files' (fixed) dates; -o overwrites nothing that is not ours (the image is new).
    const sources = b.files.map((f) => path.join(tree, f.name));
    await run(b.mcopy ?? "mcopy", ["-m", "-o", "-i", image, ...sources, "::"], "mcopy");
}
