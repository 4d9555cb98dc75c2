import execa from "execa";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { mkdir, mkdtemp, readdir, rm, symlink, writeFile } from "node:fs/promises";
import * as net from "node:net";
import * as os from "node:os";
import * as path from "node:path";
import { InputError } from "../../provider/core/validation";
import { buildExt4 } from "../../provider/host/images/ext4";
import { backingChain, convertImage, createImage, QemuImgError } from "../../provider/host/images/qemuImg";
import { preflightBackingChain, requireRegularChain, requireRegularFile } from "../../provider/host/files/regularFile";
import { refuseImpossibleStateDir } from "../../provider/host/files/stateDirCheck";
import { findInPath, runTool, ToolTimeoutError } from "../../provider/host/process/toolRun";
import { startInChild } from "../support/tsChild";

let dir: string;
beforeEach(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), "pulumi-qemu-hosttools-"));
});
afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
});

/** A qcow2 image whose backing file is a FIFO: `-u` writes the header without opening the backing. */
async function overlayOnFifo(): Promise<{ top: string; fifo: string }> {
    const fifo = path.join(dir, "base.fifo");
    await execa("mkfifo", [fifo]);
    const top = path.join(dir, "top.qcow2");
    await execa("qemu-img", ["create", "-q", "-f", "qcow2", "-u", "-b", fifo, "-F", "raw", top, "1M"]);
    return { top, fifo };
}

/** Processes whose parent is `ppid`, with their command names. */
function childrenOf(ppid: number): { pid: number; comm: string }[] {
    const out: { pid: number; comm: string }[] = [];
    for (const name of readdirSync("/proc")) {
        if (!/^\d+$/.test(name)) continue;
        try {
            const stat = readFileSync(`/proc/${name}/stat`, "utf8");
            const comm = stat.slice(stat.indexOf("(") + 1, stat.lastIndexOf(")"));
            const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
            if (Number(fields[1]) === ppid) out.push({ pid: Number(name), comm });
        } catch {
            // gone meanwhile
        }
    }
    return out;
}

function alive(pid: number): boolean {
    try {
        const state = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]?.[0];
        return state !== "Z";
    } catch {
        return false;
    }
}

async function until(what: string, ok: () => boolean, timeoutMs: number): Promise<void> {
    const end = Date.now() + timeoutMs;
    while (!ok()) {
        if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
        await new Promise((r) => setTimeout(r, 50));
    }
}

