import execa from "execa";
import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { open, rm } from "node:fs/promises";
import * as path from "node:path";
import { parseChecksum, type Checksum } from "../provider/core/imageUrl";
import { cachedDownload, downloadsDir } from "../provider/host/download/downloadCache";
import { imageFromUrl } from "../provider/host/download/imageDownload";
import {
    fmtMs,
    fmtRatio,
    mbPerSecond,
    median,
    MiB,
    timed,
    withTempDir,
    writeBigFile,
    type BenchResult,
    type Row,
} from "./common";

/**
 * Images by URL: download throughput of the provider's downloader (verifying SHA-256 as the bytes
 * arrive) against `curl` on the same file from the same local server, alternated in one run;
 * `curl` followed by `sha256sum` is what a user does by hand to get the same guarantee. Then a
 * download cut at half way and resumed with Range, and a cache hit. The server runs in its own
 * node process, so it never shares an event loop with the downloader it serves.
 */

const SIZE = 512 * MiB;

interface Served {
    url: string;
    stop(): void;
}

/** The test image server (tests/support/imageServer.ts, compiled beside this file) in a child process. */
async function serveInChild(file: string, cutAfter: number): Promise<Served> {
    const module = path.join(__dirname, "..", "tests", "support", "imageServer.js");
    const body = `require(${JSON.stringify(module)}).startImageServer().then((s) => {
        s.serve("/img/disk.raw", ${JSON.stringify(file)});
        s.serve("/cut/disk.raw", ${JSON.stringify(file)});
        s.misbehave("/cut/disk.raw", { kind: "cut", afterBytes: ${cutAfter}, times: 1 });
        console.log(s.url);
    });`;
    const child = execa(process.execPath, ["-e", body], { reject: false });
    const url = await new Promise<string>((resolve, reject) => {
        child.stdout!.once("data", (d: Buffer) => resolve(d.toString().trim()));
        child.once("exit", (code) => reject(new Error(`the image server exited (${code}): ${child.stderr}`)));
    });
    return { url, stop: () => void child.kill("SIGKILL") };
}

async function sha256File(file: string): Promise<string> {
    const h = createHash("sha256");
    for await (const c of createReadStream(file, { highWaterMark: 4 * MiB })) h.update(c as Buffer);
    return h.digest("hex");
}

export async function runDownload(opts: { runs?: number } = {}): Promise<BenchResult> {
    const runs = opts.runs ?? 3;
    return withTempDir("pq-bench-download-", async (dir) => {
        const file = path.join(dir, "disk.raw");
        await writeBigFile(file, SIZE);
        const checksum = parseChecksum(`sha256:${await sha256File(file)}`) as Checksum;
        const server = await serveInChild(file, SIZE / 2);
        try {
            const url = new URL(`${server.url}/img/disk.raw`);
            const ours: number[] = [];
            const curl: number[] = [];
            const curlSum: number[] = [];
            const byCurl = path.join(dir, "curl.raw");
            for (let i = 0; i < runs; i++) {
                const state = path.join(dir, `state-${i}`);
                ours.push(
                    (
                        await timed(() =>
                            cachedDownload(downloadsDir(state), url, checksum, { stallMs: 60_000, env: {} }),
                        )
                    ).ms,
                );
                await rm(state, { recursive: true, force: true });
                curl.push((await timed(() => execa("curl", ["-sS", "--noproxy", "*", "-o", byCurl, url.href]))).ms);
                await rm(byCurl, { force: true });
                curlSum.push(
                    (
                        await timed(async () => {
                            await execa("curl", ["-sS", "--noproxy", "*", "-o", byCurl, url.href]);
                            await execa("sha256sum", [byCurl]);
                        })
                    ).ms,
                );
                await rm(byCurl, { force: true });
            }
            const [o, c, cs] = [median(ours), median(curl), median(curlSum)];
            const rows: Row[] = [
                {
                    bench: "download",
                    measure: `512 MiB from 127.0.0.1, SHA-256 verified as it arrives (median of ${runs})`,
                    provider: `${fmtMs(o)} (${mbPerSecond(SIZE, o).toFixed(0)} MB/s)`,
                    reference: `curl ${fmtMs(c)} (${mbPerSecond(SIZE, c).toFixed(0)} MB/s), unverified`,
                    ratio: fmtRatio(c / o),
                },
                {
                    bench: "download",
                    measure: "the same, against curl then sha256sum (the same guarantee by hand)",
                    provider: fmtMs(o),
                    reference: `curl + sha256sum ${fmtMs(cs)}`,
                    ratio: fmtRatio(cs / o),
                },
            ];
            // A cut at half way, resumed with Range in the same call: the kept half is re-hashed, not re-fetched.
            const cutState = path.join(dir, "state-cut");
            const cut = await timed(() =>
                cachedDownload(downloadsDir(cutState), new URL(`${server.url}/cut/disk.raw`), checksum, {
                    stallMs: 60_000,
                    env: {},
                }),
            );
            rows.push({
                bench: "download",
                measure: "512 MiB cut at 256 MiB, resumed with Range in the same create",
                provider: `${fmtMs(cut.ms)} (resumed: ${cut.value.resumed})`,
                reference: `uncut ${fmtMs(o)}`,
                ratio: fmtRatio(o / cut.ms),
            });
            // Cache hits: the entry alone (a stat and its record), and an image made from it (a copy).
            const hits: number[] = [];
            for (let i = 0; i < 5; i++)
                hits.push(
                    (
                        await timed(() =>
                            cachedDownload(downloadsDir(cutState), url, checksum, { stallMs: 60_000, env: {} }),
                        )
                    ).ms,
                );
            const images: number[] = [];
            for (let i = 0; i < 3; i++) {
                const out = path.join(dir, `image-${i}.raw`);
                await (await open(out, "wx", 0o600)).close();
                images.push(
                    (await timed(() => imageFromUrl(cutState, url, checksum, out, { stallMs: 60_000, env: {} }))).ms,
                );
                await rm(out, { force: true });
            }
            const cpRuns: number[] = [];
            for (let i = 0; i < 3; i++) {
                const out = path.join(dir, `cp-${i}.raw`);
                cpRuns.push((await timed(() => execa("cp", [file, out]))).ms);
                await rm(out, { force: true });
            }
            rows.push({
                bench: "download",
                measure: "cache hit: the verified entry found (no network)",
                provider: fmtMs(median(hits)),
            });
            rows.push({
                bench: "download",
                measure: "cache hit: image file made from the entry (512 MiB copy)",
                provider: fmtMs(median(images)),
                reference: `cp ${fmtMs(median(cpRuns))}`,
                ratio: fmtRatio(median(cpRuns) / median(images)),
            });
            return {
                rows,
                notes: [
                    "download: ratio > 1 means pulumi-qemu is faster. The server is the tests' node image server in its own process; both clients write to the same disk. curl does not verify anything; curl + sha256sum reads the file a second time.",
                ],
            };
        } finally {
            server.stop();
        }
    });
}

if (require.main === module) {
    runDownload()
        .then((r) => {
            for (const row of r.rows)
                console.log(
                    `${row.measure}: ${row.provider}${row.reference ? ` | ${row.reference}` : ""}${row.ratio ? ` | ${row.ratio}` : ""}`,
                );
            for (const n of r.notes) console.log(n);
        })
        .catch((err) => {
            console.error(err);
            process.exit(1);
        });
}
