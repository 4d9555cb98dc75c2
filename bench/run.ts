import { writeFile } from "node:fs/promises";
import * as path from "node:path";
import { MAIN_ROOT } from "../tests/engine/paths";
import { describeMachine, loadAverage, otherQemuCount, type BenchResult, type Machine, type Row } from "./common";
import { runBoot } from "./boot";
import { runDebianBoot } from "./debianBoot";
import { runChannel } from "./channel";
import { runChannelSsh } from "./channelSsh";
import { runFleet } from "./fleet";
import { runFleetDebian } from "./fleetDebian";
import { runHashing } from "./hashing";
import { runNoopDiff } from "./noopDiff";
import { runOverlay } from "./overlay";
import { runDownload } from "./download";
import { runRemote } from "./remote";
import { runNetwork } from "./network";
import { runNetworkDhcp } from "./networkDhcp";
import { runSeed } from "./seed";
import { runSerialWatch } from "./serialWatch";
import { runSnapshot } from "./snapshot";
import { runSnapshotDebian } from "./snapshotDebian";

/**
 * Runs the benchmarks and prints one markdown table:
 *   npm run build && node bin/bench/run.js [noop] [hash] [overlay] [boot] [serial] [seed] [debian] [network] [dhcp] [channel] [channelSsh] [snapshot] [snapshotDebian] [fleet] [fleetDebian] [remote] [download]
 * With no names it runs all of them and writes the table to bench/RESULTS.md.
 * Nothing depends on these timings; they are for people.
 */

const BENCHES: Record<string, () => Promise<BenchResult>> = {
    noop: () => runNoopDiff(),
    hash: () => runHashing(),
    overlay: () => runOverlay(),
    boot: () => runBoot(),
    serial: () => runSerialWatch(),
    seed: () => runSeed(),
    debian: () => runDebianBoot(),
    network: () => runNetwork(),
    dhcp: () => runNetworkDhcp(),
    channel: () => runChannel(),
    channelSsh: () => runChannelSsh(),
    snapshot: () => runSnapshot(),
    snapshotDebian: () => runSnapshotDebian(),
    fleet: () => runFleet(),
    fleetDebian: () => runFleetDebian(),
    remote: () => runRemote(),
    download: () => runDownload(),
};

function table(rows: Row[]): string {
    const head =
        "| Benchmark | Measure | pulumi-qemu | Compared with | Ratio | Target | Result |\n|---|---|---|---|---|---|---|";
    const cell = (s: string | undefined) => (s ?? "").replace(/\|/g, "\\|");
    return [
        head,
        ...rows.map(
            (r) =>
                `| ${cell(r.bench)} | ${cell(r.measure)} | ${cell(r.provider)} | ${cell(r.reference)} | ${cell(r.ratio)} | ${cell(r.target)} | ${cell(r.verdict)} |`,
        ),
    ].join("\n");
}

function machineText(
    m: Machine,
    load: { before: string; after: string; qemu: number },
    took: number,
    names: string[],
): string {
    return [
        `- CPU: ${m.cpu}, ${m.cores} cores, ${m.memory} RAM`,
        `- ${m.os}, Linux ${m.kernel}; ${m.qemu}; ${m.qemuImg}; Node ${m.node}`,
        `- Run ${m.date}, ${(took / 1000).toFixed(0)} s; load average before ${load.before}, after ${load.after}; other QEMU processes at start: ${load.qemu}`,
        `- Command: \`npm run build && node bin/bench/run.js${names.length === Object.keys(BENCHES).length ? "" : " " + names.join(" ")}\``,
    ].join("\n");
}

async function main(): Promise<void> {
    const asked = process.argv.slice(2);
    const unknown = asked.filter((a) => !(a in BENCHES));
    if (unknown.length)
        throw new Error(`unknown benchmark ${unknown.join(", ")}; choose from ${Object.keys(BENCHES).join(", ")}`);
    const names = asked.length ? asked : Object.keys(BENCHES);
    const machine = await describeMachine();
    const before = loadAverage();
    const qemu = otherQemuCount();
    const t0 = Date.now();
    const rows: Row[] = [];
    const notes: string[] = [];
    for (const name of names) {
        process.stderr.write(`bench ${name}… (load ${loadAverage()})\n`);
        const r = await BENCHES[name]();
        rows.push(...r.rows);
        notes.push(...r.notes);
    }
    const text = [
        "# pulumi-qemu benchmarks",
        "",
        machineText(machine, { before, after: loadAverage(), qemu }, Date.now() - t0, names),
        "",
        table(rows),
        "",
        ...notes.map((n) => `- ${n}`),
        "",
    ].join("\n");
    process.stdout.write(text);
    if (!asked.length) await writeFile(path.join(MAIN_ROOT, "bench", "RESULTS.md"), text);
}

main().catch((err) => {
    console.error(err instanceof Error ? (err.stack ?? err.message) : err);
    process.exit(1);
});