describe("deadlines on external tools", () => {
    test("qemu-img info of an image backed by a FIFO fails within its deadline with a clear error, not a hang", async () => {
        const { top } = await overlayOnFifo();
        const t0 = Date.now();
        const err = await backingChain(top, { timeoutMs: 2000 }).catch((e) => e);
        const took = Date.now() - t0;
        expect(err).toBeInstanceOf(QemuImgError);
        expect((err as QemuImgError).stderr).toMatch(/qemu-img did not finish within 2 s and was stopped/);
        console.log(`qemu-img info on a FIFO-backed image stopped after ${took} ms`);
        expect(took).toBeLessThan(20_000); // what is proven: it returned; the bound only keeps a regression from hanging the suite
    }, 30_000);

    test("qemu-img convert reading a FIFO is stopped by the stall detector (no total deadline on data copies)", async () => {
        const fifo = path.join(dir, "source.fifo");
        await execa("mkfifo", [fifo]);
        const err = await convertImage(fifo, "raw", path.join(dir, "out.qcow2"), "qcow2", "qemu-img", {
            stallMs: 1500,
        }).catch((e) => e);
        expect(err).toBeInstanceOf(QemuImgError);
        expect((err as QemuImgError).stderr).toMatch(/read and wrote nothing for 1.5 s/);
    }, 30_000);

    test("the stall detector stops a tool that does nothing, never one that keeps reading", async () => {
        // Reads a little every 200 ms for 2.4 s: slower than the 1 s stall limit overall, never idle for 1 s.
        const worker = `let i = 0; setInterval(() => { require("fs").readFileSync("/proc/self/stat"); if (++i === 12) process.exit(0); }, 200);`;
        const t0 = Date.now();
        const r = await runTool(process.execPath, ["-e", worker], { stallMs: 1000 });
        expect(r.exitCode).toBe(0);
        expect(Date.now() - t0).toBeGreaterThan(2000); // it did run past the stall limit
        await expect(runTool("sleep", ["30"], { stallMs: 1000 })).rejects.toThrow(
            /sleep 30 read and wrote nothing for 1 s/,
        );
    }, 30_000);

    test("runTool reports a missing tool as spawn does, and a deadline as a ToolTimeoutError", async () => {
        const missing = await runTool("pulumi-qemu-no-such-tool", ["x"]);
        expect(missing.spawnError).toMatch(/ENOENT/);
        await expect(runTool("sleep", ["30"], { timeoutMs: 300 })).rejects.toThrow(ToolTimeoutError);
        await expect(runTool("sleep", ["30"], { timeoutMs: 300 })).rejects.toThrow(
            /sleep 30 did not finish within 0.3 s and was stopped/,
        );
    });

    test("setpriv is on this host (util-linux) and a tool dies with the provider that started it, even on kill -9", async () => {
        expect(findInPath("setpriv")).not.toBeNull();
        const { top } = await overlayOnFifo();
        // The "provider": a node process running qemu-img through our adapter; qemu-img blocks opening the FIFO.
        const provider = startInChild(
            `const { backingChain } = require(${JSON.stringify(path.resolve(__dirname, "../../provider/host/images/qemuImg.ts"))});
             backingChain(${JSON.stringify(top)}, { timeoutMs: 600000 }).catch(() => {});
             console.log("started");
             setInterval(() => {}, 1000);`,
        );
        let tool: { pid: number; comm: string } | undefined;
        try {
            await until(
                "qemu-img to start under the provider",
                () => (tool = childrenOf(provider.pid!).find((c) => c.comm === "qemu-img")) !== undefined,
                20_000,
            );
            process.kill(provider.pid!, "SIGKILL");
            await provider;
            await until(`qemu-img (pid ${tool!.pid}) to die with its parent`, () => !alive(tool!.pid), 5000);
        } finally {
            if (provider.exitCode === null) provider.kill("SIGKILL");
            if (tool && alive(tool.pid)) process.kill(tool.pid, "SIGKILL"); // ours: started by this test
        }
    }, 60_000);
});

describe("debugfs commands on stdin", () => {
    test("an ext4 build writes nothing to the temp directory (it works with TMPDIR unusable)", async () => {
        const src = path.join(dir, "tree");
        await mkdir(path.join(src, "sub"), { recursive: true });
        await writeFile(path.join(src, "sub", "a file"), "hello\n");
        const image = path.join(dir, "fs.img");
        await createImage(image, "raw", 8 * 2 ** 20);
        const saved = process.env.TMPDIR;
        process.env.TMPDIR = path.join(dir, "no-such-tmp"); // os.tmpdir() follows it: a temp file there would fail
        try {
            await buildExt4({
                sourceDir: src,
                imageFile: image,
                uuid: "0e4bd5b3-4fa4-4c8b-9e2e-0b4b1b7f6a11",
                hashSeed: "5b1f0c39-1c0c-4a4f-8a41-c5b9f26a3d20",
                paths: ["sub", "sub/a file"],
            });
        } finally {
            process.env.TMPDIR = saved;
        }
        const { stdout } = await execa("debugfs", ["-R", 'stat "/sub/a file"', image]);
        expect(stdout).toMatch(/User:\s+0\s+Group:\s+0/);
        expect(stdout).toMatch(/mtime: 0x00000001/);
        expect(existsSync(path.join(dir, "no-such-tmp"))).toBe(false);
    }, 60_000);
});

