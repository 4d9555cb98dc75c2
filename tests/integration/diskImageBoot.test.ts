import execa from "execa";
import { createHash } from "node:crypto";
import { mkdir, mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import { createDiskImage, readImage, removeImage, type DiskImageOutputs } from "../../provider/resources/diskImage";
import { bareGuestArgv, ensureTestGuest, waitForSerial } from "../guest/testGuest";

/**
 * A guest boots an overlay on a directory-built ext4 base as its virtio disk, reads the base's
 * file through it, then overwrites the first 4 MiB of the disk. The base must come out byte for
 * byte as it went in, and the overlay must have grown by what the guest wrote.
 */

const DONE = "PQ-DISK-DONE";
const WRITE_MIB = 4;

let work: string;
let qemu: execa.ExecaChildProcess | undefined;

beforeAll(async () => {
    work = await mkdtemp(path.join(os.tmpdir(), "pq-diskimage-boot-"));
});

afterAll(async () => {
    if (qemu && qemu.exitCode === null) {
        qemu.kill("SIGKILL");
        await qemu.catch(() => undefined);
    }
    await rm(work, { recursive: true, force: true });
});

async function sha256(file: string): Promise<string> {
    return createHash("sha256")
        .update(await readFile(file))
        .digest("hex");
}

test("a guest writes through an overlay: the base is unchanged and the overlay grows", async () => {
    const guest = await ensureTestGuest();
    const stateDir = path.join(work, "state");
    const content = path.join(work, "content");
    await mkdir(content);
    await writeFile(path.join(content, "hello.txt"), "hello from the base image\n");

    const base = await createDiskImage({
        stateDir,
        source: { kind: "directory", path: content, size: "16M", label: "base" },
    });
    const overlay = await createDiskImage({
        stateDir,
        source: { kind: "overlay", backing: base.path, backingInputHash: base.inputHash },
    });
    const baseHash = await sha256(base.path);
    const baseStat = await stat(base.path, { bigint: true });
    const overlayBefore = await stat(overlay.path);

    const share = path.join(work, "share");
    await mkdir(share);
    await writeFile(
        path.join(share, "pq-init.sh"),
        [
            "mkdir -p /mnt/img",
            "mount -t ext4 -o ro /dev/vda /mnt/img && cat /mnt/img/hello.txt && umount /mnt/img",
            `dd if=/dev/urandom of=/dev/vda bs=1M count=${WRITE_MIB} conv=fsync && echo ${DONE}`,
            "",
        ].join("\n"),
    );
    const log = path.join(work, "serial.log");
    const argv = bareGuestArgv(guest, { name: "disk", log, disk: overlay.path, share });
    qemu = execa("qemu-system-x86_64", argv, { stdin: "ignore", reject: false });
    const t0 = Date.now();
    const serial = await waitForSerial(log, DONE, 240_000, qemu);
    console.log(
        `guest wrote ${WRITE_MIB} MiB through the overlay ${((Date.now() - t0) / 1000).toFixed(1)} s after QEMU started`,
    );
    expect(serial).toContain("hello from the base image");
    qemu.kill("SIGKILL");
    await qemu;

    expect(await sha256(base.path)).toBe(baseHash);
    const baseAfter = await stat(base.path, { bigint: true });
    expect([baseAfter.mtimeNs, baseAfter.ctimeNs, baseAfter.size]).toEqual([
        baseStat.mtimeNs,
        baseStat.ctimeNs,
        baseStat.size,
    ]);
    const overlayAfter = await stat(overlay.path);
    expect(overlayAfter.size - overlayBefore.size).toBeGreaterThanOrEqual(WRITE_MIB * 1024 * 1024);
    const compare = await execa("qemu-img", ["compare", "-U", base.path, overlay.path], { reject: false });
    expect(compare.stdout).toMatch(/Content mismatch at offset 0!/);

    // Neither image counts as drift: the base is untouched, and writes are what an overlay is for.
    expect((await readImage(base.path, base)).props).toEqual(base);
    expect((await readImage(overlay.path, overlay)).props).toEqual(overlay);
    for (const img of [overlay, base] as DiskImageOutputs[]) expect(await removeImage(img)).toBe("removed");
});
