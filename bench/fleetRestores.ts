import type { Fleet } from "../sdk/testing";
import { fmtMs, fmtRatio, median, MiB, verdict, type Row } from "./common";

/**
 * The part every fleet benchmark shares once its fleet is up: take one fleet snapshot, then
 * restore it a few times — each time after writing a dirty marker in every VM — and check that
 * every clock was set and every marker is gone (honest figures only: a restore that did not put
 * each VM back must not be timed as one). Returns the rows: the median restore against the
 * fleet's cold boot, and how long the snapshot kept the fleet paused. bench/fleet.ts (busybox)
 * and bench/fleetDebian.ts (Debian) differ only in how the fleet is made and what else they check.
 */

export interface FleetRestoreRun {
    /** The Benchmark column. */
    bench: string;
    /** What the fleet is, starting the Measure column: "4 busybox VMs". */
    fleetLabel: string;
    /** The fleet's cold boot to ready, and how it was measured for the Compared-with column. */
    coldMs: number;
    coldLabel: string;
    /** A path every guest can write: the dirty marker. */
    dirtyPath: string;
    restores: number;
    /** Restore to answering, against the cold boot; the target is 0.1. */
    target: number;
    /** Checks after each restore beyond markers and clocks (e.g. the guests reach each other); not timed. */
    check?: (f: Fleet) => Promise<void>;
}

export async function measureFleetRestores(f: Fleet, run: FleetRestoreRun): Promise<Row[]> {
    const all = (fn: (name: string) => Promise<unknown>) => Promise.all(f.names.map(fn));
    const snap = await f.snapshot("ready");
    const times: number[] = [];
    for (let i = 0; i < run.restores; i++) {
        await all((n) => f.machine(n).succeed(`echo dirty > ${run.dirtyPath}`));
        const r = await f.restore("ready");
        if (Object.values(r.clocks).some((c) => c !== "set"))
            throw new Error(`bench ${run.bench}: clocks not set after restore ${i + 1}: ${JSON.stringify(r.clocks)}`);
        times.push(r.ms);
        await all((n) => f.machine(n).fail(`test -e ${run.dirtyPath}`));
        await run.check?.(f);
    }
    await f.deleteSnapshot("ready");
    const restoreMs = median(times);
    const ratio = restoreMs / run.coldMs;
    return [
        {
            bench: run.bench,
            measure: `${run.fleetLabel}: fleet restore to answering (median of ${run.restores}: ${times.map(fmtMs).join(", ")})`,
            provider: fmtMs(restoreMs),
            reference: `${run.coldLabel} ${fmtMs(run.coldMs)}`,
            ratio: fmtRatio(ratio),
            target: `≤ ${run.target.toFixed(2)}×`,
            verdict: verdict(ratio <= run.target),
        },
        {
            bench: run.bench,
            measure: `${run.fleetLabel}: fleet snapshot (all paused, saved, resumed)`,
            provider: fmtMs(snap.pausedMs),
            reference: `vmstate ${(Object.values(snap.vms).reduce((t, v) => t + v.vmStateBytes, 0) / MiB).toFixed(1)} MiB in all`,
        },
    ];
}
