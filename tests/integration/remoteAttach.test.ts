import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdtemp, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import { parseHost } from "../../provider/core/hostSpec";
import { connectionFor } from "../../provider/host/ssh/runnerClient";
import * as diskImage from "../../provider/resources/diskImage";
import * as gc from "../../provider/resources/guestCommand";
import type { GuestCommandOutputs } from "../../provider/resources/guestCommand";
import * as vmResource from "../../provider/resources/virtualMachine";
import { cleanConsole, type VirtualMachineOutputs } from "../../provider/resources/virtualMachine";
import { siteOf } from "../../provider/resources/virtualMachine/site";
import { attach, MachineError, type Machine } from "../../sdk/testing";
import { ensureTestGuest, guestKernelArguments, READY_MARKER } from "../guest/testGuest";
import { freePort } from "../support/net";
import { startFarHost, useFarUser, type FarHost } from "../support/farHost";

/**
 * The test API against a VM placed on a far host (this machine reached only through a real sshd
 * as another user): QMP and the guest channel through forwarded unix sockets over the one SSH
 * connection, the serial log and screendumps read on the far host. And a GuestCommand placed
 * on the same host, run there by the runner; one placed elsewhere than its VM is refused at check.
 */

type RemoteVm = VirtualMachineOutputs & { host?: string; hostAccess?: { identityFile?: string; knownHosts?: string } };

let far: FarHost;
let dir: string;
let vm: RemoteVm | undefined;
let vmId: string;
let machine: Machine | undefined;

beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), "pq-rattach-"));
    // Its own far user: another far-host suite running beside this one (its stop() ends all its user runs) cannot disturb it.
    useFarUser("pqattach");
    far = await startFarHost();
    const guest = await ensureTestGuest();
    // The far host has its own copy of the guest files; its QEMU never reads ours.
    const kernel = far.give(guest.kernel, "vmlinuz");
    const initrd = far.give(guest.initrd, "initrd.img");
    const spec = {
        name: "far",
        accel: "tcg",
        agent: "shell",
        network: "user",
        kernel,
        initrd,
        kernelArguments: guestKernelArguments({ name: "far" }),
    };
    const made = await vmResource.create({
        vm: spec,
        ready: { serialPattern: READY_MARKER, timeoutSeconds: 180 },
        host: far.host,
    });
    vm = made.outs as RemoteVm;
    vmId = made.id as string;
    machine = attach(vm);
}, 300_000);

afterAll(async () => {
    machine?.close();
    try {
        if (vm) await vmResource.remove(vmId, vm);
    } finally {
        await far?.stop();
        if (dir) await rm(dir, { recursive: true, force: true });
    }
}, 120_000);

test("the VM's outputs name the far host and paths there", () => {
    expect(vm!.host).toBe(far.url);
    expect(vm!.hostAccess).toEqual({ identityFile: far.identityFile, knownHosts: far.knownHosts });
    expect(vm!.qmpSocket.startsWith(far.home + "/")).toBe(true);
    expect(vm!.serialLog.startsWith(far.home + "/")).toBe(true);
});

test("execute, succeed and fail run in the far guest", async () => {
    const m = machine!;
    expect(await m.succeed("cat /www/index.html")).toBe("pulumi-qemu test guest far\n");
    const r = await m.execute("echo out; echo err >&2; exit 3");
    expect(r).toMatchObject({ exitCode: 3, stdout: "out\n", stderr: "err\n" });
    expect((await m.fail("false")).exitCode).toBe(1);
    await expect(m.succeed("exit 4")).rejects.toThrow(MachineError);
    await expect(m.fail("true")).rejects.toThrow(/expected to fail/);
    // The forwarded sockets are in the SSH connection's private directory.
    const fwd = path.dirname(connectionFor(parseHost(far.host)!).privatePath("x"));
    expect((await stat(fwd)).mode & 0o077).toBe(0);
    expect((await readdir(fwd)).filter((f) => f.startsWith("fwd-")).length).toBeGreaterThanOrEqual(1);
}, 60_000);

test("waitForConsoleText reads the serial log on the far host", async () => {
    const m = machine!;
    expect(await m.waitForConsoleText(READY_MARKER, { timeoutSeconds: 10 })).toBe(READY_MARKER);
    const mark = `far-console-${randomBytes(4).toString("hex")}`;
    await m.succeed(`echo ${mark} > /dev/console`);
    expect(await m.waitForConsoleText(new RegExp(`${mark}\\b`), { timeoutSeconds: 20 })).toBe(mark);
    // The whole log as the far host has it, to its last byte (cleaned as locally; the guest may have printed more since).
    const there = cleanConsole(far.asFarUser(`cat ${vm!.serialLog}`));
    expect(there.length).toBeGreaterThan(0);
    expect((await m.consoleText()).startsWith(there)).toBe(true);
    expect(await m.consoleText()).toContain(mark);
    // A wait that times out carries the tail of the far host's serial log.
    const err = await m.waitForConsoleText("never-printed-xyz", { timeoutSeconds: 1 }).catch((e) => e);
    expect(err).toBeInstanceOf(MachineError);
    expect(err.message).toMatch(/not within 1 s/);
    expect(err.message).toContain(mark);
}, 60_000);

