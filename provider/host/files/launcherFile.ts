import { lstat, mkdir, readFile, rm } from "node:fs/promises";
import * as path from "node:path";
import { sha256Hex } from "../../core/hash";
import { LAUNCHER_HEADER } from "../../core/launcher";
import { writeFileAtomic } from "./atomicFile";

/**
 * Launcher files on disk. A launcher is written whole or not at all (temp file, fsync, rename,
 * fsync of the directory), so a crash never leaves a half script that a user might run. A file
 * is ours when its second line is the header `renderLauncher` writes; anything else at the path
 * is the user's and is neither overwritten nor deleted.
 */

/** Owner-only: a launcher carries the kernel arguments, and those can carry passwords. */
export const LAUNCHER_MODE = 0o500;

export type LauncherFileState =
    | { state: "missing" }
    | { state: "present"; contentHash: string; ours: boolean }
    /** Something that is not a regular file (a directory, a symlink, a socket…). */
    | { state: "foreign"; kind: string };

/** Whether `content` carries the mark renderLauncher puts on every launcher. */
export function isOurLauncherText(content: string): boolean {
    return content.split("\n", 2)[1] === LAUNCHER_HEADER;
}

export async function inspectLauncherFile(file: string): Promise<LauncherFileState> {
    let st;
    try {
        st = await lstat(file);
    } catch (err) {
        if ((err as NodeJS.ErrnoException).code === "ENOENT") return { state: "missing" };
        throw err;
    }
    if (!st.isFile())
        return {
            state: "foreign",
            kind: st.isSymbolicLink() ? "symbolic link" : st.isDirectory() ? "directory" : "special file",
        };
    const content = await readFile(file, "utf8");
    return { state: "present", contentHash: sha256Hex(content), ours: isOurLauncherText(content) };
}

/**
 * Writes `content` to `file` atomically with `mode` (0500 unless asked), creating missing parent
 * directories owner-only.
 * Refuses when `file` exists and was not written by pulumi-qemu. Returns the content's hash,
 * which is what drift is judged by later.
 */
export async function writeLauncherFile(
    file: string,
    content: string,
    mode = LAUNCHER_MODE,
): Promise<{ contentHash: string }> {
    if (!isOurLauncherText(content))
        throw new Error("writeLauncherFile: content lacks the pulumi-qemu launcher header");
    const existing = await inspectLauncherFile(file);
    if (existing.state === "foreign")
        throw new Error(`refusing to replace ${file}: it is a ${existing.kind}, not a launcher pulumi-qemu wrote`);
    if (existing.state === "present" && !existing.ours) {
        throw new Error(
            `refusing to overwrite ${file}: it was not written by pulumi-qemu (no launcher header); move it away or choose another path`,
        );
    }
    const dir = path.dirname(file);
    await mkdir(dir, { recursive: true, mode: 0o700 });
    await writeFileAtomic(file, content, { mode, durable: true });
    return { contentHash: sha256Hex(content) };
}

export type RemoveOutcome = "removed" | "missing" | "not-ours";

/** Deletes `file` only when it is a launcher pulumi-qemu wrote; anything else is left where it is. */
export async function removeLauncherFile(file: string): Promise<RemoveOutcome> {
    const st = await inspectLauncherFile(file);
    if (st.state === "missing") return "missing";
    if (st.state !== "present" || !st.ours) return "not-ours";
    await rm(file, { force: true });
    return "removed";
}
