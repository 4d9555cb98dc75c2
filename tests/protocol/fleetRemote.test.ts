import { execFileSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import { assertBuilt } from "../engine/driver";
import { destroy, loadState, preview, refresh, up, type ProjectOptions, type RunSummary } from "../engine/miniEngine";
import { consecutiveFreePorts } from "../engine/ports";
import { fleetProject } from "../engine/program";
import { ensureTestGuest, guestKernelArguments, READY_MARKER } from "../guest/testGuest";
import { startFarHost, type FarHost } from "../support/farHost";
import { httpGetWhenUp } from "../support/net";
import { isRunning } from "../support/process";

/**
 * examples/fleet with one of its VMs placed on the far host (this machine's sshd on loopback,
 * user pqfar) through the mini engine and the dynamic-provider plugin, as a user runs it:
 * preview, up, a no-op up, kill -9 of the far VM then refresh and up, destroy.
 */

jest.setTimeout(300_000);

let far: FarHost;
let work: string;
let opts: ProjectOptions;

beforeAll(async () => {
    assertBuilt();
    const guest = await ensureTestGuest();
    far = await startFarHost();
    work = await mkdtemp(path.join(os.tmpdir(), "pq-fleet-far-"));
    const fleet = await fleetProject(work, "far");
    opts = {
        ...fleet.opts,
        config: {
            kernel: guest.kernel,
            initrd: guest.initrd,
            kernelArguments: guestKernelArguments({ name: "{name}" }),
            sharedDir: fleet.shared,
            firstPort: await consecutiveFreePorts(1),
            count: 1,
            privateNetwork: false,
            readyPattern: READY_MARKER,
            accel: "tcg",
            // The far VM's guest files are the far user's own copies.
            remoteHost: far.host,
            remoteKernel: far.give(guest.kernel, "vmlinuz"),
            remoteInitrd: far.give(guest.initrd, "initrd"),
        },
    };
});

afterAll(async () => {
    if (opts && existsSync(opts.statePath))
        await destroy(opts).catch((err) => console.error(`cleanup destroy: ${err.message}`));
    await far?.stop();
    if (work) await rm(work, { recursive: true, force: true });
});

const changes = (s: RunSummary) => s.counts.create + s.counts.update + s.counts.replace + s.counts.delete;
const noErrors = (s: RunSummary) => expect(s.logs.filter((l) => l.severity === "error")).toEqual([]);
const farVm = async () =>
    (await loadState(opts.statePath)).resources.find((r) => r.urn.endsWith("::far-1"))?.outputs as
        Record<string, any> | undefined;
/** Who runs `pid`; "" when nothing does (a zombie waiting for a reaper counts as gone). */
const ownerOf = (pid: number) => {
    if (!isRunning(pid)) return "";
    try {
        return execFileSync("ps", ["-o", "user=", "-p", String(pid)], { encoding: "utf8" }).trim();
    } catch {
        return ""; // no such process
    }
};
const farPath = (file: string) => far.asFarUser(`test -e '${file}' && echo present || echo absent`).trim();

test("preview plans the far VM with the rest; up starts it on the far host; a second up changes nothing", async () => {
    const planned = await preview(opts);
    noErrors(planned);
    // base, web-1's overlay and VM, far-1.
    expect(planned.counts).toEqual({ create: 4, update: 0, replace: 0, delete: 0, same: 0 });

    const first = await up(opts);
    noErrors(first);
    console.log(`fleet with a far VM: up ${first.seconds.toFixed(1)} s`);
    expect(first.outputs.far).toMatchObject({ host: far.url, status: "running" });
    const vm = (await farVm())!;
    expect(ownerOf(vm.pid)).toBe(far.user);
    expect(String(vm.vmDir).startsWith(`${far.home}/.local/state/pulumi-qemu/vms/`)).toBe(true);
    // Its port is forwarded on the far host's loopback (which, here, is this machine's): the guest's web page answers.
    expect(JSON.stringify(first.outputs.far)).toContain(`127.0.0.1:${vm.ports["80"]}`);
    expect((await httpGetWhenUp(`http://127.0.0.1:${vm.ports["80"]}/`, 20_000)).body).toContain(
        "pulumi-qemu test guest far-1",
    );

    const again = await up(opts);
    noErrors(again);
    console.log(`fleet with a far VM: no-op up ${again.seconds.toFixed(1)} s`);
    expect(changes(again)).toBe(0);
});

test("with the far host unreachable: preview still plans no change, refresh fails naming the host and keeps the state; once back, refresh finds the VM", async () => {
    const before = (await farVm())!;
    const stateBefore = readFileSync(opts.statePath, "utf8");
    await far.pause();
    execFileSync("sh", ["-c", `pkill -KILL -f '^sshd: ${far.user}' || true`]);
    try {
        const planned = await preview(opts);
        noErrors(planned);
        expect(changes(planned)).toBe(0);
        // The far VM's check could judge only what needs no host, and says so.
        expect(
            planned.logs.some((l) => l.severity === "warning" && l.message.includes(`host ${far.url} is unreachable`)),
        ).toBe(true);

        await expect(refresh(opts)).rejects.toThrow(
            new RegExp(`host ${far.url.replace(/[.]/g, "\\.")} is unreachable`),
        );
        expect(readFileSync(opts.statePath, "utf8")).toBe(stateBefore);
    } finally {
        await far.resume();
    }
    const back = await refresh(opts);
    noErrors(back);
    expect(await farVm()).toMatchObject({ pid: before.pid, status: "running" });
});

test("kill -9 of the far VM: refresh drops it, the next up starts it again on the far host; destroy removes it there", async () => {
    const before = (await farVm())!;
    process.kill(before.pid, "SIGKILL");
    const until = Date.now() + 10_000;
    while (ownerOf(before.pid) !== "" && Date.now() < until) await new Promise((r) => setTimeout(r, 200));

    const r = await refresh(opts);
    noErrors(r);
    expect(await farVm()).toBeUndefined();
    const again = await up(opts);
    noErrors(again);
    expect(again.counts.create).toBe(1);
    const after = (await farVm())!;
    expect(after.pid).not.toBe(before.pid);
    expect(ownerOf(after.pid)).toBe(far.user);

    const gone = await destroy(opts);
    noErrors(gone);
    expect(farPath(after.vmDir)).toBe("absent");
    expect(ownerOf(after.pid)).toBe("");
});