test("copyToGuest and copyFromGuest round-trip bytes", async () => {
    const m = machine!;
    const data = randomBytes(200_000);
    const src = path.join(dir, "in.bin");
    const back = path.join(dir, "out.bin");
    await writeFile(src, data);
    await m.copyToGuest(src, "/tmp/copied.bin");
    expect((await m.succeed("wc -c < /tmp/copied.bin")).trim()).toBe(String(data.length));
    await m.copyFromGuest("/tmp/copied.bin", back);
    expect((await readFile(back)).equals(data)).toBe(true);
}, 120_000);

test("waitForOpenPort sees a listener inside the far guest", async () => {
    const m = machine!;
    await m.waitForClosedPort(8123, { timeoutSeconds: 10 });
    await m.succeed("httpd -p 8123 -h /www");
    await m.waitForOpenPort(8123, { timeoutSeconds: 30 });
}, 60_000);

test("screenshot: QEMU writes the dump on the far host, a PNG arrives here", async () => {
    const m = machine!;
    const png = path.join(dir, "screen.png");
    await m.screenshot(png);
    const bytes = await readFile(png);
    expect(bytes.subarray(0, 8).equals(Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]))).toBe(true);
    expect(bytes.readUInt32BE(16)).toBeGreaterThan(0);
    expect(bytes.readUInt32BE(20)).toBeGreaterThan(0);
    // Nothing is left behind on the far host's temporary directory.
    expect(far.asFarUser("ls -d /tmp/pq-screen-* 2>/dev/null || true").trim()).toBe("");
}, 60_000);

test("QMP through the forward: nics and setLink", async () => {
    const m = machine!;
    const nics = await m.nics();
    expect(nics).toHaveLength(1);
    await m.setLink(nics[0], false);
    await m.waitUntilSucceeds("grep -qx 0 /sys/class/net/eth0/carrier", { timeoutSeconds: 15 });
    await m.setLink(nics[0], true);
    await m.waitUntilSucceeds("grep -qx 1 /sys/class/net/eth0/carrier", { timeoutSeconds: 15 });
}, 60_000);

test("after the SSH connection is closed, the next call makes a new one and new forwards", async () => {
    const m = machine!;
    const connection = connectionFor(parseHost(far.host)!);
    execFileSync("ssh", [...connection.options(), "-O", "exit", "--", "127.0.0.1"], { stdio: "ignore" });
    // The master acknowledges before it is gone: wait until it has removed its socket.
    for (const deadline = Date.now() + 5000; existsSync(connection.controlPath());) {
        if (Date.now() > deadline) throw new Error("the SSH master did not exit within 5 s");
        await new Promise((r) => setTimeout(r, 50));
    }
    expect(await m.succeed("echo back")).toBe("back\n");
    expect(await m.nics()).toHaveLength(1);
}, 60_000);

test("snapshots of a far VM are taken, listed, restored and deleted there, through its host's runner", async () => {
    // Snapshots need a writable qcow2 disk: a far VM with one, made on the far host.
    const img = (await diskImage.create({ source: { kind: "blank", size: "32M", format: "qcow2" }, host: far.host }))
        .outs as diskImage.DiskImageOutputs;
    const made = await vmResource.create({
        vm: {
            name: "far-snap",
            accel: "tcg",
            agent: "shell",
            network: "user",
            kernel: (vm!.vm as { kernel: string }).kernel,
            initrd: (vm!.vm as { initrd: string }).initrd,
            kernelArguments: guestKernelArguments({ name: "far-snap" }),
            disks: [{ path: img.path, format: "qcow2", inputHash: img.inputHash }],
        },
        ready: { agent: true, timeoutSeconds: 180 },
        host: far.host,
    });
    const outs = made.outs as RemoteVm;
    const m = attach(outs);
    try {
        await m.succeed("echo A > /tmp/marker-a");
        const info = await m.snapshot("clean");
        expect(info).toMatchObject({ name: "clean" });
        // The snapshot lives in the far disk, written by the far QEMU.
        expect(far.asFarUser(`qemu-img snapshot -U -l ${img.path}`)).toContain("clean");
        await m.succeed("echo B > /tmp/marker-b");
        await m.restore("clean");
        expect(await m.succeed("cat /tmp/marker-a")).toBe("A\n");
        await m.fail("test -e /tmp/marker-b");
        expect((await m.snapshots()).map((s) => s.name)).toEqual(["clean"]);
        await m.deleteSnapshot("clean");
        expect(await m.snapshots()).toEqual([]);
        await expect(m.restore("clean")).rejects.toThrow(/clean/);
    } finally {
        m.close();
        await vmResource.remove(made.id as string, outs);
        await diskImage.remove(img.path, img);
    }
}, 240_000);

