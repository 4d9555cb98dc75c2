import { mkdtemp, rm } from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
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
let machine: Machine;

beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), "pq-gc-"));
    const guest = await ensureTestGuest();
    const spec = { name: "gc", accel: "tcg", agent: "shell", network: "none", kernel: guest.kernel, initrd: guest.initrd, kernelArguments: guestKernelArguments({ name: "gc" }) };
    vm = (await vmResource.create({ vm: spec, ready: { serialPattern: READY_MARKER, timeoutSeconds: 120 }, stateDir: path.join(dir, "s") })).outs as VirtualMachineOutputs;
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
    expect(await gc.diff(made.id, outs, { ...patient, triggers: [1] })).toEqual({ changes: true, replaces: ["triggers"], deleteBeforeReplace: true });
    expect(await gc.diff(made.id, outs, { ...patient, vm: { ...vm, processStartTime: "1" } })).toEqual({ changes: true, replaces: ["vm"], deleteBeforeReplace: true });

    await gc.remove(made.id, outs);
    expect(await machine.succeed("cat /tmp/gc-deleted; test -e /tmp/gc || echo gone")).toBe("deleted\ngone\n");
}, 180_000);

test("a failing create fails with its output, secrets masked; a timeout is killed and named", async () => {
    const bad = inputs({ create: "echo token=$TOKEN; echo oops >&2; exit 4", environment: { TOKEN: "s3cr3t-value" }, stdin: "stdin-secret" });
    const err = (await gc.create(bad).catch((e) => e)) as Error;
    expect(err).toBeInstanceOf(Error);
    expect(err.message).toMatch(/GuestCommand create exited 4/);
    expect(err.message).toContain('stdout: "token=[secret]\\n"');
    expect(err.message).toContain('stderr: "oops\\n"');
    expect(err.message).not.toContain("s3cr3t");
    expect(err.message).not.toContain("stdin-secret");

    const slow = (await gc.create(inputs({ create: "echo started; sleep 100", timeoutSeconds: 1 })).catch((e) => e)) as Error;
    expect(slow.message).toMatch(/GuestCommand create: the command did not finish within 1 s and was killed/);
    expect(slow.message).toContain('stdout: "started\\n"');
    expect(await machine.succeed("echo alive")).toBe("alive\n");
}, 120_000);

test("bad inputs are refused naming the field", async () => {
    const r = await gc.check({}, { vm: { ...vm, agent: undefined }, create: "", environment: { "1x": "y" }, extra: 1 });
    const props = (r.failures ?? []).map((f) => f.property).sort();
    expect(props).toEqual(expect.arrayContaining(["vm.agent", "create", "environment.1x"]));
    const reasons = (r.failures ?? []).map((f) => f.reason);
    expect(reasons).toEqual(expect.arrayContaining([
        expect.stringMatching(/vm.agent must be "shell" or "qga"/),
        expect.stringMatching(/environment name "1x" must be letters/),
        expect.stringMatching(/Unrecognized key: "extra"/),
    ]));
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
