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

            const rtt = async (fn: () => Promise<unknown>, rounds: number) => {
                for (let i = 0; i < 3; i++) await fn();
                const xs: number[] = [];
                const until = Date.now() + BUDGET_MS;
                while (xs.length < rounds && Date.now() < until) xs.push((await timed(fn)).ms);
                return { ms: median(xs), n: xs.length };
            };
            const ok = async (args: string[]) => {
                const r = await sshRun(args);
                if (r.code !== 0) throw new Error(`ssh ${args.slice(-1)[0]} exited ${r.code}: ${r.stderr}`);
            };
            const qga = await rtt(() => m.succeed("true"), ROUNDS);
            const sshMaster = await rtt(() => ok([...viaMaster, target, "true"]), ROUNDS);
            const sshPlain = await rtt(() => ok([...plain, target, "true"]), ROUNDS);

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
                    measure: `\`true\` round trip, qemu-ga, Debian guest (median of ${qga.n})`,
                    provider: fmtMs(qga.ms),
                    reference: `ssh via ControlMaster ${fmtMs(sshMaster.ms)} (median of ${sshMaster.n})`,
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
                    `channelSsh: one Debian 12 guest under TCG (768 MiB) running Debian's qemu-guest-agent and sshd; round-trip ratios are qga time / ssh time (below 1× is faster than ssh); copy ratios are qga throughput relative to \`ssh cat\` (above 1× is faster than ssh). ssh is OpenSSH's client on a forwarded 127.0.0.1 port, ed25519 key; "via ControlMaster" reuses one connection (each command still starts an ssh client); rounds stop at ${ROUNDS} or after ${BUDGET_MS / 1000} s. Copies are checked byte for byte (SHA-256) after the timing.`,
                ],
            };
        } finally {
            machine?.close();
            if (master && master.exitCode === null) master.kill("SIGTERM");
            await deb?.stop();
        }
    });
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
