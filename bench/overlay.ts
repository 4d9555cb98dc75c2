import execa from "execa";
import { open, rm, truncate } from "node:fs/promises";
import * as path from "node:path";
import { hashValue } from "../provider/core/hash";
import { createDiskImage, removeImage } from "../provider/resources/diskImage";
import { fmtMs, fmtRatio, GiB, median, MiB, timed, verdict, withTempDir, type BenchResult, type Row } from "./common";

/**
 * Benchmark 3: a DiskImage overlay over a 1 GiB and a 20 GiB raw base, against `qemu-img
 * create -b` by hand and a full copy of the base (`cp`). The overlay carries the base's
 * identity (backingInputHash), as a stack wires it from the base DiskImage's output, so the
 * base is never read. The 20 GiB base holds 2 GiB of data at its ends and holes between, to
 * spare a shared disk 40 GiB of writes: `cp` copies the holes as holes, so its figure for that
 * base is a lower bound on a copy of a fully written one.
 */

async function writeData(file: string, at: number, bytes: number): Promise<void> {
    const { randomBytes } = await import("node:crypto");
    const fh = await open(file, "r+");
    try {
        const chunk = randomBytes(16 * MiB);
        for (let done = 0; done < bytes; done += chunk.length)
            await fh.write(chunk, 0, Math.min(chunk.length, bytes - done), at + done);
    } finally {
        await fh.close();
    }
}

async function makeBase(file: string, size: number): Promise<void> {
    await (await open(file, "wx", 0o600)).close();
    await truncate(file, size);
    const data = Math.min(size, GiB);
    await writeData(file, 0, data);
    if (size > data) await writeData(file, size - data, data);
}

export async function runOverlay(opts: { runs?: number } = {}): Promise<BenchResult> {
    // 11, not 5: at ~20 ms a creation, a few ms of noise moved the 20 GiB / 1 GiB ratio between 0.9x and 1.3x.
    const runs = opts.runs ?? 11;
    return withTempDir(
        "pq-bench-overlay-",
        async (dir) => {
            const rows: Row[] = [];
            const provider: Record<string, number> = {};
            for (const [label, size] of [
                ["1 GiB", GiB],
                ["20 GiB", 20 * GiB],
            ] as const) {
                const base = path.join(dir, `base-${label.replace(" ", "")}.raw`);
                await makeBase(base, size);
                const identity = hashValue({ bench: base });
                const viaProvider: number[] = [];
                const byHand: number[] = [];
                for (let i = 0; i < runs; i++) {
                    const made = await timed(() =>
                        createDiskImage({
                            source: {
                                kind: "overlay",
                                backing: base,
                                backingFormat: "raw",
                                backingInputHash: identity,
                            },
                            stateDir: path.join(dir, "state"),
                        }),
                    );
                    viaProvider.push(made.ms);
                    await removeImage(made.value);
                    const ov = path.join(dir, `hand-${i}.qcow2`);
                    byHand.push(
                        (
                            await timed(() =>
                                execa("qemu-img", ["create", "-q", "-f", "qcow2", "-b", base, "-F", "raw", ov]),
                            )
                        ).ms,
                    );
                    await rm(ov);
                }
                const copies: number[] = [];
                for (let i = 0; i < (size > GiB ? 1 : 3); i++) {
                    const copy = path.join(dir, "copy.raw");
                    copies.push((await timed(() => execa("cp", [base, copy]))).ms);
                    await rm(copy);
                }
                await rm(base);
                const p = median(viaProvider);
                provider[label] = p;
                rows.push(
                    {
                        bench: "3 overlay",
                        measure: `DiskImage overlay over a ${label} base vs qemu-img create -b by hand (median of ${runs})`,
                        provider: fmtMs(p),
                        reference: fmtMs(median(byHand)),
                        ratio: fmtRatio(p / median(byHand)),
                    },
                    {
                        bench: "3 overlay",
                        measure: `… vs a full copy of the ${label} base (cp${size > GiB ? ", holes kept; 1 run" : ", median of 3"})`,
                        provider: fmtMs(p),
                        reference: fmtMs(median(copies)),
                        ratio: fmtRatio(p / median(copies)),
                    },
                );
            }
            const growth = provider["20 GiB"] / provider["1 GiB"];
            rows.push({
                bench: "3 overlay",
                measure: "overlay creation over 20 GiB vs over 1 GiB",
                provider: fmtMs(provider["20 GiB"]),
                reference: fmtMs(provider["1 GiB"]),
                ratio: fmtRatio(growth),
                target: "does not grow (< 1.5×)",
                verdict: verdict(growth < 1.5),
            });
            return { rows, notes: [] };
        },
        "/var/tmp",
    );
}
