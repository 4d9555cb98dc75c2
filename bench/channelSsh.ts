import { spawn, type ChildProcess } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { open, readFile, rm, writeFile } from "node:fs/promises";
import * as path from "node:path";
import { attach, type Machine } from "../sdk/testing";
import { bootDebianQga, type DebianQgaVm } from "../tests/guest/debianQga";
import {
    fmtMs,
    fmtRatio,
    mbPerSecond,
    median,
    MiB,
    timed,
    verdict,
    withTempDir,
    type BenchResult,
    type Row,
} from "./common";

/**
 * Benchmark: qemu-ga (vm.agent "qga") against ssh, the channel a user would otherwise use, on
 * the same Debian 12 guest (one boot, TCG): the round trip of `true` — over ssh through a
 * persistent ControlMaster connection (a new ssh client per command, no new handshake), and
 * over plain ssh (a full handshake each time, so fewer rounds) — and 64 MiB copied in and out
 * with guest-file-* against `ssh cat` (through the master). The Debian boot dominates the run
 * (one to two minutes under TCG); the measuring itself is well under a minute.
 */

const COPY_BYTES = 64 * MiB;
/** Rounds stop at this many, or when the budget is spent (then the row says how many ran). */
const ROUNDS = 200;
const BUDGET_MS = 30_000;
/** Round-trip rounds per turn when two channels take turns. */
const BLOCK = 10;

export async function runChannelSsh(): Promise<BenchResult> {
    return withTempDir("pq-bench-chssh-", async (dir) => {
        let deb: DebianQgaVm | undefined;
        let machine: Machine | undefined;
        let master: ChildProcess | undefined;
        try {
            deb = await bootDebianQga(dir, "bench-ssh");
            machine = attach(deb.outs);
            const m = machine;
            const target = "tester@127.0.0.1";
            const plain = deb.sshArgs;
            const controlPath = path.join(dir, "ctl.sock");
            const viaMaster = [...plain, "-o", `ControlPath=${controlPath}`, "-o", "ControlMaster=no"];

            // The master: one ssh we start and stop by its own pid.
            master = spawn(
                "ssh",
                [...plain, "-o", `ControlPath=${controlPath}`, "-o", "ControlMaster=yes", "-N", target],
                { stdio: "ignore" },
            );
            await waitFor(
                async () => (await sshRun([...viaMaster, "-O", "check", target])).code === 0,
                60_000,
                "the ssh ControlMaster did not come up within 60 s",
            );

            const ok = async (args: string[]) => {
                const r = await sshRun(args);
                if (r.code !== 0) throw new Error(`ssh ${args.slice(-1)[0]} exited ${r.code}: ${r.stderr}`);
            };
            // qga and ssh through the master take turns in blocks of BLOCK rounds, so a change in
            // the machine's load during the run falls on both alike.
            const [qga, sshMaster] = await rtts(
                [() => m.succeed("true"), () => ok([...viaMaster, target, "true"])],
                ROUNDS,
                2 * BUDGET_MS,
            );
            const [sshPlain] = await rtts([() => ok([...plain, target, "true"])], ROUNDS, BUDGET_MS);

            // 64 MiB in and out: qga's guest-file-* against ssh cat through the master.
            const src = path.join(dir, "in.bin");
            const data = randomBytes(COPY_BYTES);
            await writeFile(src, data);
            const want = createHash("sha256").update(data).digest("hex");
            const check = async (file: string, how: string) => {
                if (
                    createHash("sha256")
                        .update(await readFile(file))
                        .digest("hex") !== want
                )
                    throw new Error(`${how}: the copy differs from the source`);
                await rm(file);
            };
            const qgaIn = await timed(() => m.copyToGuest(src, "/tmp/bench-qga.bin"));
            const qgaOut = await timed(() => m.copyFromGuest("/tmp/bench-qga.bin", path.join(dir, "qga.out")));
            await check(path.join(dir, "qga.out"), "qga copy");
            await m.succeed("rm -f /tmp/bench-qga.bin");
            const sshIn = await timed(() =>
                sshFiles([...viaMaster, target, "cat > /tmp/bench-ssh.bin"], src, undefined),
            );
            const sshOut = await timed(() =>
                sshFiles([...viaMaster, target, "cat /tmp/bench-ssh.bin"], undefined, path.join(dir, "ssh.out")),
            );
            await check(path.join(dir, "ssh.out"), "ssh cat copy");
            await m.succeed("rm -f /tmp/bench-ssh.bin");

            const rows: Row[] = [
                {
                    bench: "channelSsh",
                    measure: `\`true\` round trip, qemu-ga, Debian guest (median of ${qga.n}; p90 ${fmtMs(qga.p90)})`,
                    provider: fmtMs(qga.ms),
                    reference: `ssh via ControlMaster ${fmtMs(sshMaster.ms)} (median of ${sshMaster.n}, taking turns; p90 ${fmtMs(sshMaster.p90)})`,
                    ratio: fmtRatio(qga.ms / sshMaster.ms),
                    target: "≤ 1.00×",
                    verdict: verdict(qga.ms <= sshMaster.ms),
                },
                {
                    bench: "channelSsh",
                    measure: `\`true\` round trip, qemu-ga, Debian guest (median of ${qga.n})`,
                    provider: fmtMs(qga.ms),
                    reference: `ssh, a new connection each ${fmtMs(sshPlain.ms)} (median of ${sshPlain.n})`,
                    ratio: fmtRatio(qga.ms / sshPlain.ms),
                },
                {
                    bench: "channelSsh",
                    measure: "64 MiB into the guest, qemu-ga",
                    provider: `${mbPerSecond(COPY_BYTES, qgaIn.ms).toFixed(1)} MB/s`,
                    reference: `ssh cat ${mbPerSecond(COPY_BYTES, sshIn.ms).toFixed(1)} MB/s`,
                    ratio: fmtRatio(sshIn.ms / qgaIn.ms),
                },
                {
                    bench: "channelSsh",
                    measure: "64 MiB out of the guest, qemu-ga",
                    provider: `${mbPerSecond(COPY_BYTES, qgaOut.ms).toFixed(1)} MB/s`,
                    reference: `ssh cat ${mbPerSecond(COPY_BYTES, sshOut.ms).toFixed(1)} MB/s`,
                    ratio: fmtRatio(sshOut.ms / qgaOut.ms),
                },
            ];
            return {
                rows,
                notes: [
                    `channelSsh: one Debian 12 guest under TCG (768 MiB) running Debian's qemu-guest-agent and sshd; round-trip ratios are qga time / ssh time (below 1× is faster than ssh); copy ratios are qga throughput relative to \`ssh cat\` (above 1× is faster than ssh). ssh is OpenSSH's client on a forwarded 127.0.0.1 port, ed25519 key; "via ControlMaster" reuses one connection (each command still starts an ssh client); qga and ssh via the master take turns in blocks of ${BLOCK} rounds, until ${ROUNDS} each or ${(2 * BUDGET_MS) / 1000} s; plain ssh runs alone after them, ${ROUNDS} rounds or ${BUDGET_MS / 1000} s. Copies are checked byte for byte (SHA-256) after the timing.`,
                ],
            };
        } finally {
            machine?.close();
            if (master && master.exitCode === null) master.kill("SIGTERM");
            await deb?.stop();
        }
    });
}

