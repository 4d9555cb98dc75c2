import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import { UNKNOWN } from "../../provider/resources/common";
import * as gc from "../../provider/resources/guestCommand";
import type { GuestCommandInputs, GuestCommandOutputs } from "../../provider/resources/guestCommand";
import * as vmResource from "../../provider/resources/virtualMachine";
import type { VirtualMachineOutputs } from "../../provider/resources/virtualMachine";
import { attach, type Machine } from "../../sdk/testing";
import { ensureTestGuest, guestKernelArguments, READY_MARKER } from "../guest/testGuest";

/**
 * GuestCommand's lifecycle against the real busybox guest: create → no-op diff → edit →
 * update → refresh with a failing check → drift → the next up runs create again → delete runs
 * `delete`; failures carry the output but never a secret.
 */

let dir: string;
let vm: VirtualMachineOutputs;
let vmId: string;
let machine: Machine;

beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), "pq-gc-"));
    const guest = await ensureTestGuest();
    const spec = {
        name: "gc",
        accel: "tcg",
        agent: "shell",
        network: "none",
        kernel: guest.kernel,
        initrd: guest.initrd,
        kernelArguments: guestKernelArguments({ name: "gc" }),
    };
    const made = await vmResource.create({
        vm: spec,
        ready: { serialPattern: READY_MARKER, timeoutSeconds: 120 },
        stateDir: path.join(dir, "s"),
    });
    vm = made.outs as VirtualMachineOutputs;
    vmId = made.id as string;
    machine = attach(vm);
}, 240_000);

afterAll(async () => {
    machine?.close();
    if (vm) await vmResource.remove("", vm);
    await rm(dir, { recursive: true, force: true });
}, 60_000);

function inputs(extra: Partial<GuestCommandInputs> = {}): GuestCommandInputs {
    return {
        vm,
        create: 'echo "$GREETING" > /tmp/gc; echo created; echo note >&2',
        update: 'echo "$GREETING" > /tmp/gc; echo updated',
        delete: "rm /tmp/gc; echo deleted > /tmp/gc-deleted",
        check: "test -f /tmp/gc",
        environment: { GREETING: "hello" },
        ...extra,
    };
}

test("create → no-op diff → edit → update → failing check is drift → up re-runs create → delete runs delete", async () => {
    const first = inputs();
    expect((await gc.check({}, first)).failures ?? []).toEqual([]);
    const made = await gc.create(first);
    let outs = made.outs as GuestCommandOutputs;
    expect(outs).toMatchObject({ stdout: "created\n", stderr: "note\n", exitCode: 0 });
    expect(await machine.succeed("cat /tmp/gc")).toBe("hello\n");

    expect(await gc.diff(made.id, outs, inputs())).toEqual({ changes: false });

    const edited = inputs({ environment: { GREETING: "bye" } });
    expect(await gc.diff(made.id, outs, edited)).toEqual({ changes: true });
    outs = (await gc.update(made.id, outs, edited)).outs as GuestCommandOutputs;
    expect(outs).toMatchObject({ stdout: "updated\n", exitCode: 0, environment: { GREETING: "bye" } });
    expect(await machine.succeed("cat /tmp/gc")).toBe("bye\n");

    // Refresh with the effect in place: no drift.
    let read = await gc.read(made.id, outs);
    expect(read.id).toBe(made.id);
    expect((read.props as GuestCommandOutputs).drift).toBeUndefined();
    expect(await gc.diff(made.id, read.props as GuestCommandOutputs, edited)).toEqual({ changes: false });

    // Someone undoes it inside the guest: refresh reports drift, kept in state.
    await machine.succeed("rm /tmp/gc");
    read = await gc.read(made.id, outs);
    const drifted = read.props as GuestCommandOutputs;
    expect(drifted.drift).toMatch(/check exited 1/);
    expect(await gc.diff(made.id, drifted, edited)).toEqual({ changes: true });
    // The next up runs create (not update) again, and the drift is gone.
    outs = (await gc.update(made.id, drifted, edited)).outs as GuestCommandOutputs;
    expect(outs.stdout).toBe("created\n");
    expect(outs.drift).toBeUndefined();
    expect(await machine.succeed("cat /tmp/gc")).toBe("bye\n");

    // A change of what does not run (timeout) is an update that runs nothing.
    await machine.succeed("echo marker > /tmp/gc");
    const patient = { ...edited, timeoutSeconds: 600 };
    expect(await gc.diff(made.id, outs, patient)).toEqual({ changes: true });
    outs = (await gc.update(made.id, outs, patient)).outs as GuestCommandOutputs;
    expect(await machine.succeed("cat /tmp/gc")).toBe("marker\n");

    // Triggers and another run of the VM replace it.
    expect(await gc.diff(made.id, outs, { ...patient, triggers: [1] })).toEqual({
        changes: true,
        replaces: ["triggers"],
        deleteBeforeReplace: true,
    });
    expect(await gc.diff(made.id, outs, { ...patient, vm: { ...vm, processStartTime: "1" } })).toEqual({
        changes: true,
        replaces: ["vm"],
        deleteBeforeReplace: true,
    });

    await gc.remove(made.id, outs);
    expect(await machine.succeed("cat /tmp/gc-deleted; test -e /tmp/gc || echo gone")).toBe("deleted\ngone\n");
}, 180_000);

