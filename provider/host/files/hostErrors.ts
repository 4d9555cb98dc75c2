import { statfs } from "node:fs/promises";
import * as path from "node:path";
import { formatSize } from "../../core/size";
import { InputError } from "../../core/validation";

/**
 * Errors from the host's filesystem, said in the user's terms: which field led there, which
 * file or filesystem, and what to do. A full disk is the host's problem, not a size the user
 * asked for; a path that cannot exist is the field's problem, not a raw ENOTDIR.
 */

const OUT_OF_SPACE = /No space left on device|Disk quota exceeded/i;

function codeOf(err: unknown): string | undefined {
    return (err as NodeJS.ErrnoException | undefined)?.code;
}

function textOf(err: unknown): string {
    const e = err as { message?: string; stderr?: string };
    return `${e?.message ?? ""}\n${e?.stderr ?? ""}`;
}

export function isOutOfSpace(err: unknown): boolean {
    return codeOf(err) === "ENOSPC" || codeOf(err) === "EDQUOT" || OUT_OF_SPACE.test(textOf(err));
}

/** The nearest existing directory at or above `p`, where statfs can be asked. */
async function nearestExisting(
    p: string,
): Promise<{ dir: string; fs: Awaited<ReturnType<typeof statfs>> } | undefined> {
    for (let dir = p; ; dir = path.dirname(dir)) {
        try {
            return { dir, fs: await statfs(dir) };
        } catch {
            if (dir === path.dirname(dir)) return undefined;
        }
    }
}

/** Which filesystem ran out, and how much it has now that the partial file is gone. */
async function fullMessage(dir: string): Promise<string> {
    const found = await nearestExisting(dir);
    if (!found) return `the filesystem holding ${dir} ran out of space`;
    const free = Number(found.fs.bavail) * Number(found.fs.bsize);
    const total = Number(found.fs.blocks) * Number(found.fs.bsize);
    return `the filesystem holding ${found.dir} ran out of space (it has ${formatSize(free)} free of ${formatSize(total)} now, with the partial file removed)`;
}

const PATH_PROBLEMS: Record<string, string> = {
    ENAMETOOLONG: "is too long for the filesystem (a name over 255 bytes, or a path over 4096)",
    ENOTDIR: "goes through something that is not a directory",
    ENOENT: "goes through a directory that does not exist",
    EACCES: "cannot be written by this user (permission denied)",
    EPERM: "cannot be written by this user (operation not permitted)",
    EROFS: "is on a read-only filesystem",
    ELOOP: "goes through too many symbolic links",
};

/**
 * `err`, raised while writing `file` for `field`, as an InputError naming the field when it is
 * one of the host's filesystem errors; anything else is returned as it was.
 */
export async function explainHostFileError(err: unknown, field: string, file: string): Promise<unknown> {
    if (err instanceof InputError) return err;
    const cause = ((err as Error)?.message ?? String(err)).trim().split("\n")[0].slice(0, 300);
    if (isOutOfSpace(err)) {
        return new InputError([
            {
                property: field,
                reason: `${await fullMessage(path.dirname(file))}; free some space there or choose another ${field} (${cause})`,
            },
        ]);
    }
    // mkdir -p reports a file in the way as EEXIST.
    const code =
        codeOf(err) === "EEXIST" && (err as NodeJS.ErrnoException).syscall === "mkdir" ? "ENOTDIR" : codeOf(err);
    const problem = PATH_PROBLEMS[code ?? ""];
    if (problem) {
        const shown = file.length > 200 ? `${file.slice(0, 200)}…` : file;
        return new InputError([{ property: field, reason: `${field} ${shown} ${problem} (${code})` }]);
    }
    return err;
}
