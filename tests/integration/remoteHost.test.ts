import { execFileSync } from "node:child_process";
import { chmodSync, copyFileSync, readFileSync, writeFileSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import { withProgress } from "../../provider/host/progress";
import * as diskImage from "../../provider/resources/diskImage";
import * as networkResource from "../../provider/resources/network";
import * as runScript from "../../provider/resources/runScript";
import * as vmResource from "../../provider/resources/virtualMachine";
import type { VirtualMachineOutputs } from "../../provider/resources/virtualMachine";
import { ensureTestGuest, guestKernelArguments, READY_MARKER } from "../guest/testGuest";
import { sharedGuestFiles, startFarHost, type FarHost } from "../support/farHost";
import { isRunning } from "../support/process";

/**
 * Resources placed on "the far host": this machine reached only through a real sshd on a
 * loopback port, logging in the unprivileged user pqfar (tests/support/farHost.ts). Everything
 * that happens there is done by pqfar's processes, under pqfar's own default state directory,
 * which is how the tests tell the far side from this one.
 */

jest.setTimeout(240_000);

let far: FarHost;
let shared: string;
let kernel: string;
let initrd: string;
let localState: string;
const vms: VirtualMachineOutputs[] = [];
const images: diskImage.DiskImageOutputs[] = [];

beforeAll(async () => {
    const guest = await ensureTestGuest();
    far = await startFarHost();
    ({ dir: shared, kernel, initrd } = await sharedGuestFiles(guest));
    localState = await mkdtemp(path.join(os.tmpdir(), "pq-remote-local-"));
});

afterAll(async () => {
    for (const outs of vms) await vmResource.remove("", outs).catch(() => undefined);
    for (const outs of images.reverse()) await diskImage.remove(outs.path, outs).catch(() => undefined);
    await far?.stop();
    await rm(shared, { recursive: true, force: true });
    await rm(localState, { recursive: true, force: true });
});

const farState = () => `${far.home}/.local/state/pulumi-qemu`;
const ownerOf = (file: string) => execFileSync("stat", ["-c", "%U %a", file], { encoding: "utf8" }).trim();
// Zombies (this container's init may not reap) count as gone.
const farQemuPids = () =>
    execFileSync("sh", ["-c", `pgrep -u ${far.user} -f qemu-system || true`], { encoding: "utf8" })
        .split("\n")
        .filter(Boolean)
        .map(Number)
        .filter(isRunning);

function guestVm(name: string) {
    return { name, accel: "tcg", memoryMiB: 256, kernel, initrd, kernelArguments: guestKernelArguments({ name }) };
}

async function makeImage(inputs: Record<string, unknown>): Promise<diskImage.DiskImageOutputs> {
    const checked = await diskImage.check({}, inputs);
    expect(checked.failures ?? []).toEqual([]);
    const r = await diskImage.create(checked.inputs);
    images.push(r.outs as diskImage.DiskImageOutputs);
    return r.outs as diskImage.DiskImageOutputs;
}

async function makeVm(inputs: Record<string, unknown>): Promise<VirtualMachineOutputs> {
    const checked = await vmResource.check({}, inputs);
    expect(checked.failures ?? []).toEqual([]);
    const r = await vmResource.create(checked.inputs);
    vms.push(r.outs);
    return r.outs;
}

/** Drops every SSH connection to the far host from its side, as a network cut would. */
function dropConnections(): void {
    execFileSync("sh", ["-c", `pkill -KILL -f '^sshd: ${far.user}' || true`]);
}

test("an overlay chain on the far host: made and hashed there, the same input hashes as here, drift after a refresh", async () => {
    const base = path.join(shared, "base.raw");
    writeFileSync(base, Buffer.alloc(4 << 20, 7));
    chmodSync(base, 0o644);
    const farBase = await makeImage({ source: { kind: "file", path: base }, host: far.host });
    const hereBase = await makeImage({ source: { kind: "file", path: base }, stateDir: localState });
    expect(farBase.host).toBe(far.url);
    expect(farBase.path.startsWith(`${farState()}/images/`)).toBe(true);
    expect(ownerOf(farBase.path)).toBe(`${far.user} 600`);
    expect(hereBase.host).toBeUndefined();
    // Hashes leave out which host: the same source has the same identity here and there.
    expect(farBase.inputHash).toBe(hereBase.inputHash);
    expect(farBase.contentFingerprint).toBe(hereBase.contentFingerprint);

    const farOverlay = await makeImage({
        source: { kind: "overlay", backing: farBase.path, backingFormat: "raw" },
        host: far.host,
    });
    expect(ownerOf(farOverlay.path)).toBe(`${far.user} 600`);
    const info = JSON.parse(far.asFarUser(`qemu-img info --output=json ${farOverlay.path}`));
    expect(info["backing-filename"]).toBe(farBase.path);

    // A no-op: read finds what create made; diff (done on the far host: it hashes sources) says nothing changed.
    const read = await diskImage.read(farOverlay.path, farOverlay);
    expect(read.props).toMatchObject({ host: far.url, path: farOverlay.path });
    expect((read.props as any).drift).toBeUndefined();
    const overlayInputs = { source: { kind: "overlay", backing: farBase.path, backingFormat: "raw" }, host: far.host };
    expect(await diskImage.diff(farOverlay.path, read.props, overlayInputs)).toMatchObject({ changes: false });

    // Written behind the provider's back on the far host: refresh reports it and keeps it; the next diff replaces.
    far.asFarUser(`printf junk | dd of=${farBase.path} conv=notrunc bs=1 seek=4096 status=none`);
    const refreshed = await diskImage.read(farBase.path, farBase);
    expect((refreshed.props as any).drift).toBeDefined();
    const again = await diskImage.read(farBase.path, refreshed.props);
    expect((again.props as any).drift).toBeDefined();
    const d = await diskImage.diff(farBase.path, again.props, { source: { kind: "file", path: base }, host: far.host });
    expect(d.changes).toBe(true);
    expect(d.replaces).toEqual(expect.arrayContaining(["source"]));

    // Moving an image to another host is a new image there.
    expect(
        await diskImage.diff(hereBase.path, hereBase, {
            source: { kind: "file", path: base },
            stateDir: localState,
            host: far.host,
        }),
    ).toEqual({ changes: true, replaces: ["host"] });
});

test("a VM on the far host: ready, same argvHash as here, no-op diff without the host, kill -9 and refresh, delete", async () => {
    const vm = guestVm("far-one");
    const ready = { serialPattern: READY_MARKER, timeoutSeconds: 150 };
    const [there, here] = await Promise.all([
        makeVm({ vm, ready, host: far.host }),
        makeVm({ vm, ready, stateDir: localState }),
    ]);
    expect(there).toMatchObject({ status: "running", host: far.url, accel: "tcg" });
    expect(there.vmDir.startsWith(`${farState()}/vms/`)).toBe(true);
    // QEMU runs as the far user: it was started there, not here.
    expect(execFileSync("ps", ["-o", "user=", "-p", String(there.pid)], { encoding: "utf8" }).trim()).toBe(far.user);
    expect(there.argvHash).toBe(here.argvHash);

    // No-op: a VM's diff compares hashes, so it answers without a connection.
    const inputs = { vm, ready, host: far.host };
    expect(await vmResource.diff(there.vmDir, there, inputs)).toEqual({ changes: false });
    const refreshed = await vmResource.read(path.basename(there.vmDir), there);
    expect(refreshed.props).toMatchObject({ status: "running", host: far.url });

    // kill -9 on the far host: refresh reports it gone; its directory keeps the serial log.
    process.kill(there.pid, "SIGKILL");
    await waitFor(() => !farQemuPids().includes(there.pid), 10_000, "QEMU to die");
    const gone = await vmResource.read(path.basename(there.vmDir), there);
    expect(gone.id).toBe("");
    expect(far.asFarUser(`ls ${there.vmDir}`).split("\n").filter(Boolean).sort()).toEqual([
        "record.json",
        "serial.log",
    ]);

    const again = await makeVm(inputs);
    expect(again.status).toBe("running");
    await vmResource.remove(path.basename(again.vmDir), again);
    expect(far.asFarUser(`test -e ${again.vmDir} && echo present || echo absent`).trim()).toBe("absent");
    await waitFor(() => !farQemuPids().includes(again.pid), 10_000, "QEMU to be gone after delete");
    await vmResource.remove(path.basename(here.vmDir), here);
});

test("a network of two VMs and a launcher on the far host: the switch and QEMUs run there, the VMs reach each other over it", async () => {
    const net = await networkResource.create(
        (await networkResource.check({}, { name: "far-lan", host: far.host })).inputs,
    );
    const netOuts = net.outs as networkResource.NetworkOutputs;
    try {
        expect(netOuts.host).toBe(far.url);
        expect(netOuts.switchDir.startsWith(`${farState()}/networks/`)).toBe(true);
        expect(
            execFileSync("ps", ["-o", "user=,comm=", "-p", String(netOuts.pid)], { encoding: "utf8" }).trim(),
        ).toMatch(new RegExp(`^${far.user}\\s+vde_switch`));
        // The second VM checks the first over the network at boot (the test guest's pq_check), and is ready once it answered.
        const a = await makeVm({
            vm: { ...guestVm("far-a"), networks: [{ network: net.id }] },
            ready: { serialPattern: READY_MARKER, timeoutSeconds: 150 },
            host: far.host,
        });
        const ip = a.nics![0].ipv4;
        const vmB = guestVm("far-b");
        const b = await makeVm({
            vm: {
                ...vmB,
                kernelArguments: [...vmB.kernelArguments, `pq_check=${ip}`],
                networks: [{ network: net.id }],
            },
            ready: { serialPattern: "/pq-check: done, 1 ok, 0 failed/", timeoutSeconds: 150 },
            host: far.host,
        });
        expect(far.asFarUser(`cat ${b.serialLog}`)).toContain(`pq-check: ${ip} ok: pulumi-qemu test guest far-a`);
        expect((await networkResource.read(net.id, netOuts)).props).toMatchObject({ host: far.url, pid: netOuts.pid });

        // A launcher written there, for the same VM as here: same argvHash, owner-only on the far host.
        const launcherThere = await runScript.create(
            (await runScript.check({}, { vm: guestVm("far-launch"), host: far.host })).inputs,
        );
        const launcherHere = await runScript.create(
            (await runScript.check({}, { vm: guestVm("far-launch"), stateDir: localState })).inputs,
        );
        expect(launcherThere.outs.argvHash).toBe(launcherHere.outs.argvHash);
        expect(ownerOf(launcherThere.outs.path)).toBe(`${far.user} 500`);
        await runScript.remove(launcherThere.id, launcherThere.outs);
        await runScript.remove(launcherHere.id, launcherHere.outs);
        expect(far.asFarUser(`test -e ${launcherThere.outs.path} && echo present || echo absent`).trim()).toBe(
            "absent",
        );

        await vmResource.remove("", b);
        await vmResource.remove("", a);
    } finally {
        await networkResource.remove(net.id, netOuts);
    }
    expect(isRunning(netOuts.pid)).toBe(false);
});

test("host unreachable: hash diffs still answer, host-bound calls say so naming the host, nothing is dropped from state", async () => {
    const vm = guestVm("far-two");
    const inputs = { vm, ready: { serialPattern: READY_MARKER, timeoutSeconds: 150 }, host: far.host };
    const outs = await makeVm(inputs);
    const img = await makeImage({ source: { kind: "blank", size: "8M", format: "qcow2" }, host: far.host });

    await far.pause();
    dropConnections();
    try {
        const id = path.basename(outs.vmDir);
        const unreachable = new RegExp(`host ${far.url.replace(/[.]/g, "\\.")} is unreachable`);
        await expect(vmResource.read(id, outs)).rejects.toThrow(unreachable);
        await expect(diskImage.read(img.path, img)).rejects.toThrow(unreachable);
        await expect(
            diskImage.diff(img.path, img, { source: { kind: "blank", size: "8M", format: "qcow2" }, host: far.host }),
        ).rejects.toThrow(unreachable);
        // Preview of what needs no host goes on.
        expect(await vmResource.diff(id, outs, inputs)).toEqual({ changes: false });
        expect((await vmResource.check({}, inputs)).failures ?? []).toEqual([]);
        // What needs no host is still judged here: only the networks' records wait for the host.
        const bad = await vmResource.check(
            {},
            { ...inputs, vm: { ...vm, memoryMiB: -1, networks: [{ network: "net-abc" }] } },
        );
        expect(bad.failures).toEqual([expect.objectContaining({ property: "vm.memoryMiB" })]);
        await expect(vmResource.create(inputs)).rejects.toThrow(unreachable);
    } finally {
        await far.resume();
    }
    // Back: the VM ran on through the outage and refresh finds it.
    const back = await vmResource.read(path.basename(outs.vmDir), outs);
    expect(back.props).toMatchObject({ status: "running", pid: outs.pid });
    await vmResource.remove("", outs);
});

test("a connection dropped in the middle of a create leaves an orphan the next call on that host cleans", async () => {
    const before = new Set(farQemuPids());
    const stuck = vmResource.create({
        vm: guestVm("far-dropped"),
        ready: { serialPattern: "this never appears", timeoutSeconds: 120 },
        host: far.host,
    });
    const settled = stuck.then(
        () => "created",
        (err: Error) => err.message,
    );
    // QEMU daemonizes: the processes it forks on the way exit at once (taking one of them for the
    // orphan was a race). Which VM directory is plain from any of them; which process is the
    // daemon, only from the pidfile, which the daemon alone writes.
    const vmDirOf = (pid: number) => /(\/\S+\/vms\/vm-[A-Za-z0-9]+)\//.exec(cmdline(pid))?.[1];
    let orphanDir: string | undefined;
    await waitFor(
        () =>
            (orphanDir = farQemuPids()
                .filter((p) => !before.has(p))
                .map(vmDirOf)
                .find((d) => d !== undefined)) !== undefined,
        60_000,
        "QEMU to start on the far host",
    );
    let orphan = 0;
    const daemonPid = () => Number(far.asFarUser(`cat ${orphanDir}/qemu.pid 2>/dev/null || true`).trim()) || 0;
    await waitFor(
        () => (orphan = daemonPid()) !== 0 && farQemuPids().includes(orphan),
        60_000,
        "QEMU to write its pidfile once daemonized",
    );
    dropConnections();
    expect(await settled).toMatch(/host ssh:\/\/pqfar@127\.0\.0\.1:\d+ .*(unreachable|connection lost|runner stopped)/);
    // The runner went with its connection; its QEMU is left with a creator that is gone.
    expect(farQemuPids()).toContain(orphan);

    const next = await makeVm({
        vm: guestVm("far-next"),
        ready: { serialPattern: READY_MARKER, timeoutSeconds: 150 },
        host: far.host,
    });
    await waitFor(
        () => !farQemuPids().includes(orphan),
        20_000,
        "the orphaned QEMU to be stopped by the next create's sweep",
    );
    // A killed create's directory goes with its QEMU (a VM found dead would keep its serial log for a day).
    expect(far.asFarUser(`test -e ${orphanDir} && echo present || echo absent`).trim()).toBe("absent");
    await vmResource.remove("", next);
});

test("a runner cached damaged (an upload cut short) is replaced, never run; progress of a far call reaches that call's own sink", async () => {
    const cache = `${far.home}/.cache/pulumi-qemu/runner`;
    const cached = far
        .asFarUser(`ls ${cache}`)
        .split("\n")
        .filter((f) => f.endsWith(".js"));
    expect(cached).toHaveLength(1);
    far.asFarUser(`head -c 1000 ${cache}/${cached[0]} > ${cache}/cut && mv ${cache}/cut ${cache}/${cached[0]}`);
    // Another set of key files is another connection, so a new runner is started (and the progress interval read again).
    const dir = await mkdtemp(path.join(os.tmpdir(), "pq-remote-fresh-"));
    const saved = process.env.PULUMI_QEMU_PROGRESS_SECONDS;
    process.env.PULUMI_QEMU_PROGRESS_SECONDS = "1";
    try {
        const knownHosts = path.join(dir, "known_hosts");
        copyFileSync(far.knownHosts, knownHosts);
        const host = { ...far.host, knownHosts };
        const heard: Record<string, string[]> = { vm: [], image: [] };
        const sink = (who: string) => ({
            status: (m: string) => heard[who].push(m),
            warning: (m: string) => heard[who].push(`warning: ${m}`),
        });
        const [vm] = await Promise.all([
            withProgress(sink("vm"), () =>
                makeVm({
                    vm: guestVm("far-progress"),
                    ready: { serialPattern: READY_MARKER, timeoutSeconds: 150 },
                    host,
                }),
            ),
            withProgress(sink("image"), () =>
                makeImage({ source: { kind: "blank", size: "8M", format: "qcow2" }, host }),
            ),
        ]);
        expect(far.asFarUser(`sha256sum < ${cache}/${cached[0]} | cut -c1-32`).trim()).toBe(
            cached[0].replace(/\.js$/, ""),
        );
        // The VM's wait reported itself (every second here) to the VM's sink, and to no other.
        expect(heard.vm.some((m) => /serialPattern/.test(m))).toBe(true);
        expect(heard.image.filter((m) => /serialPattern/.test(m))).toEqual([]);
        await vmResource.remove("", vm);
    } finally {
        if (saved === undefined) delete process.env.PULUMI_QEMU_PROGRESS_SECONDS;
        else process.env.PULUMI_QEMU_PROGRESS_SECONDS = saved;
        await rm(dir, { recursive: true, force: true });
    }
});

test("an unknown host key, a wrong client key and a missing key file are refused with what to do; nothing is made", async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), "pq-remote-keys-"));
    try {
        const emptyKnown = path.join(dir, "known_hosts");
        writeFileSync(emptyKnown, "");
        const source = { kind: "blank", size: "8M", format: "qcow2" };
        const before = far.asFarUser(`ls ${farState()}/images 2>/dev/null || true`);
        await expect(diskImage.create({ source, host: { ...far.host, knownHosts: emptyKnown } })).rejects.toThrow(
            new RegExp(`its host key is not known.*ssh-keyscan -p ${far.port} 127\\.0\\.0\\.1 >> ${emptyKnown}`),
        );
        const otherKey = path.join(dir, "other_key");
        execFileSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", otherKey]);
        await expect(diskImage.create({ source, host: { ...far.host, identityFile: otherKey } })).rejects.toThrow(
            /authentication failed .*host\.identityFile/,
        );
        await expect(
            diskImage.create({ source, host: { ...far.host, identityFile: path.join(dir, "nope") } }),
        ).rejects.toThrow(/host\.identityFile: cannot read .*nope \(ENOENT\)/);
        expect(far.asFarUser(`ls ${farState()}/images 2>/dev/null || true`)).toBe(before);
    } finally {
        await rm(dir, { recursive: true, force: true });
    }
});

function cmdline(pid: number): string {
    try {
        return readFileSync(`/proc/${pid}/cmdline`, "utf8").replace(/\0/g, " ");
    } catch {
        return "";
    }
}

async function waitFor(cond: () => boolean, ms: number, what: string): Promise<void> {
    const deadline = Date.now() + ms;
    while (!cond()) {
        if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
        await new Promise((r) => setTimeout(r, 200));
    }
}
