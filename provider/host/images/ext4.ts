import { runTool, ToolTimeoutError, type ToolResult } from "../process/toolRun";

/**
 * ext4 images filled from a host directory without root: `mkfs.ext4 -d`, then `debugfs` to give
 * every inode the same owner (0:0) and the same timestamps. mkfs copies each file's uid, gid,
 * atime, mtime and ctime from the host, and ctime cannot be set from user space, so without the
 * second step two builds of one tree never match byte for byte.
 */

export class Ext4Error extends Error {
    constructor(
        readonly tool: string,
        readonly stderr: string,
    ) {
        super(`${tool} failed: ${stderr.trim() || "no message"}`);
        this.name = "Ext4Error";
    }
}

/** Every timestamp in the image, in seconds since the epoch (as SOURCE_DATE_EPOCH=1 would). */
export const FIXED_TIME = 1;

export interface Ext4Build {
    /** Directory whose contents become the filesystem's root. */
    sourceDir: string;
    /** An existing empty file, already sized; mkfs writes the filesystem into it. */
    imageFile: string;
    uuid: string;
    hashSeed: string;
    label?: string;
    /** Paths relative to the root, "/"-separated: every inode to normalise besides the root. */
    paths: readonly string[];
    /** Keep the owners mkfs copied from the tree (the root's given here) instead of making every inode root's. */
    preserveOwners?: { rootUid: number; rootGid: number };
    mkfs?: string;
    debugfs?: string;
    /** Stall limit for each tool (defaults to EXT4_STALL_MS). */
    stallMs?: number;
}

/** Environment that pins what mkfs and debugfs would otherwise take from the clock. */
function fixedEnv(): NodeJS.ProcessEnv {
    return { ...process.env, E2FSPROGS_FAKE_TIME: String(FIXED_TIME), LC_ALL: "C" };
}

/**
 * mkfs.ext4 -d and debugfs copy and rewrite as much as the tree holds, so no fixed deadline fits;
 * they are stopped once they have read and written nothing for this long (see toolRun).
 */
export const EXT4_STALL_MS = 120_000;

export async function buildExt4(b: Ext4Build): Promise<void> {
    await runMkfs(b);
    await normaliseInodes(b);
}

async function runMkfs(b: Ext4Build): Promise<void> {
    const rootOwner = b.preserveOwners ? `${b.preserveOwners.rootUid}:${b.preserveOwners.rootGid}` : "0:0";
    const extended = [`hash_seed=${b.hashSeed}`, `root_owner=${rootOwner}`].join(",");
    const args = [
        "-q",
        "-F",
        "-t",
        "ext4",
        "-U",
        b.uuid,
        "-E",
        extended,
        ...(b.label ? ["-L", b.label] : []),
        "-d",
        b.sourceDir,
        b.imageFile,
    ];
    const label = `mkfs.ext4 ${args.join(" ")}`;
    const r = await runExt4Tool(b.mkfs ?? "mkfs.ext4", args, label, b.stallMs);
    if (r.exitCode !== 0) throw new Ext4Error(label, r.stderr || r.stdout || spawnFailure(r));
}

async function runExt4Tool(
    command: string,
    args: string[],
    label: string,
    stallMs = EXT4_STALL_MS,
    input?: string,
): Promise<ToolResult> {
    try {
        return await runTool(command, args, { env: fixedEnv(), extendEnv: false, stallMs, label, input });
    } catch (err) {
        if (err instanceof ToolTimeoutError) throw new Ext4Error(label, `${command} ${err.why} and was stopped`);
        throw err;
    }
}

/** debugfs's parser takes double-quoted words with "" for a quote; line breaks are refused upstream. */
export function debugfsQuote(p: string): string {
    if (/[\n\r\0]/.test(p)) throw new Error(`debugfsQuote: ${JSON.stringify(p)} has a line break`);
    return `"${p.replace(/"/g, '""')}"`;
}

export function normaliseCommands(paths: readonly string[], preserveOwners = false): string {
    const times = ["atime", "mtime", "ctime", "crtime"].map((f) => `${f} ${FIXED_TIME}`);
    const fields = preserveOwners ? times : ["uid 0", "gid 0", ...times];
    const lines: string[] = [];
    for (const rel of ["", ...paths]) {
        const target = debugfsQuote(`/${rel}`);
        for (const f of fields) lines.push(`sif ${target} ${f}`);
    }
    return lines.join("\n") + "\n";
}

/** The commands go in on stdin ("-f -"): no temp file to write, to protect, or to leak on a crash. */
async function normaliseInodes(b: Ext4Build): Promise<void> {
    const label = `debugfs -w -f - ${b.imageFile}`;
    const r = await runExt4Tool(
        b.debugfs ?? "debugfs",
        ["-w", "-f", "-", b.imageFile],
        label,
        b.stallMs,
        normaliseCommands(b.paths, b.preserveOwners !== undefined),
    );
    // debugfs exits 0 even when a command fails; its complaints are the stderr lines after the banner.
    const complaints = r.stderr.split("\n").filter((l) => l.trim() && !/^debugfs [0-9.]+ \(/.test(l));
    if (r.exitCode !== 0 || complaints.length)
        throw new Ext4Error(label, complaints.join("\n") || r.stderr || spawnFailure(r));
}

function spawnFailure(r: ToolResult): string {
    return r.spawnError ?? (r.signal ? `killed by ${r.signal}` : `exit code ${r.exitCode}`);
}
