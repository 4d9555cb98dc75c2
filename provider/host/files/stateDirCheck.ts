import { stat, statfs } from "node:fs/promises";
import * as path from "node:path";
import { InputError } from "../../core/validation";

/**
 * A state directory must be somewhere files can be kept: not in the kernel's pseudo filesystems,
 * where creating directories fails oddly or, as with /proc, a recursive mkdir spins a core. The
 * check looks at the path and at the filesystem of its nearest existing ancestor (statfs), so a
 * state directory that does not exist yet is judged by where it would be created.
 */

/** Kernel pseudo filesystems (statfs f_type, from linux/magic.h) where no state can live. */
const PSEUDO_FILESYSTEMS: ReadonlyMap<number, string> = new Map([
    [0x9fa0, "proc"],
    [0x62656572, "sysfs"],
    [0x1cd1, "devpts"],
    [0x27e0eb, "cgroup"],
    [0x63677270, "cgroup2"],
    [0x64626720, "debugfs"],
    [0x74726163, "tracefs"],
    [0x73636673, "securityfs"],
    [0xcafe4a11, "bpf"],
    [0x6165676c, "pstore"],
    [0x62656570, "configfs"],
    [0xde5e81e4, "efivarfs"],
    [0x19800202, "mqueue"],
    [0x65735543, "fusectl"],
    [0x42494e4d, "binfmt_misc"],
]);

/** Trees that hold the kernel's and devices' files, whatever filesystem they are mounted from (devtmpfs looks like tmpfs). */
const PSEUDO_TREES = ["/proc", "/sys", "/dev"];

/**
 * Refuses `dir` (what `field` names) when no state directory can work there: under /proc, /sys
 * or /dev, on a pseudo filesystem, or below something that is not a directory. Returns the
 * resolved path. Reads only; creates nothing.
 */
export async function refuseImpossibleStateDir(dir: string, field = "stateDir"): Promise<string> {
    const resolved = path.resolve(dir);
    const tree = PSEUDO_TREES.find((t) => resolved === t || resolved.startsWith(`${t}/`));
    if (tree)
        throw problem(
            field,
            `${field} ${resolved} is under ${tree}, which holds the kernel's own files: choose a directory on a real filesystem (for example under your home directory)`,
        );

    const { ancestor, isDir } = await nearestExisting(resolved);
    if (!isDir) throw problem(field, `${field} ${resolved} cannot be created: ${ancestor} is a file, not a directory`);
    const fs = await statfs(ancestor);
    const kind = PSEUDO_FILESYSTEMS.get(Number(fs.type));
    if (kind) {
        throw problem(
            field,
            `${field} ${resolved} is on a ${kind} filesystem (at ${ancestor}), where files cannot be kept: choose a directory on a real filesystem`,
        );
    }
    return resolved;
}

async function nearestExisting(p: string): Promise<{ ancestor: string; isDir: boolean }> {
    for (let cur = p; ; cur = path.dirname(cur)) {
        try {
            const st = await stat(cur);
            return { ancestor: cur, isDir: st.isDirectory() };
        } catch (err) {
            const code = (err as NodeJS.ErrnoException).code;
            if (code === "ENOTDIR") continue; // a file further up: keep climbing to name it
            if (code !== "ENOENT" || cur === path.dirname(cur)) throw err;
        }
    }
}

function problem(field: string, reason: string): InputError {
    return new InputError([{ property: field, reason }]);
}
