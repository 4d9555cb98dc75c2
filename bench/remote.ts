import execa from "execa";
import { readFileSync } from "node:fs";
import * as path from "node:path";
import { gunzipSync } from "node:zlib";
import { sha256Hex, hashValue } from "../provider/core/hash";
import { parseHost, type HostSpec } from "../provider/core/hostSpec";
import { SshConnection } from "../provider/host/ssh/sshConnection";
import { runTool } from "../provider/host/process/toolRun";
import { bundlePath, connectionFor, RemoteRunner, runnerFor } from "../provider/host/ssh/runnerClient";
import * as diskImage from "../provider/resources/diskImage";
import * as virtualMachine from "../provider/resources/virtualMachine";
import type { DiskImageOutputs } from "../provider/resources/diskImage";
import { ensureTestGuest, guestKernelArguments, READY_MARKER } from "../tests/guest/testGuest";
import { FAR_USER, startFarHost, useFarUser, type FarHost } from "../tests/support/farHost";
import { fmtMs, fmtRatio, GiB, median, MiB, timed, withTempDir, type BenchResult, type Row } from "./common";
import { stackVmInputs, vmOutputs } from "./noopDiff";

/**
 * Remote hosts: what placing resources on another machine through SSH (issue 15) adds to each
 * operation. The "far host" is this very machine behind Debian's sshd on a loopback port, logged
 * in as the unprivileged user pqbench (tests/support/farHost.ts with its own user), so the difference between the
 * two sides is the SSH connection, the runner's JSON lines and its node process, and nothing of
 * the network or of a different machine. Every comparison runs both sides in the same run,
 * alternating where the runs are long enough for the load to move between them.
 *
 *  - round trips for scale: a process started here, `ssh host true` over the established master,
 *    a fresh `ssh host true` (full handshake), and one runner call (a VirtualMachine check, which
 *    the placement layer sends to the host);
 *  - the first connection: master, then the runner (with its bundle copied, and cached);
 *  - the no-op preview of noopDiff's stack (1 base + 100 overlays + 100 VMs), check then diff;
 *  - an overlay create (and delete) over a base on the same host;
 *  - the test guest's create-to-ready (TCG).
 */

const BOOT_TIMEOUT_S = 180;
const BENCH_FAR_USER = "pqbench";

/** Run by a fresh `node -e`: the median time of runTool("true") there, and that process's RSS. */
const SPAWN_PROBE = `
const { runTool } = require(process.argv[1]);
(async () => {
    const ts = [];
    for (let i = 0; i < Number(process.argv[2]); i++) {
        const t = process.hrtime.bigint();
        await runTool("true", [], { timeoutMs: 10000 });
        ts.push(Number(process.hrtime.bigint() - t) / 1e6);
    }
    ts.sort((a, b) => a - b);
    const m = ts.length >> 1;
    console.log(JSON.stringify({ ms: ts.length % 2 ? ts[m] : (ts[m - 1] + ts[m]) / 2, rssKiB: process.memoryUsage().rss / 1024 }));
})();
`;

/** One side of the comparison: this machine, or the far host through SSH. */
interface Side {
    label: "local" | "SSH";
    /** The `host` input, on the far side. */
    host?: FarHost["host"];
    /** A directory of that side's user, for state and files. */
    dir: string;
    kernel: string;
    initrd: string;
    /** A shell command run as that side's user. */
    sh(command: string): Promise<void>;
}

function place<T extends object>(side: Side, inputs: T): T {
    return side.host ? { ...inputs, host: side.host } : inputs;
}

const q = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;

// ---------------------------------------------------------------------------------------------
// The no-op stack (noopDiff's shape), built through the placed lifecycles on either side

interface Resource {
    kind: "DiskImage" | "VirtualMachine";
    name: string;
    id: string;
    inputs: any;
    outputs: any;
}

