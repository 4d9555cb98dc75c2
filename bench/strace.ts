import { spawn } from "node:child_process";
import { readFile, rm } from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";

/**
 * What a process (all its threads, and every child it starts meanwhile, such as qemu-img)
 * really read from a set of files while `fn` ran, from the kernel's side: `strace -f -y`
 * names the file behind each descriptor, so a read counted here is a read, whatever code path
 * made it. (Node 20 reads files with read(2) on libuv's pool, not io_uring: strace sees them.)
 * A mapping of a watched file (b3sum hashes through mmap) counts as reading all it maps.
 */
export interface TracedReads {
    /** Bytes returned by read-family calls on the files, per program (node, qemu-img, …). */
    bytesByProgram: Record<string, number>;
    callsByProgram: Record<string, number>;
    total: number;
}

const READ_CALL = /^(\d+)\s+(?:read|pread64|readv|preadv|preadv2)\(\d+<([^>]*)>,(.*)$/;
const RESUMED = /^(\d+)\s+<\.\.\. (?:read|pread64|readv|preadv|preadv2) resumed>.*\)\s+=\s+(-?\d+)/;
const RESULT = /\)\s+=\s+(-?\d+)/;
/** mmap(addr, length, prot, flags, fd<file>, offset): the length is what the mapper may read. */
const MMAP_CALL = /^(\d+)\s+mmap\([^,]*, (\d+), [^,]*, [^,]*, \d+<([^>]*)>,/;
const EXECVE = /^(\d+)\s+execve\("([^"]*)"/;
const CLONE = /^(\d+)\s+(?:clone3?|v?fork)\(.*\)\s+=\s+(\d+)/;
const CLONE_RESUMED = /^(\d+)\s+<\.\.\. (?:clone3?|v?fork) resumed>.*\)\s+=\s+(\d+)/;

export async function traceReads<T>(
    pid: number,
    isWatched: (file: string) => boolean,
    fn: () => Promise<T>,
): Promise<{ value: T; reads: TracedReads }> {
    const out = path.join(os.tmpdir(), `pq-bench-strace-${process.pid}-${Date.now()}.txt`);
    const tracer = spawn(
        "strace",
        [
            "-f",
            "-y",
            "-s",
            "0",
            "-e",
            "trace=read,pread64,readv,preadv,preadv2,mmap,execve,clone,clone3,fork,vfork",
            "-e",
            "signal=none",
            "-o",
            out,
            "-p",
            String(pid),
        ],
        {
            stdio: ["ignore", "ignore", "pipe"],
        },
    );
    const exited = new Promise<number | null>((resolve) => tracer.once("exit", (code) => resolve(code)));
    try {
        await new Promise<void>((resolve, reject) => {
            let err = "";
            const timer = setTimeout(() => reject(new Error(`strace did not attach to ${pid}: ${err}`)), 10_000);
            tracer.stderr!.on("data", (d: Buffer) => {
                err += d.toString("utf8");
                if (/attached/.test(err)) {
                    clearTimeout(timer);
                    resolve();
                }
            });
            tracer.once("error", (e) => {
                clearTimeout(timer);
                reject(new Error(`strace could not run (apt-get install strace): ${e.message}`));
            });
        });
        const value = await fn();
        // SIGINT detaches cleanly and flushes the output.
        tracer.kill("SIGINT");
        await exited;
        return { value, reads: parseTrace(await readFile(out, "utf8"), isWatched) };
    } finally {
        if (tracer.exitCode === null && tracer.signalCode === null) {
            tracer.kill("SIGKILL");
            await exited;
        }
        await rm(out, { force: true });
    }
}

function parseTrace(text: string, isWatched: (file: string) => boolean): TracedReads {
    const program = new Map<number, string>();
    const pendingFile = new Map<number, string>();
    const bytesByProgram: Record<string, number> = {};
    const callsByProgram: Record<string, number> = {};
    let total = 0;
    const count = (pid: number, file: string, bytes: number) => {
        if (!isWatched(file) || bytes <= 0) return;
        // Threads that existed before strace attached are the node process's own.
        const name = program.get(pid) ?? "node";
        bytesByProgram[name] = (bytesByProgram[name] ?? 0) + bytes;
        callsByProgram[name] = (callsByProgram[name] ?? 0) + 1;
        total += bytes;
    };
    for (const line of text.split("\n")) {
        // A thread or child runs what its parent ran until it execs: qemu-img reads on its own threads.
        const cl = CLONE.exec(line) ?? CLONE_RESUMED.exec(line);
        if (cl) {
            // The child may already have been seen exec'ing: strace can print its lines before the parent's return.
            if (!program.has(Number(cl[2]))) program.set(Number(cl[2]), program.get(Number(cl[1])) ?? "node");
            continue;
        }
        const ex = EXECVE.exec(line);
        if (ex) {
            program.set(Number(ex[1]), path.basename(ex[2]));
            continue;
        }
        const mapped = MMAP_CALL.exec(line);
        if (mapped) {
            count(Number(mapped[1]), mapped[3], Number(mapped[2]));
            continue;
        }
        const call = READ_CALL.exec(line);
        if (call) {
            const pid = Number(call[1]);
            if (call[3].includes("<unfinished ...>")) pendingFile.set(pid, call[2]);
            else count(pid, call[2], Number(RESULT.exec(call[3])?.[1] ?? 0));
            continue;
        }
        const resumed = RESUMED.exec(line);
        if (resumed) {
            const pid = Number(resumed[1]);
            const file = pendingFile.get(pid);
            pendingFile.delete(pid);
            if (file !== undefined) count(pid, file, Number(resumed[2]));
        }
    }
    return { bytesByProgram, callsByProgram, total };
}
