import { randomBytes } from "node:crypto";
import { mkdir, readdir, readFile, rename, rm, stat, writeFile } from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import { hashValue } from "../../provider/core/hash";

/**
 * The cache the test guests are built into, once per machine and outside the repository:
 * `${PQ_DEBIAN_CACHE:-${XDG_CACHE_HOME:-~/.cache}/pulumi-qemu-tests}/<prefix>-<recipe>-<release>`.
 * `<recipe>` hashes everything the build is made from, `<release>` the mirror's Release date for
 * the suite, which changes exactly when its package versions do. A build goes into a
 * `.partial-<random>` directory renamed into place when complete (with its `done.json` last), so
 * a killed build leaves nothing that looks finished and two parallel builds never share files.
 */

export function guestCacheRoot(env: NodeJS.ProcessEnv = process.env): string {
    if (env.PQ_DEBIAN_CACHE) return path.resolve(env.PQ_DEBIAN_CACHE);
    const base = env.XDG_CACHE_HOME ? path.resolve(env.XDG_CACHE_HOME) : path.join(os.homedir(), ".cache");
    return path.join(base, "pulumi-qemu-tests");
}

/** What every build records in its `done.json`; a build adds its own fields. */
export interface BuildRecord {
    buildSeconds: number;
    release: string;
}

export interface CachedBuildOptions<D extends BuildRecord> {
    /** The cache directory (default guestCacheRoot()). */
    root?: string;
    /** Names the kind of build: `<prefix>-<recipe>-<release>`. */
    prefix: string;
    /** Everything the build is made from; its hash names the directory. */
    recipe: unknown;
    mirror: string;
    suite: string;
    log: (line: string) => void;
    /** Builds into `dir` (fresh, 0700) and returns what done.json records. */
    build: (dir: string, release: string) => Promise<D>;
}

/** The cached build of this recipe and release, made first when there is none. */
export async function cachedBuild<D extends BuildRecord>(
    o: CachedBuildOptions<D>,
): Promise<{ dir: string; done: D; built: boolean }> {
    const root = o.root ?? guestCacheRoot();
    const recipeKey = hashValue(o.recipe).slice(0, 12);
    const release = await releaseStamp(o.mirror, o.suite).catch((err: Error) => {
        o.log(
            `cannot read the mirror's Release file (${err.message}); using the newest cached build of this recipe if there is one`,
        );
        return undefined;
    });
    const dir = release
        ? path.join(root, `${o.prefix}-${recipeKey}-${hashValue(release).slice(0, 12)}`)
        : await newestBuild(root, `${o.prefix}-${recipeKey}-`);
    if (dir) {
        const cached = await readDone<D>(dir);
        if (cached) return { dir, done: cached, built: false };
    }
    if (!release || !dir)
        throw new Error(
            `no ${o.prefix} build is cached under ${root} and the mirror ${o.mirror} cannot be reached to build one`,
        );
    await mkdir(root, { recursive: true, mode: 0o700 });
    const partial = `${dir}.partial-${randomBytes(4).toString("hex")}`;
    try {
        await mkdir(partial, { mode: 0o700 });
        const done = await o.build(partial, release);
        await writeFile(path.join(partial, "done.json"), JSON.stringify(done, null, 2) + "\n", { mode: 0o600 });
        await rename(partial, dir).catch(async (err: NodeJS.ErrnoException) => {
            if (err.code !== "ENOTEMPTY" && err.code !== "EEXIST") throw err;
            // Another process finished the same build first: theirs is as good as ours. A directory
            // without done.json is a build from before builds were marked done: ours replaces it.
            if (await readDone<D>(dir)) return;
            const stale = `${dir}.stale-${randomBytes(4).toString("hex")}`;
            await rename(dir, stale);
            await rm(stale, { recursive: true, force: true });
            await rename(partial, dir);
        });
        return { dir, done: (await readDone<D>(dir)) ?? done, built: true };
    } finally {
        await rm(partial, { recursive: true, force: true });
    }
}

export async function readDone<D>(dir: string): Promise<D | undefined> {
    try {
        return JSON.parse(await readFile(path.join(dir, "done.json"), "utf8")) as D;
    } catch {
        return undefined;
    }
}

async function newestBuild(root: string, namePrefix: string): Promise<string | undefined> {
    const names = await readdir(root).catch(() => [] as string[]);
    let best: { dir: string; at: number } | undefined;
    for (const n of names.filter(
        (n) => n.startsWith(namePrefix) && !n.includes(".partial-") && !n.includes(".stale-"),
    )) {
        const t = await stat(path.join(root, n, "done.json")).then(
            (st) => st.mtimeMs,
            () => undefined,
        );
        if (t !== undefined && (!best || t > best.at)) best = { dir: path.join(root, n), at: t };
    }
    return best?.dir;
}

/** The suite's Release `Date:`: the archive writes a new Release, with a new date, whenever a package in it changes. */
export async function releaseStamp(mirror: string, suite: string): Promise<string> {
    const url = `${mirror.replace(/\/$/, "")}/dists/${suite}/InRelease`;
    const res = await fetch(url, { signal: AbortSignal.timeout(20_000) });
    if (!res.ok) throw new Error(`${url}: HTTP ${res.status}`);
    const text = await res.text();
    const date = /^Date: (.+)$/m.exec(text)?.[1];
    if (!date) throw new Error(`${url} has no Date field`);
    // The Date line alone: the signature block changes when the archive is re-signed, the contents do not.
    return `${suite} ${date}`;
}

/** What every cached guest's `ensure…` takes. */
export interface GuestOptions {
    cacheRoot?: string;
    /** Progress lines; default: stderr with the elapsed time. */
    log?: (line: string) => void;
}

/**
 * A guest's `ensure…` from its `buildOrReuse`: with the default options one build (or cache
 * lookup) per process, shared by every caller, and tried again after a failure; with a cache
 * root or a log of their own, a call of its own.
 */
export function oncePerProcess<T>(
    buildOrReuse: (opts: GuestOptions) => Promise<T>,
): (opts?: GuestOptions) => Promise<T> {
    let memo: Promise<T> | undefined;
    return (opts = {}) => {
        if (opts.cacheRoot || opts.log) return buildOrReuse(opts);
        memo ??= buildOrReuse(opts).catch((err) => {
            memo = undefined;
            throw err;
        });
        return memo;
    };
}

/** `opts.log`, or progress lines on stderr as "[label 12.3s] line", timed from now. */
export function progressLog(label: string, log?: (line: string) => void): (line: string) => void {
    const started = Date.now();
    return (
        log ?? ((line) => process.stderr.write(`[${label} ${((Date.now() - started) / 1000).toFixed(1)}s] ${line}\n`))
    );
}
