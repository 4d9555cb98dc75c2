import execa from "execa";
import { open } from "node:fs/promises";
import * as path from "node:path";
import { HashCache, hashFileCached, sha256File, type ReadCounter } from "../provider/host/fileHash";
import { fmtMs, fmtRatio, GiB, MiB, mbPerSecond, median, timed, verdict, withTempDir, writeBigFile, type BenchResult, type Row } from "./common";

/**
 * Benchmark 2: DiskImage's first hash of a 2 GiB image (hashFileCached with an empty cache)
 * against the command-line tools on the same file, and its cached re-hash (a cache reloaded
 * from disk, as the next `pulumi preview` does). The file is read once before timing so every
 * tool hashes from the page cache: the ratio compares hashing, not the disk. Same approach as
 * bench/hash.ts, at the size the issue asks for and with b3sum.
 */

interface Tool {
    name: string;
    cmd: string;
    args: string[];
    algorithm: "sha256" | "blake3";
}

const TOOLS: Tool[] = [
    { name: "sha256sum", cmd: "sha256sum", args: [], algorithm: "sha256" },
    { name: "b3sum", cmd: "b3sum", args: [], algorithm: "blake3" },
    { name: "b3sum --num-threads 1", cmd: "b3sum", args: ["--num-threads", "1"], algorithm: "blake3" },
    { name: "openssl dgst -sha256", cmd: "openssl", args: ["dgst", "-sha256", "-r"], algorithm: "sha256" },
];

async function present(cmd: string): Promise<boolean> {
    return (await execa(cmd, ["--version"], { reject: false })).exitCode === 0 || (await execa(cmd, ["version"], { reject: false })).exitCode === 0;
}

/** b3sum is in Debian (bookworm 1.2.0); as root the benchmark installs it, else it is reported missing. */
async function ensureB3sum(notes: string[]): Promise<boolean> {
    if (await present("b3sum")) return true;
    if (process.getuid?.() !== 0) {
        notes.push("b3sum is not installed and the benchmark is not running as root: `apt-get install b3sum` to compare with BLAKE3.");
        return false;
    }
    const r = await execa("apt-get", ["install", "-y", "--no-install-recommends", "b3sum"], { reject: false, env: { DEBIAN_FRONTEND: "noninteractive" } });
    if (r.exitCode !== 0) notes.push(`b3sum could not be installed (apt-get: ${r.stderr.trim().split("\n").pop()}): reported missing.`);
    return r.exitCode === 0 && (await present("b3sum"));
}

/** BLAKE3 in pure JavaScript (@noble/hashes, already a dependency), to show what switching algorithm in-process would give. */
async function nobleBlake3MBps(file: string, bytes: number): Promise<number> {
    const { blake3 } = require("@noble/hashes/blake3") as typeof import("@noble/hashes/blake3");
    const fh = await open(file, "r");
    try {
        const h = blake3.create({});
        const buf = Buffer.allocUnsafe(4 * MiB);
        const { ms } = await timed(async () => {
            for (let done = 0; done < bytes; ) {
                const { bytesRead } = await fh.read(buf, 0, Math.min(buf.length, bytes - done), done);
                if (!bytesRead) break;
                h.update(buf.subarray(0, bytesRead));
                done += bytesRead;
            }
            h.digest();
        });
        return mbPerSecond(bytes, ms);
    } finally {
        await fh.close();
    }
}

