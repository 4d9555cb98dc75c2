import { mkdtemp, rm } from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import * as vmResource from "../../provider/resources/virtualMachine";
import type { VirtualMachineOutputs } from "../../provider/resources/virtualMachine";
import { attach } from "../../sdk/testing";
import { processesMentioning } from "../support/process";
import { ensureTestGuest, guestKernelArguments } from "../guest/testGuest";

/** `ready.agent`, `ready.command` and `ready.guestPort`: readiness checked inside the real guest. */

let dir: string;
let guest: { kernel: string; initrd: string };
const created: VirtualMachineOutputs[] = [];

beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), "pq-ri-"));
    guest = await ensureTestGuest();
}, 180_000);

afterAll(async () => {
    for (const o of created) await vmResource.remove("", o).catch(() => undefined);
    await rm(dir, { recursive: true, force: true });
}, 60_000);

function spec(name: string, opts: { shellAgent?: boolean; agent?: string } = {}) {
    return {
        name,
        accel: "tcg",
        agent: opts.agent ?? "shell",
        network: "none",
        kernel: guest.kernel,
        initrd: guest.initrd,
        kernelArguments: guestKernelArguments({ name, shellAgent: opts.shellAgent }),
    };
}

test("ready once the agent answers, a command exits 0 and a port listens inside the guest", async () => {
    const t0 = Date.now();
    // /init writes the page, then starts httpd on port 80, then the agent.
    const inputs = {
        vm: spec("inside"),
        ready: { agent: true, command: "test -e /www/index.html", guestPort: 80, timeoutSeconds: 120 },
        stateDir: path.join(dir, "s"),
    } as const;
    expect((await vmResource.check({}, inputs)).failures ?? []).toEqual([]);
    const r = await vmResource.create(inputs);
    const outs = r.outs as VirtualMachineOutputs;
    created.push(outs);
    console.log(`ready from inside after ${((Date.now() - t0) / 1000).toFixed(1)} s`);
    const m = attach(outs);
    try {
        // Ready means it: at once, the port is open and the command succeeds.
        expect(await m.succeed("test -e /www/index.html && echo yes")).toBe("yes\n");
        await m.waitForOpenPort(80, { timeoutSeconds: 1 });
    } finally {
        m.close();
    }
}, 180_000);

test("a guest whose agent never starts: ready times out naming the agent, and nothing is left", async () => {
    const stateDir = path.join(dir, "t");
    const err = (await vmResource
        .create({ vm: spec("silent", { shellAgent: false }), ready: { agent: true, timeoutSeconds: 20 }, stateDir })
        .catch((e) => e)) as Error;
    expect(err).toBeInstanceOf(Error);
    expect(err.message).toMatch(/not ready within 20 s \(waiting for the guest agent to answer/);
    expect(err.message).toMatch(/PQ-GUEST-READY/);
    expect(processesMentioning(stateDir)).toEqual([]);
}, 120_000);

test("inside readiness without vm.agent is refused naming the fields", async () => {
    const r = await vmResource.check({}, { vm: spec("x", { agent: "none" }), ready: { agent: true, guestPort: 22 } });
    expect(r.failures).toEqual([
        { property: "ready.agent", reason: expect.stringMatching(/set vm.agent to "shell" or "qga"/) },
        { property: "ready.guestPort", reason: expect.stringMatching(/set vm.agent/) },
    ]);
});
