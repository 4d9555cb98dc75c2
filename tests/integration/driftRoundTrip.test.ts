import execa from "execa";
import { chmod, mkdir, mkdtemp, rm, truncate, writeFile } from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import * as diskImage from "../../provider/resources/diskImage";
import * as runScript from "../../provider/resources/runScript";
import type { DiskImageInputs, DiskImageOutputs } from "../../provider/resources/diskImage";

/**
 * Drift as the engine meets it: `pulumi refresh` calls Read and stores what it returns; the next
 * `pulumi up` calls Diff with that stored state as olds. So drift must survive its own report:
 * create → tamper → Read (twice: a second refresh must not forget) → Diff(olds = Read's output)
 * replaces → the replacement is created and the old one deleted → Read of the new one is clean.
 */

let work: string;
let stateDir: string;

beforeEach(async () => {
    work = await mkdtemp(path.join(os.tmpdir(), "pq-drift-"));
    stateDir = path.join(work, "state");
});

afterEach(async () => {
    await rm(work, { recursive: true, force: true });
});

/** What `pulumi refresh` leaves in the state: Read's props, or nothing when Read says gone. */
async function refresh(state: DiskImageOutputs): Promise<DiskImageOutputs> {
    const r = await diskImage.read(state.path, state);
    expect(r.id).toBe(state.path);
    return r.props as DiskImageOutputs;
}

/** The round trip for one kind of image and one way of tampering with it. */
async function roundTrip(
    inputs: Omit<DiskImageInputs, "stateDir">,
    tamper: (img: DiskImageOutputs) => Promise<void>,
    drift: RegExp,
): Promise<void> {
    const news = { stateDir, ...inputs };
    const created = await diskImage.createDiskImage(news);
    expect(await refresh(created)).toEqual(created);
    await tamper(created);

    const once = await refresh(created);
    expect(once.drift).toMatch(drift);
    const twice = await refresh(once);
    expect(twice.drift).toMatch(drift);
    // What create recorded is still there to compare against; what was found stands beside it.
    expect(twice.inputHash).toBe(created.inputHash);
    expect(twice.contentFingerprint).toBe(created.contentFingerprint);

    // `pulumi up` after the refresh: check, then diff against the refreshed state.
    expect((await diskImage.check(created, news)).failures).toBeUndefined();
    const d = await diskImage.diff(twice.path, twice, news);
    expect(d).toMatchObject({ changes: true, replaces: ["source"] });

    // The engine creates the replacement first (a default path is a new file), then deletes the old.
    const replacement = await diskImage.createDiskImage(news);
    await diskImage.remove(twice.path, twice);
    expect(replacement.path).not.toBe(created.path);
    const clean = await refresh(replacement);
    expect(clean.drift).toBeUndefined();
    expect(await diskImage.diff(clean.path, clean, news)).toEqual({ changes: false });
}

const flipBytes = (img: DiskImageOutputs) =>
    execa("dd", ["if=/dev/urandom", `of=${img.path}`, "bs=4096", "count=1", "seek=64", "conv=notrunc"]).then(
        () => undefined,
    );

test("a file image whose bytes changed is replaced after a refresh", async () => {
    const src = path.join(work, "src.raw");
    await writeFile(src, Buffer.alloc(1024 * 1024, 7));
    await roundTrip({ source: { kind: "file", path: src } }, flipBytes, /content changed/);
});

test("a directory image whose bytes changed is replaced after a refresh", async () => {
    const dir = path.join(work, "tree");
    await mkdir(dir);
    await writeFile(path.join(dir, "hello"), "hi");
    await roundTrip({ source: { kind: "directory", path: dir, size: "4M" } }, flipBytes, /content changed/);
});

test("a blank qcow2 image overwritten with junk is seen and replaced after a refresh", async () => {
    const junk = (img: DiskImageOutputs) =>
        writeFile(img.path, "junk where the qcow2 header was, long enough to be read as one", { flag: "r+" });
    await roundTrip(
        { source: { kind: "blank", size: "1M", format: "qcow2" } },
        junk,
        /is not a qcow2 header we can read/,
    );
});

test("a blank qcow2 image resized behind our back is drift that sticks", async () => {
    const grow = (img: DiskImageOutputs) => execa("qemu-img", ["resize", "-q", img.path, "2M"]).then(() => undefined);
    await roundTrip(
        { source: { kind: "blank", size: "1M", format: "qcow2" } },
        grow,
        /virtual size of 2097152 bytes, created as 1048576/,
    );
});

test("a blank raw image truncated behind our back is drift that sticks", async () => {
    await roundTrip(
        { source: { kind: "blank", size: "1M", format: "raw" } },
        (img) => truncate(img.path, 4096),
        /now 4096 bytes long, created as 1048576/,
    );
});

test("an overlay whose backing file changed is replaced after a refresh, wired or not", async () => {
    const base = await diskImage.createDiskImage({ stateDir, source: { kind: "blank", size: "1M", format: "raw" } });
    const changeBase = () => writeFile(base.path, Buffer.alloc(1024 * 1024, 9));
    await roundTrip(
        { source: { kind: "overlay", backing: base.path, backingInputHash: base.inputHash } },
        changeBase,
        /backing file .* changed since the overlay was made/,
    );
    await roundTrip(
        { source: { kind: "overlay", backing: base.path } },
        changeBase,
        /backing file .* changed since the overlay was made/,
    );
});

test("an overlay rebased behind our back is replaced after a refresh", async () => {
    const base = await diskImage.createDiskImage({ stateDir, source: { kind: "blank", size: "1M", format: "raw" } });
    const other = path.join(work, "other.raw");
    await writeFile(other, Buffer.alloc(1024 * 1024));
    const rebase = (img: DiskImageOutputs) =>
        execa("qemu-img", ["rebase", "-u", "-b", other, "-F", "raw", img.path]).then(() => undefined);
    await roundTrip(
        { source: { kind: "overlay", backing: base.path } },
        rebase,
        /now names .*other\.raw backing file instead of/,
    );
});

test("an edited launcher stays drifted over two refreshes and is rewritten by the next up", async () => {
    const inputs = { vm: { kernel: "/boot/vmlinuz", memoryMiB: 128 }, path: path.join(work, "run.sh") };
    const { id, outs } = await runScript.create(inputs);
    await chmod(outs.path, 0o700);
    // Edited, not replaced: the header stays, so the file is still ours to rewrite.
    await writeFile(outs.path, "echo edited\n", { flag: "a" });
    const once = (await runScript.read(id, outs)).props;
    const twice = (await runScript.read(id, once as never)).props;
    expect(twice.drift).toMatch(/was edited/);
    expect(twice.contentHash).toBe(outs.contentHash);
    expect(await runScript.diff(id, twice as never, inputs)).toEqual({ changes: true });
    const { outs: fixed } = await runScript.update(id, twice as never, inputs);
    expect((await runScript.read(id, fixed)).props.drift).toBeUndefined();
});