export async function runHashing(opts: { sizeBytes?: number; runs?: number } = {}): Promise<BenchResult> {
    const size = opts.sizeBytes ?? 2 * GiB;
    const runs = opts.runs ?? 3;
    const notes: string[] = [];
    const haveB3 = await ensureB3sum(notes);
    return withTempDir("pq-bench-hash-", async (dir) => {
        const file = path.join(dir, "image.raw");
        await writeBigFile(file, size);
        const { sha256 } = await sha256File(file); // warm-up: the file is in the page cache from here on
        const label = `${(size / GiB).toFixed(0)} GiB image`;

        const tools: { tool: Tool; ms: number }[] = [];
        for (const tool of TOOLS) {
            if (tool.cmd === "b3sum" && !haveB3) continue;
            if (tool.cmd === "openssl" && !(await present("openssl"))) continue;
            const times: number[] = [];
            for (let i = 0; i < runs; i++) {
                const r = await timed(() => execa(tool.cmd, [...tool.args, file]));
                if (tool.algorithm === "sha256" && r.value.stdout.split(" ")[0] !== sha256) throw new Error(`${tool.name} disagrees with sha256File`);
                times.push(r.ms);
            }
            tools.push({ tool, ms: median(times) });
        }

        const cold: number[] = [];
        for (let i = 0; i < runs; i++) {
            const cache = await HashCache.load(path.join(dir, `cache-${i}.json`));
            const counter: ReadCounter = { files: 0, bytes: 0 };
            const r = await timed(() => hashFileCached(file, cache, counter));
            if (r.value.cached || counter.bytes !== size || r.value.sha256 !== sha256) throw new Error("the first hash did not read the whole file");
            cold.push(r.ms);
            await cache.save();
        }
        const warm: number[] = [];
        const counter: ReadCounter = { files: 0, bytes: 0 };
        for (let i = 0; i < 21; i++) {
            const r = await timed(async () => hashFileCached(file, await HashCache.load(path.join(dir, "cache-0.json")), counter));
            if (!r.value.cached) throw new Error("the re-hash was not answered by the cache");
            warm.push(r.ms);
        }
        if (counter.bytes !== 0) throw new Error(`the cached re-hash read ${counter.bytes} bytes`);

        const first = median(cold);
        const fastest = tools.reduce((a, b) => (b.ms < a.ms ? b : a));
        const fastestSha = tools.filter((t) => t.tool.algorithm === "sha256").reduce((a, b) => (b.ms < a.ms ? b : a));
        const rows: Row[] = [
            {
                bench: "2 hashing",
                measure: `first hash of a ${label} (SHA-256, node:crypto) vs the fastest tool, ${fastest.tool.name} (median of ${runs})`,
                provider: `${mbPerSecond(size, first).toFixed(0)} MB/s (${fmtMs(first)})`,
                reference: `${mbPerSecond(size, fastest.ms).toFixed(0)} MB/s`,
                ratio: fmtRatio(first / fastest.ms),
                target: "≤ 1.2×",
                verdict: verdict(first / fastest.ms <= 1.2),
            },
            ...tools.map((t) => ({
                bench: "2 hashing",
                measure: `… vs ${t.tool.name} (${t.tool.algorithm === "sha256" ? "SHA-256" : "BLAKE3"})`,
                provider: `${mbPerSecond(size, first).toFixed(0)} MB/s`,
                reference: `${mbPerSecond(size, t.ms).toFixed(0)} MB/s (${fmtMs(t.ms)})`,
                ratio: fmtRatio(first / t.ms),
            })),
            {
                bench: "2 hashing",
                measure: `cached re-hash of the ${label} (cache file reloaded, stat only; median of 21)`,
                provider: fmtMs(median(warm)),
                reference: `first hash ${fmtMs(first)}`,
                ratio: `${fmtRatio(first / median(warm))} faster`,
                target: "> 1000× faster",
                verdict: verdict(first / median(warm) > 1000),
            },
        ];
        if (!haveB3) rows.push({ bench: "2 hashing", measure: "b3sum", provider: "", reference: "missing", ratio: "" });
        if (first / fastest.ms > 1.2) {
            const probe = Math.min(size, 256 * MiB);
            const noble = await nobleBlake3MBps(file, probe);
            rows.push({ bench: "2 hashing", measure: "BLAKE3 in JavaScript (@noble/hashes 1.x), 256 MiB", provider: `${noble.toFixed(0)} MB/s`, reference: `${fastest.tool.name} ${mbPerSecond(size, fastest.ms).toFixed(0)} MB/s`, ratio: fmtRatio(mbPerSecond(size, fastest.ms) / noble) + " slower" });
            notes.push(
                `First hash vs ${fastest.tool.name}: ${fmtRatio(first / fastest.ms)} (target 1.2×). ` +
                    (fastest.tool.algorithm === "blake3"
                        ? `The gap is the algorithm, not the code: against the fastest SHA-256 tool (${fastestSha.tool.name}) the provider is at ${fmtRatio(first / fastestSha.ms)}. ` +
                          `BLAKE3 is faster per byte than SHA-256 even with SHA-NI, and node:crypto has no BLAKE3; @noble/hashes' JavaScript BLAKE3 runs at ${noble.toFixed(0)} MB/s here, slower than node's SHA-256. ` +
                          `Meeting the target needs a native BLAKE3 in provider/host/fileHash.ts sha256File (a native addon, or streaming through \`b3sum\` when present) and a new hash name in the cache and inputHash (a format bump: every cached hash and every DiskImage inputHash of a file source would change, replacing images on upgrade).`
                        : `provider/host/fileHash.ts sha256File is slower than ${fastest.tool.name} with the same algorithm: look at the read size and the double buffering.`),
            );
        }
        return { rows, notes };
    }, "/var/tmp");
}
