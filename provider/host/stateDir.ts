import { mkdir, chmod, stat } from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";

/**
 * Where the provider keeps what it makes when the user names no path: the `stateDir` input,
 * else $PULUMI_QEMU_STATE_DIR, else $XDG_STATE_HOME/pulumi-qemu, else ~/.local/state/pulumi-qemu.
 */
export function resolveStateDir(explicit?: string, env: NodeJS.ProcessEnv = process.env): string {
    if (explicit) return path.resolve(explicit);
    if (env.PULUMI_QEMU_STATE_DIR) return path.resolve(env.PULUMI_QEMU_STATE_DIR);
    if (env.XDG_STATE_HOME) return path.join(path.resolve(env.XDG_STATE_HOME), "pulumi-qemu");
    return path.join(os.homedir(), ".local", "state", "pulumi-qemu");
}

/**
 * Creates `dir` (and parents) readable by the owner only. A directory that already exists is
 * tightened to 0700 only when we own it; one owned by someone else is refused, because QMP
 * sockets and images placed there would be open to them.
 */
export async function ensurePrivateDir(dir: string): Promise<string> {
    await mkdir(dir, { recursive: true, mode: 0o700 });
    const st = await stat(dir);
    if (typeof process.getuid === "function" && st.uid !== process.getuid()) {
        throw new Error(`state directory ${dir} belongs to uid ${st.uid}, not to this user; choose another stateDir`);
    }
    if ((st.mode & 0o077) !== 0) await chmod(dir, 0o700);
    return dir;
}