async function buildStack(side: Side, vms: number, made: Made): Promise<Resource[]> {
    const stateDir = path.join(side.dir, "noop-state");
    const source = path.join(side.dir, "base-source.raw");
    // Sparse and stamped a minute back (the hash cache trusts it at once); no diff reads its content.
    await side.sh(`truncate -s ${64 * MiB} ${q(source)} && touch -d '1 minute ago' ${q(source)}`);
    const resources: Resource[] = [];
    const baseInputs = place(side, { source: { kind: "file", path: source, format: "raw" }, stateDir });
    const base = await made.image(side, baseInputs);
    resources.push({ kind: "DiskImage", name: "base", id: base.id, inputs: baseInputs, outputs: base.outs });
    const overlays: DiskImageOutputs[] = [];
    for (let i = 0; i < vms; i += 10) {
        const batch = await Promise.all(
            Array.from({ length: Math.min(10, vms - i) }, async (_, j) => {
                const inputs = place(side, {
                    source: {
                        kind: "overlay",
                        backing: base.outs.path,
                        backingFormat: "raw",
                        backingInputHash: base.outs.inputHash,
                    },
                    stateDir,
                });
                const r = await made.image(side, inputs);
                resources.push({ kind: "DiskImage", name: `disk-${i + j}`, id: r.id, inputs, outputs: r.outs });
                return r.outs;
            }),
        );
        overlays.push(...batch);
    }
    const spec = side.host ? parseHost(side.host)! : undefined;
    overlays.forEach((disk, i) => {
        const name = `vm-${i}`;
        const inputs = stackVmInputs(name, i, side, disk, stateDir);
        // What create would have returned there: the placement keys as placement.ts adds them.
        const outputs = {
            ...vmOutputs(inputs, stateDir),
            ...(spec
                ? {
                      host: spec.url,
                      hostAccess: { identityFile: side.host!.identityFile, knownHosts: side.host!.knownHosts },
                  }
                : {}),
        };
        resources.push({ kind: "VirtualMachine", name, id: `${name}-x`, inputs: place(side, inputs), outputs });
    });
    return resources;
}

async function checkAndDiff(r: Resource): Promise<void> {
    const module = r.kind === "DiskImage" ? diskImage : virtualMachine;
    const checked = await module.check(r.inputs, r.inputs);
    if (checked.failures?.length) throw new Error(`${r.name}: check failed: ${JSON.stringify(checked.failures)}`);
    const d = await module.diff(r.id, r.outputs, checked.inputs);
    if (d.changes) throw new Error(`${r.name}: a no-op diff reported changes: ${JSON.stringify(d)}`);
}

async function sequentialPass(
    stack: Resource[],
): Promise<{ perResource: number; byKind: Record<Resource["kind"], number> }> {
    const times: Record<Resource["kind"], number[]> = { DiskImage: [], VirtualMachine: [] };
    const wall = await timed(async () => {
        for (const r of stack) times[r.kind].push((await timed(() => checkAndDiff(r))).ms);
    });
    const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
    return {
        perResource: wall.ms / stack.length,
        byKind: { DiskImage: mean(times.DiskImage), VirtualMachine: mean(times.VirtualMachine) },
    };
}

// ---------------------------------------------------------------------------------------------
// What the benchmark made, on either side, so that it all goes whatever happens

class Made {
    private readonly images: Array<{ side: Side; id: string; outs: any }> = [];
    private readonly vms: Array<{ side: Side; id: string; outs: any }> = [];

    async image(side: Side, inputs: any): Promise<{ id: string; outs: any }> {
        const r = await diskImage.create(inputs);
        this.images.push({ side, id: r.id, outs: r.outs });
        return { id: r.id, outs: r.outs };
    }

    async dropImage(id: string): Promise<void> {
        const i = this.images.findIndex((x) => x.id === id);
        if (i < 0) throw new Error(`the benchmark did not make ${id}`);
        const [x] = this.images.splice(i, 1);
        await diskImage.remove(x.id, x.outs);
    }

    async vm(side: Side, inputs: any): Promise<{ id: string; outs: any }> {
        const r = await virtualMachine.create(inputs);
        this.vms.push({ side, id: r.id, outs: r.outs });
        return { id: r.id, outs: r.outs };
    }

    async dropVm(id: string): Promise<void> {
        const i = this.vms.findIndex((x) => x.id === id);
        if (i < 0) throw new Error(`the benchmark did not make ${id}`);
        const [x] = this.vms.splice(i, 1);
        await virtualMachine.remove(x.id, x.outs);
    }

