import { mkdtemp, rm, writeFile } from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import { digestFile, hashingStatus } from "../../provider/host/files/fileDigest";
import { humanBytes, progress, whileWorking, withProgress, type ProgressSink } from "../../provider/host/progress";

/** The progress seam in-process: silent by default, per-call sinks, periodic status while work runs. */

function collector() {
    const lines: { kind: "status" | "warning"; message: string }[] = [];
    const sink: ProgressSink = {
        status: (m) => lines.push({ kind: "status", message: m }),
        warning: (m) => lines.push({ kind: "warning", message: m }),
    };
    return { lines, sink };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

let saved: string | undefined;
beforeAll(() => {
    saved = process.env.PULUMI_QEMU_PROGRESS_SECONDS;
    process.env.PULUMI_QEMU_PROGRESS_SECONDS = "0.05";
});
afterAll(() => {
    if (saved === undefined) delete process.env.PULUMI_QEMU_PROGRESS_SECONDS;
    else process.env.PULUMI_QEMU_PROGRESS_SECONDS = saved;
});

test("without a sink nothing is reported and work runs as is", async () => {
    progress("nobody hears this");
    expect(
        await whileWorking(
            () => "never built",
            async () => 42,
        ),
    ).toBe(42);
});

test("two calls at once each report to their own sink, through awaits", async () => {
    const a = collector();
    const b = collector();
    await Promise.all([
        withProgress(a.sink, async () => {
            await sleep(5);
            progress("from a");
        }),
        withProgress(b.sink, async () => {
            progress("from b");
            await sleep(10);
        }),
    ]);
    expect(a.lines).toEqual([{ kind: "status", message: "from a" }]);
    expect(b.lines).toEqual([{ kind: "status", message: "from b" }]);
});

test("whileWorking reports every interval while work runs, and stops when it ends", async () => {
    const c = collector();
    await withProgress(c.sink, () =>
        whileWorking(
            (s) => `busy ${s}`,
            () => sleep(400),
        ),
    );
    const count = c.lines.length;
    expect(count).toBeGreaterThanOrEqual(3);
    expect(c.lines.every((l) => l.kind === "status" && /^busy \d+$/.test(l.message))).toBe(true);
    await sleep(200);
    expect(c.lines.length).toBe(count);
});

describe("hashing a big file", () => {
    let dir: string;
    beforeAll(async () => {
        dir = await mkdtemp(path.join(os.tmpdir(), "pq-progress-"));
    });
    afterAll(async () => {
        if (dir) await rm(dir, { recursive: true, force: true });
    });

    test("reports the share hashed so far when it reads the file itself", async () => {
        const file = path.join(dir, "big.img");
        await writeFile(file, Buffer.alloc(48 * 1024 * 1024, 7));
        const c = collector();
        // JavaScript BLAKE3: the slowest engine, so the read takes several intervals here.
        await withProgress(c.sink, () => digestFile(file, "blake3", { via: "javascript" }));
        expect(c.lines.length).toBeGreaterThanOrEqual(1);
        const shares = c.lines.map((l) =>
            Number(
                new RegExp(
                    `^hashing ${file.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&")} \\(48 MiB\\): (\\d+) % after \\d+ s$`,
                ).exec(l.message)?.[1],
            ),
        );
        expect(shares.every((n) => n >= 0 && n <= 100)).toBe(true);
    });

    test("status lines read as a user expects", () => {
        expect(hashingStatus("/x.img", 20 * 1024 ** 3, 9 * 1024 ** 3, 12)).toBe(
            "hashing /x.img (20 GiB): 45 % after 12 s",
        );
        expect(hashingStatus("/x.img", 20 * 1024 ** 3, undefined, 12)).toBe(
            "hashing /x.img (20 GiB, with b3sum): 12 s",
        );
        expect(humanBytes(512)).toBe("512 bytes");
        expect(humanBytes(1536)).toBe("1.5 KiB");
    });
});
