import { appendFile, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import { cleanConsole, serialMatcher } from "../../provider/core/serialPattern";
import { SerialLogWatcher, serialLogTail } from "../../provider/host/qemu/serialWatch";

let dir: string;
beforeEach(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), "pulumi-qemu-serialwatch-"));
});
afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
});

function cpuMs(since: NodeJS.CpuUsage): number {
    const u = process.cpuUsage(since);
    return (u.user + u.system) / 1000;
}

describe("SerialLogWatcher", () => {
    test("a chatty 50 MB console is read once, in pieces, and the marker after it is found", async () => {
        const log = path.join(dir, "serial.log");
        await writeFile(log, "");
        const line = "\x1b[0;32m[    1.234567] systemd[1]: chatty unit says something again and again\x1b[0m\r\n";
        const step = line.repeat(Math.ceil((1024 * 1024) / line.length)); // ~1 MiB per poll
        const watcher = new SerialLogWatcher(log, "/login: *$/");
        const t0 = process.cpuUsage();
        for (let i = 0; i < 50; i++) {
            await appendFile(log, step);
            expect(await watcher.poll()).toBe(false);
            expect(await watcher.poll()).toBe(false); // nothing new: nothing read
        }
        await appendFile(log, "\r\nDebian GNU/Linux 12 ttyS0\r\n\r\nvm lo\x1b[1mgin: ");
        expect(await watcher.poll()).toBe(true);
        const incremental = cpuMs(t0);
        const size = (await readFile(log)).length;
        expect(watcher.bytesRead).toBe(size); // every byte read exactly once

        // One poll of re-reading and cleaning the whole log, as the provider did on every tick.
        const t1 = process.cpuUsage();
        expect(serialMatcher("/login: *$/")(cleanConsole(await readFile(log, "utf8")))).toBe(true);
        const oneFullPoll = cpuMs(t1);
        console.log(
            `serial watch, ${(size / 2 ** 20).toFixed(1)} MiB in 51 growth steps, 101 polls: ${incremental.toFixed(0)} ms CPU in all; ` +
                `one whole-log re-read poll: ${oneFullPoll.toFixed(0)} ms CPU (x101 polls ~ ${((oneFullPoll * 101) / 1000).toFixed(1)} s)`,
        );
    }, 120_000);

    test("a log not there yet, then replaced by a new run's, is read from its start", async () => {
        const log = path.join(dir, "serial.log");
        const watcher = new SerialLogWatcher(log, "ready");
        expect(await watcher.poll()).toBe(false);
        await writeFile(log, "x".repeat(5000));
        expect(await watcher.poll()).toBe(false);
        await rm(log);
        await writeFile(log, "rea");
        expect(await watcher.poll()).toBe(false);
        await appendFile(log, "dy");
        expect(await watcher.poll()).toBe(true);
        expect(watcher.bytesRead).toBe(5005);
    });

    test("UTF-8 cut between polls is decoded whole", async () => {
        const log = path.join(dir, "serial.log");
        const bytes = Buffer.from("prêt à démarrer");
        await writeFile(log, bytes.subarray(0, 3)); // "pr" + first byte of "ê"
        const watcher = new SerialLogWatcher(log, "prêt à");
        expect(await watcher.poll()).toBe(false);
        await appendFile(log, bytes.subarray(3));
        expect(await watcher.poll()).toBe(true);
    });

    test("serialLogTail reads only the end of a big log", async () => {
        const log = path.join(dir, "serial.log");
        await writeFile(log, "early line\r\n".repeat(200_000) + "\x1b[2Jlast words\r\n");
        const tail = await serialLogTail(log, 2);
        expect(tail).toBe("early line\nlast words");
        expect(await serialLogTail(path.join(dir, "missing.log"))).toBe("(no serial log)");
    });
});
