import { randomBytes, createHash } from "node:crypto";
import { mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import { blake3 } from "@noble/hashes/blake3";
import { GuestChannelError } from "../../provider/host/guest/guestChannel";
import * as gc from "../../provider/resources/guestCommand";
import type { GuestCommandOutputs } from "../../provider/resources/guestCommand";
import { attach, faults, type Machine } from "../../sdk/testing";
import { bootDebianQga, type DebianQgaVm } from "../guest/debianQga";

/**
 * agent "qga" against the real Debian 12 guest's own qemu-guest-agent (the systemd unit udev
 * starts when the virtio port appears), not the busybox guest's borrowed binary: exit codes,
 * stdout and stderr, a binary round trip, a timeout and the command after it, copies in and
 * out with guest-file-* (BLAKE3 matching), a GuestCommand naming the VM by id, and a file
 * system filled and freed (faults' fillFileSystem) with the agent answering throughout. One Debian
 * boot under TCG (one to two minutes) shared by the cases.
 */

let work: string;
let deb: DebianQgaVm;
let machine: Machine;

beforeAll(async () => {
    work = await mkdtemp(path.join(os.tmpdir(), "pq-qgadeb-"));
    const t0 = Date.now();
    deb = await bootDebianQga(work, "qga-debian");
    console.log(
        `Debian with qga: ready (cloud-init final stage, qemu-ga answering, sshd's port) in ${((Date.now() - t0) / 1000).toFixed(1)} s`,
    );
    machine = attach(deb.outs);
}, 10 * 60_000);

afterAll(async () => {
    machine?.close();
    await deb?.stop();
    if (work) await rm(work, { recursive: true, force: true });
}, 120_000);

test("the agent is Debian's qemu-guest-agent service on org.qemu.guest_agent.0", async () => {
    expect(deb.outs.agent).toBe("qga");
    expect(await machine.succeed("cat /sys/class/virtio-ports/*/name")).toBe("org.qemu.guest_agent.0\n");
    expect(await machine.succeed("systemctl is-active qemu-guest-agent; . /etc/os-release; echo $ID $VERSION_ID")).toBe(
        "active\ndebian 12\n",
    );
}, 60_000);

test("exit codes 0, 1, 255 and a signal; stdout and stderr apart; env", async () => {
    expect((await machine.execute("true")).exitCode).toBe(0);
    expect((await machine.execute("exit 1")).exitCode).toBe(1);
    expect((await machine.execute("exit 255")).exitCode).toBe(255);
    expect((await machine.execute("kill -TERM $$")).exitCode).toBe(143);
    expect(await machine.execute("echo out; echo err >&2; exit 7")).toMatchObject({
        exitCode: 7,
        stdout: "out\n",
        stderr: "err\n",
    });
    expect(await machine.succeed(`printf '%s' "$V"`, { env: { V: 'it\'s\n"q"' } })).toBe('it\'s\n"q"');
    await expect(machine.succeed("echo nope >&2; exit 3")).rejects.toThrow(
        'command "echo nope >&2; exit 3" exited 3; stderr: "nope\\n"',
    );
}, 60_000);

test("1 MiB of random binary through stdin and back", async () => {
    const data = randomBytes(1024 * 1024);
    const r = await machine.execute("cat", { stdin: data });
    expect(r.exitCode).toBe(0);
    expect(r.raw.stdout.equals(data)).toBe(true);
}, 120_000);

test("a command past its timeout is killed in the guest; the next command works", async () => {
    const err = await machine.execute("echo started; sleep 300", { timeoutSeconds: 2 }).catch((e) => e);
    expect(err).toBeInstanceOf(GuestChannelError);
    expect(err.kind).toBe("timeout");
    expect(err.message).toMatch(/did not finish within 2 s and was killed/);
    // Every process's command line, read from /proc (not relying on procps being in the image): no `sleep 300` left.
    const processes = await machine.succeed(
        "for p in /proc/[0-9]*; do tr '\\0' ' ' < $p/cmdline 2>/dev/null; echo; done",
    );
    expect(processes).toMatch(/^\/usr\/sbin\/qemu-ga/m);
    expect(processes).not.toMatch(/^sleep 300/m);
    expect(await machine.succeed("echo after")).toBe("after\n");
}, 60_000);

test("copy 8 MiB in and out with guest-file-*, BLAKE3 matching; the guest sees the same bytes", async () => {
    const src = path.join(work, "in.bin");
    const back = path.join(work, "back.bin");
    const data = randomBytes(8 * 1024 * 1024);
    await writeFile(src, data);
    await machine.copyToGuest(src, "/tmp/copied.bin");
    // Checked inside too (Debian has sha256sum, not b3sum), so a copy that went wrong both ways cannot pass.
    expect(await machine.succeed("sha256sum /tmp/copied.bin | cut -d' ' -f1")).toBe(
        createHash("sha256").update(data).digest("hex") + "\n",
    );
    await machine.succeed("head -c 1000 /dev/urandom >> /tmp/copied.bin");
    await machine.copyFromGuest("/tmp/copied.bin", back);
    const guestHash = (await machine.succeed("sha256sum /tmp/copied.bin | cut -d' ' -f1")).trim();
    const copied = await readFile(back);
    expect(copied.length).toBe(data.length + 1000);
    expect(copied.subarray(0, data.length).equals(data)).toBe(true);
    expect(createHash("sha256").update(copied).digest("hex")).toBe(guestHash);
    // And the untouched round trip: BLAKE3 of what came back equals BLAKE3 of what went in.
    await machine.succeed("truncate -s 8388608 /tmp/copied.bin");
    await machine.copyFromGuest("/tmp/copied.bin", back);
    expect(Buffer.from(blake3(await readFile(back))).toString("hex")).toBe(Buffer.from(blake3(data)).toString("hex"));
    expect((await stat(back)).mode & 0o077).toBe(0);
    await machine.succeed("rm /tmp/copied.bin");
}, 180_000);

test("GuestCommand with the VM given by id runs over Debian's qemu-ga", async () => {
    const inputs = {
        vm: deb.id,
        stateDir: path.join(work, "state"),
        create: "echo $WHO > /tmp/gc-deb; cat /tmp/gc-deb",
        delete: "rm /tmp/gc-deb",
        check: "test -f /tmp/gc-deb",
        environment: { WHO: "debian" },
    };
    expect((await gc.check({}, inputs)).failures ?? []).toEqual([]);
    const made = await gc.create(inputs);
    const outs = made.outs as GuestCommandOutputs;
    expect(outs).toMatchObject({ stdout: "debian\n", exitCode: 0, vmTarget: { agent: "qga", pid: deb.outs.pid } });
    expect(((await gc.read(made.id, outs)).props as GuestCommandOutputs).drift).toBeUndefined();
    await gc.remove(made.id, outs);
    expect(await machine.succeed("test -e /tmp/gc-deb || echo removed")).toBe("removed\n");
}, 60_000);

test("fillFileSystem over Debian's qemu-ga: root's file system full, root's reserve too, the agent still answering; undo frees it", async () => {
    const f = faults(deb.outs);
    try {
        const fault = await f.fillFileSystem("/var/tmp");
        const w = await machine.execute("dd if=/dev/zero of=/var/tmp/pq-after-fill bs=64k count=4 conv=fsync");
        expect(w.exitCode).not.toBe(0);
        expect(w.stderr).toMatch(/No space left on device/);
        expect((await machine.succeed("df -P -k /var/tmp | awk 'NR==2 {print $4}'")).trim()).toBe("0");
        // qemu-ga needs no room on the disk to take a command: the undo goes through it.
        await fault.undo();
        await machine.succeed(
            "dd if=/dev/zero of=/var/tmp/pq-after-fill bs=64k count=4 conv=fsync 2>/dev/null && rm /var/tmp/pq-after-fill",
        );
        expect(await machine.succeed("ls -A /var/tmp")).not.toMatch(/pulumi-qemu-fill/);
    } finally {
        await f.undoAll();
    }
}, 600_000);
