import { randomBytes } from "node:crypto";
import { open, rename, rm } from "node:fs/promises";
import * as path from "node:path";

export interface AtomicWriteOptions {
    /** Default 0600: everything the provider writes is the user's alone unless said otherwise. */
    mode?: number;
    /**
     * fsync the file before the rename and the directory after it, so that a crash leaves the
     * old content or the new, never an empty file. Worth it for what a user runs or trusts
     * (launchers, ownership records); a cache can do without.
     */
    durable?: boolean;
}

/**
 * Writes `content` to `file` whole or not at all: into a fresh temp file beside it, then renamed
 * over it, so readers (and concurrent writers) see either the old file or the new one.
 */
export async function writeFileAtomic(file: string, content: string, opts: AtomicWriteOptions = {}): Promise<void> {
    const dir = path.dirname(file);
    const temp = path.join(dir, `.${path.basename(file)}.${randomBytes(6).toString("hex")}.tmp`);
    try {
        const fh = await open(temp, "wx", opts.mode ?? 0o600);
        try {
            await fh.writeFile(content, "utf8");
            // The mode given to open() is filtered by the umask; the file must have exactly this one.
            await fh.chmod(opts.mode ?? 0o600);
            if (opts.durable) await fh.sync();
        } finally {
            await fh.close();
        }
        await rename(temp, file);
    } catch (err) {
        await rm(temp, { force: true });
        throw err;
    }
    if (opts.durable) await syncDir(dir);
}

/** Makes a rename durable: without it a crash may bring back the old directory entry. */
async function syncDir(dir: string): Promise<void> {
    const dh = await open(dir, "r");
    try {
        await dh.sync();
    } finally {
        await dh.close();
    }
}