test("a failing create fails with its output, secrets masked; a timeout is killed and named", async () => {
    const bad = inputs({
        create: "echo token=$TOKEN; echo oops >&2; exit 4",
        environment: { TOKEN: "s3cr3t-value" },
        stdin: "stdin-secret",
    });
    const err = (await gc.create(bad).catch((e) => e)) as Error;
    expect(err).toBeInstanceOf(Error);
    expect(err.message).toMatch(/GuestCommand create exited 4/);
    expect(err.message).toContain('stdout: "token=[secret]\\n"');
    expect(err.message).toContain('stderr: "oops\\n"');
    expect(err.message).not.toContain("s3cr3t");
    expect(err.message).not.toContain("stdin-secret");

    const slow = (await gc
        .create(inputs({ create: "echo started; sleep 100", timeoutSeconds: 1 }))
        .catch((e) => e)) as Error;
    expect(slow.message).toMatch(/GuestCommand create: the command did not finish within 1 s and was killed/);
    expect(slow.message).toContain('stdout: "started\\n"');
    expect(await machine.succeed("echo alive")).toBe("alive\n");
}, 120_000);

test("bad inputs are refused naming the field", async () => {
    const r = await gc.check({}, { vm: { ...vm, agent: undefined }, create: "", environment: { "1x": "y" }, extra: 1 });
    const props = (r.failures ?? []).map((f) => f.property).sort();
    expect(props).toEqual(expect.arrayContaining(["vm.agent", "create", "environment.1x"]));
    const reasons = (r.failures ?? []).map((f) => f.reason);
    expect(reasons).toEqual(
        expect.arrayContaining([
            expect.stringMatching(/vm.agent must be "shell" or "qga"/),
            expect.stringMatching(/environment name "1x" must be letters/),
            expect.stringMatching(/^"extra" is not a key of the inputs \(it takes: vm, stateDir, create, /),
        ]),
    );
});

test("a VM that is gone: refresh says the command is gone, delete has nothing to undo", async () => {
    const made = await gc.create(inputs());
    const outs = made.outs as GuestCommandOutputs;
    const fakeGone = { ...outs, vm: { ...vm, processStartTime: "1" } };
    expect(await gc.read(made.id, fakeGone)).toEqual({ id: "", props: {} });
    await expect(gc.remove(made.id, fakeGone)).resolves.toBeUndefined();
    expect(await machine.succeed("cat /tmp/gc")).toBe("hello\n");
    await gc.remove(made.id, outs);
}, 60_000);

describe("vm given by id", () => {
    const byId = (extra: Partial<GuestCommandInputs> = {}) =>
        inputs({ vm: vmId, stateDir: path.join(dir, "s"), ...extra });

    test("resolves the VM's directory to its running QEMU and channel; read, update and delete use that run", async () => {
        expect(vmId).toMatch(/^vm-/);
        expect((await gc.check({}, byId())).failures ?? []).toEqual([]);
        const made = await gc.create(byId({ create: 'echo "$GREETING" > /tmp/gc-id; echo by-id' }));
        let outs = made.outs as GuestCommandOutputs;
        expect(outs).toMatchObject({ stdout: "by-id\n", exitCode: 0, vm: vmId });
        expect(outs.vmTarget).toMatchObject({
            id: vmId,
            agent: "shell",
            pid: vm.pid,
            processStartTime: vm.processStartTime,
            bootId: vm.bootId,
            pidfile: vm.pidfile,
            agentSocket: vm.agentSocket,
        });
        expect(await machine.succeed("cat /tmp/gc-id")).toBe("hello\n");
        // The same VM run by id or by its outputs (with the id, as the SDK passes them) is the same identity: switching replaces nothing.
        const withId = { ...vm, id: vmId };
        const sameByOutputs = (await gc.create(inputs({ vm: withId, create: "true" }))).outs as GuestCommandOutputs;
        expect(outs.vmIdentity).toBe(sameByOutputs.vmIdentity);
        expect(await gc.diff(made.id, outs, byId({ create: 'echo "$GREETING" > /tmp/gc-id; echo by-id' }))).toEqual({
            changes: false,
        });
        expect(
            await gc.diff(
                made.id,
                outs,
                inputs({
                    vm: withId,
                    create: 'echo "$GREETING" > /tmp/gc-id; echo by-id',
                    stateDir: path.join(dir, "s"),
                }),
            ),
        ).toEqual({ changes: false });

        const edited = byId({
            create: 'echo "$GREETING" > /tmp/gc-id; echo by-id',
            environment: { GREETING: "again" },
        });
        expect(await gc.diff(made.id, outs, edited)).toEqual({ changes: true });
        outs = (await gc.update(made.id, outs, edited)).outs as GuestCommandOutputs;
        expect(outs.stdout).toBe("updated\n");
        expect(outs.vmTarget?.pid).toBe(vm.pid);

        // Refresh runs check on that run; a gone effect is drift.
        const checked = { ...outs, check: "test -f /tmp/gc-id" };
        expect(((await gc.read(made.id, checked)).props as GuestCommandOutputs).drift).toBeUndefined();
        await machine.succeed("rm /tmp/gc-id");
        expect(((await gc.read(made.id, checked)).props as GuestCommandOutputs).drift).toMatch(/check exited 1/);

        // A VM run the stored target no longer names is gone: refresh drops the command, delete has nothing to undo.
        const stale = { ...outs, vmTarget: { ...outs.vmTarget!, processStartTime: "1" } };
        expect(await gc.read(made.id, stale)).toEqual({ id: "", props: {} });
        await expect(gc.remove(made.id, stale)).resolves.toBeUndefined();

        await gc.remove(made.id, { ...outs, delete: "echo id-deleted > /tmp/gc-id-deleted" });
        expect(await machine.succeed("cat /tmp/gc-id-deleted")).toBe("id-deleted\n");
    }, 120_000);

    test("an id that is not a plain directory name is refused at check, naming vm", async () => {
        for (const bad of ["../vm-x", "vm-x/..", ".", "..", "/abs", "", "a b"]) {
            const r = await gc.check({}, byId({ vm: bad }));
            const failure = (r.failures ?? []).find((f) => f.property === "vm");
            expect(failure?.reason).toMatch(
                /vm must be the VirtualMachine's id \(the name of its directory under <stateDir>\/vms/,
            );
        }
    });

    test("a VM that is not there, not running, or has no agent is refused with what to do", async () => {
        const stateDir = path.join(dir, "s");
        const missing = (await gc.create(byId({ vm: "vm-notthere" })).catch((e) => e)) as Error;
        expect(missing.message).toMatch(
            new RegExp(
                `^vm: no VirtualMachine vm-notthere under ${path.join(stateDir, "vms")} \\(.*ENOENT\\); check the id, and set stateDir`,
            ),
        );
        const otherState = (await gc.create(byId({ stateDir: path.join(dir, "elsewhere") })).catch((e) => e)) as Error;
        expect(otherState.message).toMatch(/^vm: no VirtualMachine vm-\S+ under .*elsewhere\/vms/);

        // A directory whose pidfile names no process, then one naming a live process that is not its QEMU.
        const stale = path.join(stateDir, "vms", "vm-stale");
        await mkdir(stale, { mode: 0o700 });
        await writeFile(path.join(stale, "qemu.pid"), "999999999\n", { mode: 0o600 });
        const dead = (await gc.create(byId({ vm: "vm-stale" })).catch((e) => e)) as Error;
        expect(dead.message).toMatch(
            /^vm: the VirtualMachine vm-stale is not running \(no live QEMU in .*qemu.pid\); run pulumi up/,
        );
        await writeFile(path.join(stale, "qemu.pid"), `${process.pid}\n`);
        const notOurs = (await gc.create(byId({ vm: "vm-stale" })).catch((e) => e)) as Error;
        expect(notOurs.message).toMatch(
            new RegExp(
                `^vm: the VirtualMachine vm-stale is not running \\(process ${process.pid} is not the QEMU that writes`,
            ),
        );
        await rm(stale, { recursive: true });

        // A real running VM without an agent channel (no ready wait: QEMU running is enough).
        const guest = await ensureTestGuest();
        const plainMade = await vmResource.create({
            vm: {
                name: "gc-noagent",
                accel: "tcg",
                network: "none",
                kernel: guest.kernel,
                initrd: guest.initrd,
                kernelArguments: guestKernelArguments({ name: "gc-noagent" }),
            },
            stateDir,
        });
        const plain = plainMade.outs as VirtualMachineOutputs;
        try {
            const noAgent = (await gc.create(byId({ vm: plainMade.id as string })).catch((e) => e)) as Error;
            expect(noAgent.message).toMatch(
                /^vm: the VirtualMachine vm-\S+ has no guest agent channel: set its vm.agent to "shell" or "qga"/,
            );
        } finally {
            await vmResource.remove("", plain);
        }
    }, 120_000);

    test("diff: an id that names no running VM any more replaces the command", async () => {
        const made = await gc.create(byId({ create: "true" }));
        const outs = made.outs as GuestCommandOutputs;
        expect(await gc.diff(made.id, outs, byId({ create: "true", vm: "vm-gone" }))).toEqual({
            changes: true,
            replaces: ["vm"],
            deleteBeforeReplace: true,
        });
        // A preview where the state directory is not known yet: the id may name another run.
        expect(await gc.diff(made.id, outs, byId({ create: "true", stateDir: UNKNOWN }))).toEqual({
            changes: true,
            replaces: ["vm"],
            deleteBeforeReplace: true,
        });
        expect(await gc.diff(made.id, outs, byId({ create: "true" }))).toEqual({ changes: false });
        await gc.remove(made.id, outs);
    }, 60_000);
});
