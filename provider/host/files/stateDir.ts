import { lstatSync } from "node:fs";
import { chmod, lstat, mkdir, rmdir, stat } from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import { refuseImpossibleStateDir } from "./stateDirCheck";

/**
 * Where the provider keeps what it makes when the user names no path: the `stateDir` input,
 * else $PULUMI_QEMU_STATE_DIR, else $XDG_STATE_HOME/pulumi-qemu, else ~/.local/state/pulumi-qemu.
 *
 * The state directory may be the user's own (a shared, sticky /tmp-like directory, say): the
 * provider never changes its mode. What it keeps there goes into directories of its own
 * (`images`, `vms`, `launchers`), which it creates owner-only and, when they already exist,
 * trusts only while they are real directories of this user that nobody else can enter: a
 * symbolic link planted in their place is refused, never followed.
 */
export function resolveStateDir(explicit?: string, env: NodeJS.ProcessEnv = process.env): string {
    if (explicit) return path.resolve(explicit);
    if (env.PULUMI_QEMU_STATE_DIR) return path.resolve(env.PULUMI_QEMU_STATE_DIR);
    if (env.XDG_STATE_HOME) return path.join(path.resolve(env.XDG_STATE_HOME), "pulumi-qemu");
    return path.join(os.homedir(), ".local", "state", "pulumi-qemu");
}

export class StateDirError extends Error {
    constructor(message: string) {
        super(message);
        this.name = "StateDirError";
    }
}

const myUid = (): number | undefined => (typeof process.getuid === "function" ? process.getuid() : undefined);

function octal(mode: number): string {
    return (mode & 0o7777).toString(8).padStart(4, "0");
}

/**
 * The state directory itself: created owner-only when missing (with any missing parents), and
 * otherwise taken as it is. A directory that anyone may rename things in (writable by others
 * without the sticky bit) could have our directories swapped under us, so it is refused.
 */
export async function ensureStateDir(dir: string): Promise<string> {
    // Under /proc or on sysfs, mkdir -p would fail in odd ways or spin: refused first, by name.
    await refuseImpossibleStateDir(dir);
    await mkdir(dir, { recursive: true, mode: 0o700 });
    const st = await stat(dir);
    if (!st.isDirectory()) throw new StateDirError(`stateDir ${dir} is not a directory`);
    const othersWrite = (st.mode & 0o022) !== 0;
    const sticky = (st.mode & 0o1000) !== 0;
    if (othersWrite && !sticky) {
        throw new StateDirError(
            `stateDir ${dir} (mode ${octal(st.mode)}) can be written by other users without the sticky bit, so they could swap what pulumi-qemu keeps there; choose a directory of your own (pulumi-qemu does not change the mode of a directory it did not create)`,
        );
    }
    return dir;
}

/**
 * `dir`, a directory of the provider's own directly under the state directory (or under
 * another directory of its own): created 0700 when missing; when present, it must be a real
 * directory (not a link), owned by this user, that no one else can enter.
 */
export async function ensureOwnDir(dir: string): Promise<string> {
    try {
        await mkdir(dir, { mode: 0o700 });
        // Ours, just made: the umask may have taken bits away, never added any; say exactly 0700.
        await chmod(dir, 0o700);
        return dir;
    } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
    }
    await assertOwnDir(dir);
    return dir;
}

/** Refuses `dir` unless it is a real directory of this user's that no one else can enter. */
export async function assertOwnDir(dir: string): Promise<void> {
    const problem = ownDirProblem(await lstat(dir));
    if (problem)
        throw new StateDirError(
            `${dir} ${problem}; pulumi-qemu keeps its files there and will not use it. Move it away (pulumi-qemu makes a new one), or choose another stateDir`,
        );
}

function ownDirProblem(st: {
    isSymbolicLink(): boolean;
    isDirectory(): boolean;
    uid: number;
    mode: number;
}): string | undefined {
    if (st.isSymbolicLink()) return "is a symbolic link";
    if (!st.isDirectory()) return "is not a directory";
    const uid = myUid();
    if (uid !== undefined && st.uid !== uid) return `belongs to uid ${st.uid}, not to this user`;
    if ((st.mode & 0o077) !== 0) return `can be entered by other users (mode ${octal(st.mode)})`;
    return undefined;
}

/**
 * Whether every directory from below `root` down to `dir` is still a real directory of ours:
 * asked before deleting files by a path under the state directory, so that a directory swapped
 * for a link never sends a delete elsewhere.
 */
export async function ownDirChain(root: string, dir: string): Promise<{ ok: true } | { ok: false; why: string }> {
    const rel = path.relative(root, dir);
    if (rel === "" || rel.startsWith("..") || path.isAbsolute(rel))
        return { ok: false, why: `${dir} is not under the state directory ${root}` };
    let cur = root;
    for (const part of rel.split(path.sep)) {
        cur = path.join(cur, part);
        let st;
        try {
            st = await lstat(cur);
        } catch (err) {
            return { ok: false, why: `${cur}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}` };
        }
        const problem = ownDirProblem(st);
        if (problem) return { ok: false, why: `${cur} ${problem}` };
    }
    return { ok: true };
}

/**
 * Whether a file the provider reads back (a cache, a record) can be trusted: a regular file,
 * not a link, owned by this user and writable by no one else. In a shared state directory
 * another user could plant one; it is then ignored, not believed.
 */
export function isOwnFileSync(file: string): boolean {
    let st;
    try {
        st = lstatSync(file);
    } catch {
        return false;
    }
    const uid = myUid();
    return st.isFile() && (uid === undefined || st.uid === uid) && (st.mode & 0o022) === 0;
}

/** Removes `dir` if nothing is left in it; anything someone else put there keeps it alive. */
export async function removeDirIfEmpty(dir: string): Promise<void> {
    try {
        await rmdir(dir);
    } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code !== "ENOENT" && code !== "ENOTEMPTY") throw err;
    }
}