describe("special files refused as images and backing files", () => {
    test("a FIFO, a socket and a device are refused with the field named; a regular file passes", async () => {
        const fifo = path.join(dir, "p");
        await execa("mkfifo", [fifo]);
        await expect(requireRegularFile(fifo, "source.path")).rejects.toThrow(
            /^source\.path: source\.path .*\/p is a FIFO \(named pipe\); a disk image must be a regular file/,
        );
        const sock = path.join(dir, "s.sock");
        const server = net.createServer().listen(sock);
        await new Promise((r) => server.once("listening", r));
        try {
            await expect(requireRegularFile(sock, "source.backing")).rejects.toThrow(/source\.backing .* is a socket/);
        } finally {
            server.close();
        }
        await expect(requireRegularFile("/dev/zero", "source.path")).rejects.toThrow(/is a character device/);
        await expect(requireRegularFile(dir, "source.path")).rejects.toThrow(/is a directory/);
        await expect(requireRegularFile(path.join(dir, "absent"), "source.path")).rejects.toThrow(/does not exist/);
        const ok = path.join(dir, "ok.raw");
        await writeFile(ok, Buffer.alloc(512));
        await expect(requireRegularFile(ok, "source.path")).resolves.toBeUndefined();
    });

    test("the chain under an overlay is walked by its headers, and a FIFO in it refused before anything opens it", async () => {
        const { top, fifo } = await overlayOnFifo();
        const t0 = Date.now();
        const err = await preflightBackingChain(top, "source.backing").catch((e) => e);
        expect(err).toBeInstanceOf(InputError);
        expect((err as Error).message).toBe(
            `source.backing: source.backing ${fifo} is a FIFO (named pipe); a backing file (under ${top}) must be a regular file (a FIFO, socket or device would block or be read without end)`,
        );
        expect(Date.now() - t0).toBeLessThan(5000);

        // A sound chain of three, one with a relative backing name, comes back top first.
        const base = path.join(dir, "base.raw");
        await createImage(base, "raw", 2 ** 20);
        const mid = path.join(dir, "mid.qcow2");
        await execa("qemu-img", ["create", "-q", "-f", "qcow2", "-b", "base.raw", "-F", "raw", mid]);
        const upper = path.join(dir, "upper.qcow2");
        await execa("qemu-img", ["create", "-q", "-f", "qcow2", "-b", mid, "-F", "qcow2", upper]);
        const files = await preflightBackingChain(upper, "source.path");
        expect(files).toEqual([upper, mid, base]);
        await expect(requireRegularChain(files, "source.path")).resolves.toBeUndefined();
        expect(await preflightBackingChain(base, "source.path", "raw")).toEqual([base]);
    });
});

describe("impossible state directories", () => {
    test("under /proc, /sys, /dev, on a pseudo filesystem or below a file: refused, naming the field; a real one passes", async () => {
        await expect(refuseImpossibleStateDir("/proc/self/pulumi")).rejects.toThrow(
            /^stateDir: stateDir \/proc\/self\/pulumi is under \/proc/,
        );
        await expect(refuseImpossibleStateDir("/sys/kernel/x", "vm.stateDir")).rejects.toThrow(
            /^vm\.stateDir: .* is under \/sys/,
        );
        await expect(refuseImpossibleStateDir("/dev/shm/../null/x")).rejects.toThrow(/is under \/dev/);
        const file = path.join(dir, "a-file");
        await writeFile(file, "");
        await expect(refuseImpossibleStateDir(path.join(file, "state"))).rejects.toThrow(
            new RegExp(`${file} is a file, not a directory`),
        );
        // Reached through a symbolic link, /proc is not under "/proc" by name: statfs finds it.
        const procLink = path.join(dir, "proc-here");
        await symlink("/proc", procLink);
        await expect(refuseImpossibleStateDir(path.join(procLink, "pulumi-qemu"))).rejects.toThrow(
            /is on a proc filesystem \(at .*proc-here\)/,
        );
        await symlink("/sys", path.join(dir, "sys-here"));
        await expect(refuseImpossibleStateDir(path.join(dir, "sys-here", "state"))).rejects.toThrow(
            /is on a sysfs filesystem/,
        );
        await expect(refuseImpossibleStateDir(path.join(dir, "new", "state"))).resolves.toBe(
            path.join(dir, "new", "state"),
        );
        expect((await readdir(dir)).sort()).toEqual(["a-file", "proc-here", "sys-here"]); // nothing created
    });
});