/**
 * Round trips of each of `fns` (three warm-up calls each first), taking turns in blocks of
 * BLOCK until each has `rounds` or `budgetMs` is spent: median, p90 and how many ran.
 */
async function rtts(
    fns: (() => Promise<unknown>)[],
    rounds: number,
    budgetMs: number,
): Promise<{ ms: number; p90: number; n: number }[]> {
    for (const fn of fns) for (let i = 0; i < 3; i++) await fn();
    const xs: number[][] = fns.map(() => []);
    const until = Date.now() + budgetMs;
    while (xs[0].length < rounds && Date.now() < until)
        for (const [i, fn] of fns.entries())
            for (let k = 0; k < BLOCK && xs[i].length < rounds; k++) xs[i].push((await timed(fn)).ms);
    return xs.map((x) => ({ ms: median(x), p90: quantile(x, 0.9), n: x.length }));
}

function quantile(xs: number[], q: number): number {
    const s = [...xs].sort((a, b) => a - b);
    return s[Math.min(s.length - 1, Math.floor(q * s.length))];
}

function sshRun(args: string[]): Promise<{ code: number | null; stderr: string }> {
    return new Promise((resolve, reject) => {
        const child = spawn("ssh", args, { stdio: ["ignore", "ignore", "pipe"] });
        let stderr = "";
        const timer = setTimeout(() => child.kill("SIGKILL"), 60_000);
        child.stderr!.on("data", (d: Buffer) => (stderr += d.toString()));
        child.once("error", reject);
        child.once("close", (code) => {
            clearTimeout(timer);
            resolve({ code, stderr });
        });
    });
}

/** ssh with stdin from a file and/or stdout to a file (opened 0600 here). */
async function sshFiles(args: string[], stdinFile: string | undefined, stdoutFile: string | undefined): Promise<void> {
    const input = stdinFile ? await open(stdinFile, "r") : undefined;
    const output = stdoutFile ? await open(stdoutFile, "w", 0o600) : undefined;
    try {
        await new Promise<void>((resolve, reject) => {
            const child = spawn("ssh", args, {
                stdio: [input ? input.fd : "ignore", output ? output.fd : "ignore", "pipe"],
            });
            let stderr = "";
            const timer = setTimeout(() => child.kill("SIGKILL"), 300_000);
            child.stderr!.on("data", (d: Buffer) => (stderr += d.toString()));
            child.once("error", reject);
            child.once("close", (code) => {
                clearTimeout(timer);
                code === 0 ? resolve() : reject(new Error(`ssh ${args.slice(-1)[0]} exited ${code}: ${stderr}`));
            });
        });
    } finally {
        await input?.close();
        await output?.close();
    }
}

async function waitFor(fn: () => Promise<boolean>, timeoutMs: number, message: string): Promise<void> {
    const until = Date.now() + timeoutMs;
    while (!(await fn())) {
        if (Date.now() > until) throw new Error(message);
        await new Promise((r) => setTimeout(r, 500));
    }
}
