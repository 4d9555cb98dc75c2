import execa from "execa";
import { appendFile, readFile, writeFile } from "node:fs/promises";
import * as path from "node:path";
import { cleanConsole, serialMatcher } from "../provider/core/serialPattern";
import { SerialLogWatcher } from "../provider/host/qemu/serialWatch";
import { fmtMs, fmtRatio, MiB, withTempDir, type BenchResult, type Row } from "./common";

/**
 * Benchmark: waiting for `ready.serialPattern` on a chatty console. A guest prints 100 KiB of
 * kernel/systemd chatter between polls, 200 polls (20 MiB in all), and the pattern comes last.
 * The provider's watcher reads each byte once; it is compared with what the provider did before
 * (and what a script would do): re-read, clean and search the whole log on every poll. CPU time
 * of the polls only (not of writing the log). Then a catastrophic regular expression on 100 KB:
 * RE2 against V8's backtracking RegExp, the latter in a child process killed after 10 s.
 */

const POLLS = 200;
const PER_POLL = 100 * 1024;
const PATTERN = "/login: *$/";

function cpuMs(since: NodeJS.CpuUsage): number {
    const u = process.cpuUsage(since);
    return (u.user + u.system) / 1000;
}

async function pollCpu(dir: string, name: string, makePoll: (log: string) => () => Promise<boolean>): Promise<number> {
    const log = path.join(dir, `${name}.log`);
    await writeFile(log, "");
    const line = "\x1b[0;32m[   12.345678] systemd[1]: a chatty unit logs again, as chatty units do\x1b[0m\r\n";
    const chunk = line.repeat(Math.ceil(PER_POLL / line.length)).slice(0, PER_POLL);
    const poll = makePoll(log);
    let cpu = 0;
    for (let i = 0; i < POLLS; i++) {
        await appendFile(log, i === POLLS - 1 ? chunk + "\r\nvm login: " : chunk);
        const t0 = process.cpuUsage();
        const seen = await poll();
        cpu += cpuMs(t0);
        if (seen !== (i === POLLS - 1)) throw new Error(`${name}: poll ${i} answered ${seen}`);
    }
    return cpu;
}

export async function runSerialWatch(): Promise<BenchResult> {
    return withTempDir("pq-bench-serial-", async (dir) => {
        const rows: Row[] = [];
        const ours = await pollCpu(dir, "watcher", (log) => {
            const w = new SerialLogWatcher(log, PATTERN);
            return () => w.poll();
        });
        const whole = await pollCpu(dir, "reread", (log) => {
            const matches = serialMatcher(PATTERN);
            return async () => matches(cleanConsole(await readFile(log, "utf8")));
        });
        rows.push({
            bench: "serial readiness",
            measure: `CPU of ${POLLS} polls while a console grows by ${PER_POLL / 1024} KiB a poll (${((POLLS * PER_POLL) / MiB).toFixed(0)} MiB)`,
            provider: fmtMs(ours),
            reference: `re-read whole log each poll: ${fmtMs(whole)}`,
            ratio: fmtRatio(whole / ours),
            target: "",
            verdict: "",
        });

        const text = "a".repeat(100 * 1024) + "b";
        const t0 = process.hrtime.bigint();
        const found = serialMatcher("/(a+)+$/")(text);
        const re2Ms = Number(process.hrtime.bigint() - t0) / 1e6;
        if (found) throw new Error("RE2 found (a+)+$ in a...b");
        const v8 = await execa(
            process.execPath,
            ["-e", `const t=Date.now(); /(a+)+$/.test("a".repeat(102400)+"b"); console.log(Date.now()-t)`],
            {
                reject: false,
                timeout: 10_000,
                killSignal: "SIGKILL",
            },
        );
        rows.push({
            bench: "serial readiness",
            measure: "/(a+)+$/ against 100 KiB of a's ending in b",
            provider: fmtMs(re2Ms),
            reference: v8.timedOut
                ? "V8 RegExp: not finished after 10 s (killed)"
                : `V8 RegExp: ${fmtMs(Number(v8.stdout))}`,
            ratio: v8.timedOut ? `> ${fmtRatio(10_000 / re2Ms)}` : fmtRatio(Number(v8.stdout) / re2Ms),
            target: "",
            verdict: "",
        });
        return {
            rows,
            notes: [
                "serial readiness: CPU time of the polls (process.cpuUsage), log writes excluded; the watcher and the re-read searched the same bytes and both found the pattern on the last poll only.",
            ],
        };
    });
}
