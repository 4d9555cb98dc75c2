import { randomBytes } from "node:crypto";
import { chmod, mkdir, rm, writeFile } from "node:fs/promises";
import * as net from "node:net";
import * as path from "node:path";
import * as virtualMachine from "../provider/resources/virtualMachine";
import type { VirtualMachineOutputs } from "../provider/resources/virtualMachine";
import { attach, type Machine } from "../sdk/testing";
import { ensureTestGuest, guestKernelArguments, READY_MARKER } from "../tests/guest/testGuest";
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
 * Benchmark: the guest command channel. Round trip of `true` over each transport (median of
 * N) against the NixOS test driver's way — a shell on a serial console, each command followed by
 * an echoed marker — on a second serial port of the same guest; and 64 MiB copied in and out
 * over each transport against 9p (the guest copying to and from a share). The busybox guest has
 * no sshd: qemu-ga against ssh is measured on the Debian guest by channelSsh.ts.
 */

const COPY_BYTES = 64 * MiB;

export async function runChannel(opts: { rounds?: number } = {}): Promise<BenchResult> {
    const rounds = opts.rounds ?? 200;
    const base = await ensureTestGuest();
    const qgaGuest = await ensureTestGuest({ qemuGa: true });
    const live: VirtualMachineOutputs[] = [];
    const machines: Machine[] = [];
    return withTempDir("pq-bench-ch-", async (dir) => {
        try {
            const share = path.join(dir, "share");
            await mkdir(share);
            // The guest writes into the share as root with security_model=none: let it.
            await chmod(share, 0o777);
            const serialSocket = path.join(dir, "s1.sock");
            const boot = async (
                name: string,
                agent: string,
                guest: typeof base,
                extra: Record<string, unknown>,
                shellAgent = true,
            ) => {
                const vm = {
                    name,
                    accel: "tcg",
                    agent,
                    memoryMiB: 512,
                    network: "none",
                    kernel: guest.kernel,
                    initrd: guest.initrd,
                    kernelArguments: guestKernelArguments({
                        name,
                        shellAgent,
                        mounts: extra.shares ? [{ tag: "bench", at: "/mnt/bench" }] : [],
                    }),
                    ...extra,
                };
                const r = await virtualMachine.create({
                    vm,
                    ready: { serialPattern: READY_MARKER, agent: true, timeoutSeconds: 180 },
                    stateDir: path.join(dir, "state"),
                });
                live.push(r.outs as VirtualMachineOutputs);
                const m = attach(r.outs as VirtualMachineOutputs);
                machines.push(m);
                return m;
            };
            const shell = await boot("bench-shell", "shell", base, {
                shares: [{ source: share, mountTag: "bench" }],
                // A second serial port whose host end is a socket: the console-shell reference.
                extraArgs: [
                    "-chardev",
                    `socket,id=bser,path=${serialSocket},server=on,wait=off`,
                    "-device",
                    "isa-serial,chardev=bser",
                ],
            });
            const qga = await boot("bench-qga", "qga", qgaGuest, {}, false);

            const rtt = async (fn: () => Promise<unknown>) => {
                for (let i = 0; i < 5; i++) await fn();
                const xs: number[] = [];
                for (let i = 0; i < rounds; i++) xs.push((await timed(fn)).ms);
                return median(xs);
            };
            const shellRtt = await rtt(() => shell.succeed("true"));
            const qgaRtt = await rtt(() => qga.succeed("true"));

            // The console shell: raw mode, no echo, a shell reading commands from ttyS1.
            await shell.succeed(
                "stty -F /dev/ttyS1 raw -echo && (setsid sh -c 'exec sh < /dev/ttyS1 > /dev/ttyS1 2>&1' &)",
            );
            const [consoleRtt, consoleSetsidRtt] = await withConsole(serialSocket, async (send) => [
                await rtt(() => send("true")),
                await rtt(() => send("setsid sh -c true")),
            ]);

            const copies = async (m: Machine, label: string) => {
                const src = path.join(dir, `${label}.in`);
                await writeFile(src, randomBytes(COPY_BYTES));
                const inMs = (await timed(() => m.copyToGuest(src, "/tmp/bench.bin"))).ms;
                const outMs = (await timed(() => m.copyFromGuest("/tmp/bench.bin", path.join(dir, `${label}.out`)))).ms;
                await m.succeed("rm -f /tmp/bench.bin");
                await rm(src);
                await rm(path.join(dir, `${label}.out`));
                return { inMs, outMs };
            };
            const shellCopy = await copies(shell, "shell");
            const qgaCopy = await copies(qga, "qga");
            // 9p: the same bytes, the guest copying from and to the share.
            await writeFile(path.join(share, "in.bin"), randomBytes(COPY_BYTES));
            const p9In = (await timed(() => shell.succeed("cat /mnt/bench/in.bin > /tmp/bench.bin"))).ms;
            const p9Out = (await timed(() => shell.succeed("cat /tmp/bench.bin > /mnt/bench/out.bin && sync"))).ms;
            await shell.succeed("rm -f /tmp/bench.bin");

            const rows: Row[] = [
                {
                    bench: "channel",
                    measure: `\`true\` round trip, shell agent (median of ${rounds})`,
                    provider: fmtMs(shellRtt),
                    reference: `console shell + marker ${fmtMs(consoleRtt)}`,
                    ratio: fmtRatio(shellRtt / consoleRtt),
                },
                // The agent runs each command as its own session: the fair reference is the console doing the same.
                {
                    bench: "channel",
                    measure: `\`true\` round trip, shell agent (median of ${rounds})`,
                    provider: fmtMs(shellRtt),
                    reference: `console shell running \`setsid sh -c true\` + marker ${fmtMs(consoleSetsidRtt)}`,
                    ratio: fmtRatio(shellRtt / consoleSetsidRtt),
                    target: "≤ 1.50×",
                    verdict: verdict(shellRtt <= 1.5 * consoleSetsidRtt),
                },
                {
                    bench: "channel",
                    measure: `\`true\` round trip, qemu-ga (median of ${rounds})`,
                    provider: fmtMs(qgaRtt),
                    reference: `console shell + marker ${fmtMs(consoleRtt)}`,
                    ratio: fmtRatio(qgaRtt / consoleRtt),
                },
                {
                    bench: "channel",
                    measure: "64 MiB into the guest, shell agent",
                    provider: `${mbPerSecond(COPY_BYTES, shellCopy.inMs).toFixed(1)} MB/s`,
                    reference: `9p ${mbPerSecond(COPY_BYTES, p9In).toFixed(1)} MB/s`,
                    ratio: fmtRatio(p9In / shellCopy.inMs),
                },
                {
                    bench: "channel",
                    measure: "64 MiB out of the guest, shell agent",
                    provider: `${mbPerSecond(COPY_BYTES, shellCopy.outMs).toFixed(1)} MB/s`,
                    reference: `9p ${mbPerSecond(COPY_BYTES, p9Out).toFixed(1)} MB/s`,
                    ratio: fmtRatio(p9Out / shellCopy.outMs),
                },
                {
                    bench: "channel",
                    measure: "64 MiB into the guest, qemu-ga",
                    provider: `${mbPerSecond(COPY_BYTES, qgaCopy.inMs).toFixed(1)} MB/s`,
                    reference: `9p ${mbPerSecond(COPY_BYTES, p9In).toFixed(1)} MB/s`,
                    ratio: fmtRatio(p9In / qgaCopy.inMs),
                },
                {
                    bench: "channel",
                    measure: "64 MiB out of the guest, qemu-ga",
                    provider: `${mbPerSecond(COPY_BYTES, qgaCopy.outMs).toFixed(1)} MB/s`,
                    reference: `9p ${mbPerSecond(COPY_BYTES, p9Out).toFixed(1)} MB/s`,
                    ratio: fmtRatio(p9Out / qgaCopy.outMs),
                },
            ];
            return {
                rows,
                notes: [
                    "channel: round-trip ratios are channel time / console-shell time (below 1× is faster than the console); copy ratios are throughput relative to 9p (above 1× is faster than 9p). Guests under TCG; the console shell runs on a second 16550 serial port of the shell VM, as the NixOS test driver's shell does on its console; the busybox guest has no sshd, so `ssh cat` is not measured.",
                ],
            };
        } finally {
            for (const m of machines) m.close();
            await Promise.all(live.map((o) => virtualMachine.remove("", o).catch(() => undefined)));
        }
    });
}

/** Connects to the console socket and gives a function that runs a command and waits for its marker. */
async function withConsole<T>(
    socketPath: string,
    use: (send: (command: string) => Promise<void>) => Promise<T>,
): Promise<T> {
    const socket = net.createConnection({ path: socketPath });
    await new Promise<void>((resolve, reject) => {
        socket.once("connect", resolve);
        socket.once("error", reject);
    });
    let seen = "";
    let waiter: (() => void) | undefined;
    socket.on("data", (d: Buffer) => {
        seen += d.toString("latin1");
        waiter?.();
    });
    let n = 0;
    const send = async (command: string) => {
        const marker = `PQMARK${++n}`;
        socket.write(`${command}; echo ${marker}\n`);
        const deadline = Date.now() + 30_000;
        while (!seen.includes(`${marker}\n`)) {
            if (Date.now() > deadline) throw new Error(`the console shell did not print ${marker} within 30 s`);
            await new Promise<void>((resolve) => {
                waiter = resolve;
                setTimeout(resolve, 1000);
            });
        }
        seen = seen.slice(seen.indexOf(`${marker}\n`) + marker.length + 1);
    };
    try {
        return await use(send);
    } finally {
        socket.destroy();
    }
}
