import { chmod, link, mkdir, mkdtemp, rm, symlink, writeFile } from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import { HashCache, hashTree } from "../../provider/host/files/fileHash";

/**
 * The tree hash is a directory image's identity: any change to how a tree is walked or hashed
 * would replace every directory image on upgrade. Golden values for a tree with more entries in
 * one directory than are lstat'ed at once, a hard link, a symlink, an empty file and files on
 * both sides of the small-file and cache thresholds. The SHA-256 one was computed by 0.1
 * (commit 3a6c27e), the BLAKE3 one by the first BLAKE3 commit (0bb4f98); both by this code too.
 */
const GOLDEN = {
    blake3: "a28766154b8b3d49f746239faf5662e620b34ab51be487a649e5628fd7170847",
    sha256: "8472b7064bf5cc76b4d6d2608f7636a3190e10f947a4faa0cab4cb253df911bc",
};

let work: string;

beforeAll(async () => {
    work = await mkdtemp(path.join(os.tmpdir(), "pq-tree-"));
});

afterAll(async () => {
    await rm(work, { recursive: true, force: true });
});

function bytes(n: number, seed: number): Buffer {
    const b = Buffer.alloc(n);
    for (let i = 0; i < n; i++) b[i] = (i * 31 + seed * 17 + (i >>> 9)) & 255;
    return b;
}

async function goldenTree(root: string): Promise<void> {
    await mkdir(path.join(root, "sub"), { recursive: true });
    for (let i = 0; i < 40; i++)
        await writeFile(path.join(root, `f${String(i).padStart(2, "0")}`), bytes(100 + i * 37, i));
    await writeFile(path.join(root, "sub", "empty"), "");
    await writeFile(path.join(root, "sub", "mid.bin"), bytes(300 * 1000, 1));
    await writeFile(path.join(root, "big.bin"), bytes(2 * 1000 * 1000, 2));
    await link(path.join(root, "f03"), path.join(root, "sub", "hard-f03"));
    await symlink("../f01", path.join(root, "sub", "link"));
    const modes: [string, number][] = [
        ["", 0o755],
        ["sub", 0o750],
        ["f00", 0o600],
        ["big.bin", 0o644],
        ["sub/mid.bin", 0o640],
        ["sub/empty", 0o444],
    ];
    for (const [rel, mode] of modes) await chmod(path.join(root, rel), mode);
}

test.each(["blake3", "sha256"] as const)(
    "the %s tree hash of the golden tree is the one released",
    async (algorithm) => {
        const root = path.join(work, `golden-${algorithm}`);
        await goldenTree(root);
        const tree = await hashTree(root, await HashCache.load(path.join(work, `cache-${algorithm}.json`)), algorithm);
        expect(tree.entries).toHaveLength(47);
        expect(tree.entries.find((e) => e.rel === "sub/hard-f03")).toMatchObject({ type: "file", linkOf: "f03" });
        expect(tree.treeHash).toBe(GOLDEN[algorithm]);
    },
);
