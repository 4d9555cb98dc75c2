import execa from "execa";
import { randomBytes } from "node:crypto";
import { mkdtemp, open, rm, utimes } from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import { HashCache, hashFileCached, READ_BUFFER_BYTES, sha256File, type ReadCounter } from "../provider/host/fileHash";

/**
 * Content hashing as DiskImage does it, side by side with sha256sum on the same file:
 *   npx tsc -p . && node bin/bench/hash.js [file] [runs]
 * Without a file, a 1 GiB file of random bytes is written to a temp dir (and removed after).
 * Both tools read from the page cache after a warm-up read, so the ratio compares hashing, not the disk.
 */

const MiB = 1024 * 1024;

async function writeRandomFile(file: string, bytes: number): Promise<void> {
    const fh = await open(file, "wx", 0o600);
    try {
        const chunk = randomBytes(16 * MiB);
        for (let done = 0; done < bytes; done += chunk.length) await fh.write(chunk, 0, Math.min(chunk.length, bytes - done));
    } finally {
        await fh.close();
    }
}

async function timed<T>(fn: () => Promise<T>): Promise<{ ms: number; value: T }> {
    const t0 = process.hrtime.bigint();
    const value = await fn();
    return { ms: Number(process.hrtime.bigint() - t0) / 1e6, value };
}

function mbps(bytes: number, ms: number): string {
    return ((bytes / 1e6) / (ms / 1000)).toFixed(0);
}

async function main(): Promise<void> {
    const runs = Number(process.argv[3] ?? 3);
    const dir = await mkdtemp(path.join(os.tmpdir(), "pq-bench-hash-"));
    try {
        const file = process.argv[2] || path.join(dir, "random.bin");
        if (!process.argv[2]) {
            await writeRandomFile(file, 1024 * MiB);
            // Old enough that the cache trusts the stamp (see racyWindowNs).
            const old = new Date(Date.now() - 60_000);
            await utimes(file, old, old);
        }
        const size = (await sha256File(file)).bytes; // warm-up: the file is now in the page cache
        console.log(`file: ${file} (${(size / MiB).toFixed(0)} MiB), ${runs} runs each, best of runs`);

        // openssl uses the same SHA-NI code as node:crypto, sha256sum (coreutils 9.1) does not: a second yardstick.
        const haveOpenssl = (await execa("openssl", ["version"], { reject: false })).exitCode === 0;
        let best = { sum: Infinity, ossl: Infinity, node1: Infinity, node4: Infinity, node16: Infinity };
        const digests = new Set<string>();
        for (let i = 0; i < runs; i++) {
            const s = await timed(() => execa("sha256sum", [file]));
            digests.add(s.value.stdout.split(" ")[0]);
            if (haveOpenssl) {
                const o = await timed(() => execa("openssl", ["dgst", "-sha256", "-r", file]));
                digests.add(o.value.stdout.split(" ")[0]);
                best.ossl = Math.min(best.ossl, o.ms);
            }
            const n1 = await timed(() => sha256File(file, undefined, MiB));
            const n4 = await timed(() => sha256File(file, undefined, READ_BUFFER_BYTES));
            const n16 = await timed(() => sha256File(file, undefined, 16 * MiB));
            for (const r of [n1, n4, n16]) digests.add(r.value.sha256);
            best = { ...best, sum: Math.min(best.sum, s.ms), node1: Math.min(best.node1, n1.ms), node4: Math.min(best.node4, n4.ms), node16: Math.min(best.node16, n16.ms) };
        }
        if (digests.size !== 1) throw new Error(`digests differ: ${[...digests].join(" ")}`);

        const cache = await HashCache.load(path.join(dir, "hash-cache.json"));
        const counter: ReadCounter = { files: 0, bytes: 0 };
        const cold = await timed(() => hashFileCached(file, cache, counter));
        await cache.save();
        const reloaded = await HashCache.load(path.join(dir, "hash-cache.json"));
        const warm = await timed(() => hashFileCached(file, reloaded, counter));
        if (!warm.value.cached) throw new Error("the second hash was not answered by the cache");

        const rows: [string, number][] = [
            ["sha256sum", best.sum],
            ...(haveOpenssl ? [["openssl dgst -sha256", best.ossl] as [string, number]] : []),
            ["node:crypto, 1 MiB reads", best.node1],
            ["node:crypto, 4 MiB reads (used)", best.node4],
            ["node:crypto, 16 MiB reads", best.node16],
            ["hashFileCached, cold", cold.ms],
        ];
        for (const [name, ms] of rows) console.log(`${name.padEnd(34)} ${ms.toFixed(0).padStart(6)} ms  ${mbps(size, ms).padStart(6)} MB/s  ${(best.sum / ms).toFixed(2)}× sha256sum`);
        console.log(`${"hashFileCached, cached (reloaded)".padEnd(34)} ${warm.ms.toFixed(2).padStart(6)} ms  (bytes read: ${counter.bytes - size})`);
    } finally {
        await rm(dir, { recursive: true, force: true });
    }
}

main().catch((err) => {
    console.error(err);
    process.exit(1);
});
