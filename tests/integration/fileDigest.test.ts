import execa from "execa";
import { randomBytes } from "node:crypto";
import { chmod, mkdtemp, rm, writeFile } from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import { b3sumFile, b3sumUsable, BLAKE3_OF_NOTHING } from "../../provider/host/files/b3sum";
import {
    B3SUM_FROM_BYTES,
    digestFile,
    READ_BUFFER_BYTES,
    READ_WHOLE_UP_TO_BYTES,
    readWholeSync,
    type ReadCounter,
} from "../../provider/host/files/fileDigest";

/**
 * Every way the provider takes a content digest gives the digest of the reference tools, at the
 * sizes where chunking goes wrong: empty, BLAKE3's 1 KiB chunk edges, our 4 MiB read buffer's
 * edges, and past the size from which b3sum takes over.
 */

let work: string;

beforeAll(async () => {
    work = await mkdtemp(path.join(os.tmpdir(), "pq-digest-"));
});

afterAll(async () => {
    await rm(work, { recursive: true, force: true });
});

const KiB = 1024;
const SIZES = [
    0,
    1,
    KiB - 1,
    KiB,
    KiB + 1,
    64 * KiB + 1,
    READ_WHOLE_UP_TO_BYTES,
    READ_WHOLE_UP_TO_BYTES + 1,
    READ_BUFFER_BYTES - 1,
    READ_BUFFER_BYTES,
    READ_BUFFER_BYTES + 1,
    2 * READ_BUFFER_BYTES + 3,
    B3SUM_FROM_BYTES + 5,
];

async function fileOf(bytes: number): Promise<string> {
    const file = path.join(work, `data-${bytes}.bin`);
    await writeFile(file, randomBytes(bytes));
    return file;
}

async function tool(cmd: string, file: string): Promise<string> {
    return (await execa(cmd, [file])).stdout.split(" ")[0];
}

test("b3sum on this machine is a working BLAKE3 (the tests below compare against it)", async () => {
    expect(await b3sumUsable()).toBe(true);
});

test.each(SIZES)(
    "%i bytes: b3sum, the native addon, JavaScript and the automatic choice agree with the b3sum CLI; sha256 with sha256sum",
    async (bytes) => {
        const file = await fileOf(bytes);
        const expected = await tool("b3sum", file);
        for (const via of ["b3sum", "native", "javascript"] as const) {
            const counter: ReadCounter = { files: 0, bytes: 0 };
            const got = await digestFile(file, "blake3", { via, counter });
            expect({ via, digest: got.digest, bytes: got.bytes }).toEqual({ via, digest: expected, bytes });
            expect(counter).toEqual({ files: 1, bytes });
        }
        expect((await digestFile(file, "blake3")).digest).toBe(expected);
        expect((await digestFile(file, "sha256")).digest).toBe(await tool("sha256sum", file));
    },
);

test("the empty-input digest the probe checks is BLAKE3's", async () => {
    expect((await execa("b3sum", ["--no-names"], { input: "" })).stdout.trim()).toBe(BLAKE3_OF_NOTHING);
});

test("a b3sum that is missing, fails, or prints another hash is not used", async () => {
    expect(await b3sumUsable(path.join(work, "no-such-b3sum"))).toBe(false);
    const liar = path.join(work, "liar-b3sum");
    await writeFile(
        liar,
        "#!/bin/sh\ncat >/dev/null\necho 0000000000000000000000000000000000000000000000000000000000000000\n",
    );
    await chmod(liar, 0o755);
    expect(await b3sumUsable(liar)).toBe(false);
    const failing = path.join(work, "failing-b3sum");
    await writeFile(failing, "#!/bin/sh\necho 'no such option' >&2\nexit 2\n");
    await chmod(failing, 0o755);
    expect(await b3sumUsable(failing)).toBe(false);
    await expect(b3sumFile(path.join(work, "x"), failing)).rejects.toThrow(/b3sum .* failed: no such option/);
});

test("a file name starting with a dash is hashed as a file, not read as an option", async () => {
    const dir = await mkdtemp(path.join(work, "dash-"));
    await writeFile(path.join(dir, "-v"), "not an option");
    const expected = (await execa("b3sum", ["--no-names", "--", "-v"], { cwd: dir })).stdout.trim();
    const prev = process.cwd();
    process.chdir(dir);
    try {
        expect(await b3sumFile("-v")).toBe(expected);
    } finally {
        process.chdir(prev);
    }
});

