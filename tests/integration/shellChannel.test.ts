import { mkdtemp, rm } from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import type { GuestChannel } from "../../provider/host/guestChannel";
import { openAgentChannel } from "../../provider/resources/agentChannel";
import * as vmResource from "../../provider/resources/virtualMachine";
import type { VirtualMachineOutputs } from "../../provider/resources/virtualMachine";
import { ensureTestGuest, guestKernelArguments, READY_MARKER } from "../guest/testGuest";

let dir: string;
let outs: VirtualMachineOutputs;
let channel: GuestChannel;

beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), "pq-sh-"));
    const guest = await ensureTestGuest();
    const vm = { name: "shell", accel: "tcg", agent: "shell", network: "none", kernel: guest.kernel, initrd: guest.initrd, kernelArguments: guestKernelArguments({ name: "shell" }) };
    outs = (await vmResource.create({ vm, ready: { serialPattern: READY_MARKER, timeoutSeconds: 120 }, stateDir: path.join(dir, "state") })).outs as VirtualMachineOutputs;
    channel = openAgentChannel(outs);
}, 240_000);

afterAll(async () => {
    channel?.close();
    if (outs) await vmResource.remove("", outs);
    await rm(dir, { recursive: true, force: true });
}, 60_000);

test("smoke", async () => {
    const t0 = Date.now();
    const r = await channel.execute("echo hi; echo err >&2; exit 3");
    console.log(Date.now() - t0);
    expect(r.exitCode).toBe(3);
    expect(r.stdout.toString()).toBe("hi\n");
    expect(r.stderr.toString()).toBe("err\n");
    const t1 = Date.now();
    for (let i = 0; i < 10; i++) await channel.execute("true");
    console.log("10 trues", Date.now() - t1);
}, 120_000);