    /** VMs first (they hold their disks), then overlays before the bases they stand on. */
    async removeAll(): Promise<string[]> {
        const errors: string[] = [];
        for (const x of this.vms.splice(0))
            await virtualMachine
                .remove(x.id, x.outs)
                .catch((e) => errors.push(`${x.side.label} VM ${x.id}: ${e.message}`));
        for (const x of this.images.splice(0).reverse())
            await diskImage
                .remove(x.id, x.outs)
                .catch((e) => errors.push(`${x.side.label} image ${x.id}: ${e.message}`));
        return errors;
    }
}

// ---------------------------------------------------------------------------------------------

type Options = {
    pings?: number;
    calls?: number;
    setups?: number;
    vms?: number;
    passes?: number;
    overlays?: number;
    boots?: number;
};

export async function runRemote(opts: Options = {}): Promise<BenchResult> {
    // Its own far user, kept until its far host has stopped: starting or stopping a far host kills
    // everything its user runs, so sharing pqfar with remote tests running at the same time would
    // kill theirs and ours.
    const usual = FAR_USER;
    useFarUser(BENCH_FAR_USER);
    try {
        return await measure(opts);
    } finally {
        useFarUser(usual);
    }
}

async function measure(opts: Options): Promise<BenchResult> {
    const pings = opts.pings ?? 31;
    const calls = opts.calls ?? 51;
    const setups = opts.setups ?? 3;
    const vms = opts.vms ?? 100;
    const passes = opts.passes ?? 3;
    const overlayRuns = opts.overlays ?? 11;
    const boots = opts.boots ?? 3;
    const guest = await ensureTestGuest();

    return withTempDir(
        "pq-bench-remote-",
        async (localDir) => {
            const far = await startFarHost();
            const made = new Made();
            const spec: HostSpec = parseHost(far.host)!;
            const given: string[] = [];
            const rows: Row[] = [];
            const notes: string[] = [];
            const cleanupErrors: string[] = [];
            let farDir: string | undefined;
            let shared: RemoteRunner | undefined;
            try {
                farDir = far.asFarUser(`mktemp -d "$HOME/pq-bench-remote-XXXXXX"`).trim();
                const give = (file: string, name: string) => {
                    const p = far.give(file, name);
                    given.push(p);
                    return p;
                };
                const local: Side = {
                    label: "local",
                    dir: localDir,
                    kernel: guest.kernel,
                    initrd: guest.initrd,
                    sh: async (c) => void (await execa("sh", ["-c", c])),
                };
                const remote: Side = {
                    label: "SSH",
                    host: far.host,
                    dir: farDir,
                    kernel: give(guest.kernel, "pq-bench-remote-vmlinuz"),
                    initrd: give(guest.initrd, "pq-bench-remote-initrd"),
                    sh: async (c) => void far.asFarUser(c),
                };

                // --- the first connection: master, then runner with its bundle copied, and cached
                const bundle = gunzipSync(readFileSync(bundlePath()));
                const cached = `$HOME/.cache/pulumi-qemu/runner/${sha256Hex(bundle).slice(0, 32)}.js`;
                const vmCheckInputs = {
                    vm: { name: "probe", accel: "tcg", kernel: remote.kernel, initrd: remote.initrd },
                    stateDir: path.join(farDir, "probe-state"),
                };
                const masterMs: number[] = [];
                const runnerMs: Record<"copied" | "cached", number[]> = { copied: [], cached: [] };
                const firstCallMs: number[] = [];
                for (let i = 0; i < setups; i++) {
                    for (const mode of ["copied", "cached"] as const) {
                        if (mode === "copied") far.asFarUser(`rm -f "${cached}"`);
                        const conn = new SshConnection(spec);
                        try {
                            masterMs.push((await timed(() => conn.open())).ms);
                            const started = await timed(() => RemoteRunner.start(conn));
                            runnerMs[mode].push(started.ms);
                            const runner = started.value;
                            firstCallMs.push(
                                (await timed(() => runner.call("VirtualMachine", "check", [{}, vmCheckInputs]))).ms,
                            );
                            const exited = new Promise<void>((resolve) => runner.onExit(resolve));
                            runner.stop();
                            await Promise.race([exited, new Promise((r) => setTimeout(r, 5000))]);
                        } finally {
                            conn.closeSync();
                        }
                    }
                }
                const bundleKiB = (readFileSync(bundlePath()).length / 1024).toFixed(0);
                rows.push(
                    {
                        bench: "remote",
                        measure: `first connection: ssh ControlMaster connect + authenticate (median of ${masterMs.length}; every run ${masterMs.map((x) => x.toFixed(0)).join(", ")} ms)`,
                        provider: fmtMs(median(masterMs)),
                    },
                    {
                        bench: "remote",
                        measure: `… then the runner started, its bundle copied first (${(bundle.length / 1024).toFixed(0)} KiB; ${bundleKiB} KiB gzipped here) vs already cached (median of ${setups})`,
                        provider: fmtMs(median(runnerMs.copied)),
                        reference: `cached ${fmtMs(median(runnerMs.cached))}`,
                        ratio: fmtRatio(median(runnerMs.copied) / median(runnerMs.cached)),
                    },
                    {
                        bench: "remote",
                        measure: `… then its first call (a VirtualMachine check; median of ${firstCallMs.length})`,
                        provider: fmtMs(median(firstCallMs)),
                    },
                );

                // --- round trips, for scale: the shared master and runner placement uses from here on
                const conn = connectionFor(spec);
                await conn.open();
                const spawnMs: number[] = [];
                const sshMs: number[] = [];
                for (let i = 0; i < pings; i++) {
                    spawnMs.push((await timed(() => runTool("true", [], { timeoutMs: 10_000 }))).ms);
                    sshMs.push(
                        (
                            await timed(async () => {
                                const r = await conn.run("true", { timeoutMs: 10_000 });
                                if (r.exitCode !== 0) throw new Error(`ssh true exited ${r.exitCode}: ${r.stderr}`);
                            })
                        ).ms,
                    );
                }
                // A fresh connection per command (no master): what every call would cost without ControlMaster.
                const plain = conn
                    .options()
                    .filter(
                        (o, i, all) =>
                            !o.startsWith("ControlPath=") && !(o === "-o" && all[i + 1]?.startsWith("ControlPath=")),
                    );
                const handshakeMs: number[] = [];
                for (let i = 0; i < 5; i++) {
                    handshakeMs.push(
                        (
                            await timed(async () => {
                                const r = await runTool(
                                    "ssh",
                                    [
                                        ...plain,
                                        "-o",
                                        "ControlPath=none",
                                        "-o",
                                        "ControlMaster=no",
                                        "--",
                                        spec.hostname,
                                        "true",
                                    ],
                                    { timeoutMs: 30_000 },
                                );
                                if (r.exitCode !== 0)
                                    throw new Error(`ssh without master exited ${r.exitCode}: ${r.stderr}`);
                            })
                        ).ms,
                    );
                }
                const localCheck = {
                    ...vmCheckInputs,
                    vm: { ...vmCheckInputs.vm, kernel: local.kernel, initrd: local.initrd },
                    stateDir: path.join(localDir, "probe-state"),
                };
                const remoteCheck = place(remote, vmCheckInputs);
                await virtualMachine.check({}, remoteCheck); // starts the shared runner
                shared = await runnerFor(spec);
                const checkLocalMs: number[] = [];
                const checkRemoteMs: number[] = [];
                for (let i = 0; i < calls; i++) {
                    checkLocalMs.push((await timed(() => virtualMachine.check({}, localCheck))).ms);
                    checkRemoteMs.push((await timed(() => virtualMachine.check({}, remoteCheck))).ms);
                }
                const sshTrue = median(sshMs);
                rows.push(
                    {
                        bench: "remote",
                        measure: `\`ssh host true\` over the established master (SshConnection.run) vs starting \`true\` here (runTool; median of ${pings})`,
                        provider: fmtMs(sshTrue),
                        reference: fmtMs(median(spawnMs)),
                        ratio: fmtRatio(sshTrue / median(spawnMs)),
                    },
                    {
                        bench: "remote",
                        measure:
                            "`ssh host true` with a fresh connection each time (no master: full handshake; median of 5) vs over the master",
                        provider: fmtMs(median(handshakeMs)),
                        reference: fmtMs(sshTrue),
                        ratio: fmtRatio(median(handshakeMs) / sshTrue),
                    },
                    {
                        bench: "remote",
                        measure: `one runner call: VirtualMachine check placed on the far host vs the same check here (median of ${calls}, alternating)`,
                        provider: fmtMs(median(checkRemoteMs)),
                        reference: fmtMs(median(checkLocalMs)),
                        ratio: fmtRatio(median(checkRemoteMs) / median(checkLocalMs)),
                    },
                    {
                        bench: "remote",
                        measure: "… one runner call vs one `ssh host true` over the master",
                        provider: fmtMs(median(checkRemoteMs)),
                        reference: fmtMs(sshTrue),
                        ratio: fmtRatio(median(checkRemoteMs) / sshTrue),
                    },
                );

                // --- the no-op preview of the 201-resource stack
                const stacks = { local: await buildStack(local, vms, made), SSH: await buildStack(remote, vms, made) };
                const n = stacks.local.length;
                const seq: Record<Side["label"], Array<Awaited<ReturnType<typeof sequentialPass>>>> = {
                    local: [],
                    SSH: [],
                };
                const par: Record<Side["label"], number[]> = { local: [], SSH: [] };
                for (const label of ["local", "SSH"] as const) await sequentialPass(stacks[label]); // warm: hash caches, runner's modules
                for (let i = 0; i < passes; i++) {
                    for (const label of ["local", "SSH"] as const) seq[label].push(await sequentialPass(stacks[label]));
                    for (const label of ["local", "SSH"] as const)
                        par[label].push((await timed(() => Promise.all(stacks[label].map(checkAndDiff)))).ms / n);
                }
                const per = (label: Side["label"], pick: (p: Awaited<ReturnType<typeof sequentialPass>>) => number) =>
                    median(seq[label].map(pick));
                const [sl, ss] = [per("local", (p) => p.perResource), per("SSH", (p) => p.perResource)];
                const [dl, ds] = [per("local", (p) => p.byKind.DiskImage), per("SSH", (p) => p.byKind.DiskImage)];
                const [vl, vs] = [
                    per("local", (p) => p.byKind.VirtualMachine),
                    per("SSH", (p) => p.byKind.VirtualMachine),
                ];
                const [pl, ps] = [median(par.local), median(par.SSH)];
                rows.push(
                    {
                        bench: "remote",
                        measure: `no-op diff, ${vms} VMs + ${vms} overlays + 1 base (${n} resources), check+diff one after another, per resource: SSH vs local (median of ${passes} passes)`,
                        provider: fmtMs(ss),
                        reference: fmtMs(sl),
                        ratio: fmtRatio(ss / sl),
                    },
                    {
                        bench: "remote",
                        measure: "… whole pass, one after another",
                        provider: fmtMs(ss * n),
                        reference: fmtMs(sl * n),
                        ratio: fmtRatio(ss / sl),
                    },
                    {
                        bench: "remote",
                        measure: "… of which a DiskImage (check here, diff on the host)",
                        provider: fmtMs(ds),
                        reference: fmtMs(dl),
                        ratio: fmtRatio(ds / dl),
                    },
                    {
                        bench: "remote",
                        measure: "… of which a VirtualMachine (check on the host, diff here)",
                        provider: fmtMs(vs),
                        reference: fmtMs(vl),
                        ratio: fmtRatio(vs / vl),
                    },
                    {
                        bench: "remote",
                        measure: `… all ${n} at once, wall time per resource`,
                        provider: fmtMs(ps),
                        reference: fmtMs(pl),
                        ratio: fmtRatio(ps / pl),
                    },
                    {
                        bench: "remote",
                        measure: `… all ${n} at once, whole pass`,
                        provider: fmtMs(ps * n),
                        reference: fmtMs(pl * n),
                        ratio: fmtRatio(ps / pl),
                    },
                );

                // --- overlay create (and delete) over a base on the same host, and by hand over the master
                const bases: Record<Side["label"], string> = {
                    local: path.join(localDir, "ov-base.raw"),
                    SSH: path.join(farDir, "ov-base.raw"),
                };
                for (const side of [local, remote]) await side.sh(`truncate -s ${GiB} ${q(bases[side.label])}`);
                const create: Record<Side["label"], number[]> = { local: [], SSH: [] };
                const remove: Record<Side["label"], number[]> = { local: [], SSH: [] };
                const byHandSsh: number[] = [];
                for (let i = 0; i < overlayRuns; i++) {
                    for (const side of [local, remote]) {
                        const base = bases[side.label];
                        const inputs = place(side, {
                            source: {
                                kind: "overlay",
                                backing: base,
                                backingFormat: "raw",
                                backingInputHash: hashValue({ bench: base }),
                            },
                            stateDir: path.join(side.dir, "ov-state"),
                        });
                        const c = await timed(() => made.image(side, inputs));
                        create[side.label].push(c.ms);
                        remove[side.label].push((await timed(() => made.dropImage(c.value.id))).ms);
                    }
                    const ov = path.join(farDir, `hand-${i}.qcow2`);
                    byHandSsh.push(
                        (
                            await timed(async () => {
                                const r = await conn.run(
                                    `qemu-img create -q -f qcow2 -b ${q(bases.SSH)} -F raw ${q(ov)}`,
                                    { timeoutMs: 30_000 },
                                );
                                if (r.exitCode !== 0)
                                    throw new Error(`qemu-img over ssh exited ${r.exitCode}: ${r.stderr}`);
                            })
                        ).ms,
                    );
                    await conn.run(`rm -f ${q(ov)}`, { timeoutMs: 10_000 });
                }
                rows.push(
                    {
                        bench: "remote",
                        measure: `DiskImage overlay create over a 1 GiB raw base on the same host: SSH vs local (median of ${overlayRuns}, alternating)`,
                        provider: fmtMs(median(create.SSH)),
                        reference: fmtMs(median(create.local)),
                        ratio: fmtRatio(median(create.SSH) / median(create.local)),
                    },
                    {
                        bench: "remote",
                        measure: "… vs `ssh host qemu-img create -b` by hand over the same master",
                        provider: fmtMs(median(create.SSH)),
                        reference: fmtMs(median(byHandSsh)),
                        ratio: fmtRatio(median(create.SSH) / median(byHandSsh)),
                    },
                    {
                        bench: "remote",
                        measure: "DiskImage overlay delete: SSH vs local",
                        provider: fmtMs(median(remove.SSH)),
                        reference: fmtMs(median(remove.local)),
                        ratio: fmtRatio(median(remove.SSH) / median(remove.local)),
                    },
                );

                // --- the test guest, create to ready (TCG)
                const bootMs: Record<Side["label"], number[]> = { local: [], SSH: [] };
                const readyS: Record<Side["label"], number[]> = { local: [], SSH: [] };
                for (let i = 0; i < boots; i++) {
                    for (const side of [local, remote]) {
                        const name = `rb-${i}`;
                        const inputs = place(side, {
                            vm: {
                                name,
                                accel: "tcg",
                                kernel: side.kernel,
                                initrd: side.initrd,
                                kernelArguments: guestKernelArguments({ name }),
                            },
                            ready: { serialPattern: READY_MARKER, timeoutSeconds: BOOT_TIMEOUT_S },
                            stateDir: path.join(side.dir, "vm-state"),
                        });
                        const c = await timed(() => made.vm(side, inputs));
                        bootMs[side.label].push(c.ms);
                        readyS[side.label].push(c.value.outs.readySeconds);
                        await made.dropVm(c.value.id);
                    }
                }
                const [bl, bs] = [median(bootMs.local), median(bootMs.SSH)];
                const list = (xs: number[]) => xs.map((x) => (x / 1000).toFixed(2)).join(", ") + " s";
                rows.push(
                    {
                        bench: "remote",
                        measure: `test guest VirtualMachine create to ${READY_MARKER} (TCG): SSH vs local (median of ${boots}, alternating)`,
                        provider: fmtMs(bs),
                        reference: fmtMs(bl),
                        ratio: fmtRatio(bs / bl),
                    },
                    {
                        bench: "remote",
                        measure: "… every run",
                        provider: list(bootMs.SSH),
                        reference: list(bootMs.local),
                    },
                    {
                        bench: "remote",
                        measure: "… readySeconds the VM itself reported (its boot, measured on its host)",
                        provider: readyS.SSH.map((x) => x.toFixed(2)).join(", ") + " s",
                        reference: readyS.local.map((x) => x.toFixed(2)).join(", ") + " s",
                    },
                );
                // The boot itself varies by hundreds of ms under load; what create adds around it does not.
                const around = (label: Side["label"]) =>
                    median(bootMs[label].map((ms, i) => ms - readyS[label][i] * 1000));
                rows.push({
                    bench: "remote",
                    measure: "… create's own time around the boot (wall − readySeconds; median)",
                    provider: fmtMs(around("SSH")),
                    reference: fmtMs(around("local")),
                    ratio: fmtRatio(around("SSH") / around("local")),
                });

                // A spawn's cost grows with the spawning process's memory (libuv forks on Linux), so
                // the two sides' processes are not alike: this benchmark's, and the small runner.
                const runnerRss = far
                    .asFarUser('ps -u "$(id -u)" -o rss=,args=')
                    .split("\n")
                    .filter((l) => l.includes(`pulumi-qemu/runner/${sha256Hex(bundle).slice(0, 32)}.js`))
                    .map((l) => Number(l.trim().split(/\s+/)[0]));
                const mib = (kib: number) => `${(kib / 1024).toFixed(0)} MiB`;
                const ownRss = process.memoryUsage().rss / 1024;
                const small = await execa("node", [
                    "-e",
                    SPAWN_PROBE,
                    path.join(__dirname, "..", "provider", "host", "process", "toolRun.js"),
                    String(pings),
                ]);
                const probe = JSON.parse(small.stdout) as { ms: number; rssKiB: number };
                const spawnHere = median(spawnMs);
                rows.push({
                    bench: "remote",
                    measure: `starting \`true\` (runTool) from this benchmark's process (${mib(ownRss)} RSS) vs from a fresh node process (${mib(probe.rssKiB)} RSS; median of ${pings})`,
                    provider: fmtMs(spawnHere),
                    reference: fmtMs(probe.ms),
                    ratio: fmtRatio(spawnHere / probe.ms),
                });
                notes.push(
                    `Remote: every tool the provider starts (qemu-img, ssh) is forked from the process that starts it, and a fork costs more the more memory that process holds, most under load (see the \`true\` rows): ` +
                        `this benchmark's process had ${mib(ownRss)} RSS, the runner on the far host ${runnerRss.length ? mib(Math.max(...runnerRss)) : "(not found)"}${runnerRss.length > 1 ? ` (the largest of ${runnerRss.length} runners)` : ""}. ` +
                        "So a tool the runner starts there can start sooner than the same tool started here, which is how an overlay can be made faster through SSH than locally.",
                );
                notes.push(
                    "Remote: SshConnection.open looks for the master's control socket every 20 ms (provider/host/ssh/sshConnection.ts startMaster), so a first connection's time is rounded up to that tick.",
                );
                notes.push(
                    "Remote: the far host is this machine behind Debian's sshd on 127.0.0.1 logged in as the unprivileged user pqbench (tests/support/farHost.ts with its own user), so an SSH figure against a local one is the cost of the SSH connection, the runner's JSON lines and its node process; " +
                        "a real network adds its round-trip time once per runner call (one per resource in a no-op preview: a VM's check and an image's diff run on the host, the rest here). " +
                        "The no-op stack's base is a sparse 64 MiB file imported as a raw image (noopDiff's is 1 GiB of data); after a warm pass no diff reads image content on either side.",
                );
                return { rows, notes };
            } finally {
                cleanupErrors.push(...(await made.removeAll()));
                try {
                    shared?.stop();
                } catch {
                    // already gone
                }
                connectionFor(spec).closeSync();
                for (const file of given) far.asFarUser(`rm -f ${q(file)}`);
                if (farDir) far.asFarUser(`rm -rf ${q(farDir)}`);
                await far.stop();
                if (cleanupErrors.length) console.error(`remote bench: could not remove: ${cleanupErrors.join("; ")}`);
            }
        },
        "/var/tmp",
    );
}