/**
 * fileDigest as a process without b3sum on PATH would load it: a fresh module registry (so the
 * b3sum probe is asked again), and optionally without the native addon, as on a platform npm
 * has no prebuilt one for — the one thing this machine cannot be made to lack for real.
 */
async function withoutB3sum<T>(
    opts: { addon: boolean },
    fn: (m: typeof import("../../provider/host/files/fileDigest")) => Promise<T>,
): Promise<T> {
    const savedPath = process.env.PATH;
    let m!: typeof import("../../provider/host/files/fileDigest");
    jest.isolateModules(() => {
        if (!opts.addon) {
            jest.doMock("@napi-rs/blake-hash", () => {
                throw new Error("Cannot find native binding");
            });
        }
        m = require("../../provider/host/files/fileDigest");
    });
    process.env.PATH = "/nonexistent";
    try {
        return await fn(m);
    } finally {
        process.env.PATH = savedPath;
        jest.dontMock("@napi-rs/blake-hash");
    }
}

test("without b3sum on PATH a big file gets the same digest, from the native addon, silently", async () => {
    const file = await fileOf(B3SUM_FROM_BYTES + 7);
    const expected = await tool("b3sum", file);
    const stderr = jest.spyOn(process.stderr, "write");
    try {
        expect((await withoutB3sum({ addon: true }, (m) => m.digestFile(file, "blake3"))).digest).toBe(expected);
        expect(stderr).not.toHaveBeenCalled();
    } finally {
        stderr.mockRestore();
    }
});

test("without b3sum or the addon, JavaScript gives the same digest and a big file says why it is slow", async () => {
    const small = await fileOf(5000);
    const big = await fileOf(B3SUM_FROM_BYTES + 11);
    const [smallWant, bigWant] = [await tool("b3sum", small), await tool("b3sum", big)];
    const stderr = jest.spyOn(process.stderr, "write").mockImplementation(() => true);
    try {
        await withoutB3sum({ addon: false }, async (m) => {
            expect((await m.digestFile(small, "blake3")).digest).toBe(smallWant);
            expect(stderr).not.toHaveBeenCalled();
            expect((await m.digestFile(big, "blake3")).digest).toBe(bigWant);
            expect(stderr).toHaveBeenCalledTimes(1);
            expect(String(stderr.mock.calls[0][0])).toMatch(
                /BLAKE3 in JavaScript, which is slow.*apt-get install b3sum/,
            );
            // Once per process, not once per file.
            await m.digestFile(big, "blake3");
            expect(stderr).toHaveBeenCalledTimes(1);
        });
    } finally {
        stderr.mockRestore();
    }
});

test("a b3sum killed, or printing nothing, fails with what happened", async () => {
    const file = await fileOf(10);
    const killed = path.join(work, "killed-b3sum");
    await writeFile(killed, "#!/bin/sh\nkill -9 $$\n");
    await chmod(killed, 0o755);
    await expect(b3sumFile(file, killed)).rejects.toThrow(/failed: killed by SIGKILL/);
    const silent = path.join(work, "silent-b3sum");
    await writeFile(silent, "#!/bin/sh\nexit 0\n");
    await chmod(silent, 0o755);
    await expect(b3sumFile(file, silent)).rejects.toThrow(/failed: printed "" instead of a digest/);
});

test("a small file that grew past its stat size is not read whole but streamed, to the same digest", async () => {
    const file = await fileOf(100);
    expect(readWholeSync(file, 200)?.length).toBe(100);
    expect(readWholeSync(file, 100)?.length).toBe(100);
    expect(readWholeSync(file, 50)).toBeUndefined();
    // A size smaller than the file is what a caller's stat taken before the file grew would say.
    const expected = await tool("b3sum", file);
    for (const via of ["native", "javascript"] as const)
        expect(await digestFile(file, "blake3", { via, size: 50 })).toEqual({ digest: expected, bytes: 100 });
    expect((await digestFile(file, "sha256", { size: 50 })).digest).toBe(await tool("sha256sum", file));
});