test("a GuestCommand placed on the VM's host runs there through the runner", async () => {
    const inputs = {
        vm: vm!,
        host: far.host,
        create: "echo made > /tmp/gc-far; cat /www/index.html",
        delete: "rm /tmp/gc-far",
    };
    const checked = await gc.check({}, inputs);
    expect(checked.failures ?? []).toEqual([]);
    const made = await gc.create(checked.inputs);
    const outs = made.outs as GuestCommandOutputs & { host?: string };
    expect(outs).toMatchObject({ stdout: "pulumi-qemu test guest far\n", exitCode: 0, host: far.url });
    expect(await machine!.succeed("cat /tmp/gc-far")).toBe("made\n");
    expect(await gc.diff(made.id, outs, checked.inputs)).toMatchObject({ changes: false });
    await gc.remove(made.id, outs);
    await machine!.fail("test -e /tmp/gc-far");
}, 120_000);

test("a GuestCommand without a host goes where its VM is; placed elsewhere than its VM it fails check, naming both hosts", async () => {
    // No host of its own: it takes the VM's (and the key files its outputs kept).
    const here = await gc.check({}, { vm: vm!, create: "true" });
    expect(here.failures ?? []).toEqual([]);
    expect(here.inputs.host).toMatchObject({ url: far.url });
    // Placed on another far host than the VM's.
    const other = `ssh://${far.user}@127.0.0.1:${await freePort()}`;
    const there = await gc.check({}, { vm: vm!, host: other, create: "true" });
    expect(there.failures).toEqual([expect.objectContaining({ property: "vm" })]);
    expect(there.failures![0].reason).toContain(far.url);
    expect(there.failures![0].reason).toContain(other);
});

test("attach to a VM whose host cannot be reached says so, naming the host", async () => {
    const gone = `ssh://${far.user}@127.0.0.1:${await freePort()}`;
    const m = attach({ ...vm!, host: gone });
    try {
        await expect(m.execute("true")).rejects.toThrow(
            new RegExp(`host ${gone.replace(/[.]/g, "\\.")} is unreachable`),
        );
        await expect(m.consoleText()).rejects.toThrow(new RegExp(`host ${gone.replace(/[.]/g, "\\.")} is unreachable`));
        await expect(m.nics()).rejects.toThrow(new RegExp(`host ${gone.replace(/[.]/g, "\\.")} is unreachable`));
        // A console tail inside another error says so rather than throwing.
        expect(await siteOf({ ...vm!, host: gone }).serialTail()).toMatch(
            new RegExp(`cannot be read: host ${gone.replace(/[.]/g, "\\.")} is unreachable`),
        );
    } finally {
        m.close();
    }
}, 120_000);

test("shutdown over the far host: QMP powerdown, then QEMU's exit seen in the far host's /proc", async () => {
    const m = machine!;
    const site = siteOf(vm!);
    const identity = { pid: vm!.pid, startTime: vm!.processStartTime, bootId: vm!.bootId };
    // Judged from the far host's /proc: running now, and not when another pidfile is asked for.
    expect(await site.liveness(identity, vm!.pidfile)).toEqual({ alive: true });
    expect(await site.liveness(identity, "/no/such.pid")).toEqual({
        alive: false,
        reason: expect.stringMatching(/not the QEMU that writes \/no\/such\.pid/),
    });
    expect(await site.serialTail()).toContain(READY_MARKER);
    await m.shutdown({ timeoutSeconds: 90 });
    expect(await site.liveness(identity, vm!.pidfile)).toMatchObject({ alive: false });
    expect(
        far.asFarUser(`test -e /proc/${vm!.pid} && cat /proc/${vm!.pid}/cmdline | tr '\\0' ' ' || true`),
    ).not.toContain(vm!.pidfile);
    // The channel now says the guest is gone, judged on the far host.
    const err = await attach(vm!)
        .execute("true")
        .catch((e) => e);
    expect(err.message).toMatch(/guest is gone|QEMU is not running/);
}, 120_000);
