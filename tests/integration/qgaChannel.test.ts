import { randomBytes } from "node:crypto";
import { mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import { blake3 } from "@noble/hashes/blake3";
import { GuestChannelError } from "../../provider/host/guest/guestChannel";
import { qmpOnce } from "../../provider/host/qemu/qmp";
import * as vmResource from "../../provider/resources/virtualMachine";
import type { VirtualMachineOutputs } from "../../provider/resources/virtualMachine";
import { attach, type Machine } from "../../sdk/testing";
import { ensureTestGuest, guestKernelArguments } from "../guest/testGuest";

/**
 * agent "qga" against Debian's real qemu-ga, carried (with its shared libraries) by a variant
 * of the busybox test guest: readiness from inside, exit codes, binary stdin, stderr, timeout
 * and resync, copies with guest-file-*, and the 16 MiB output cap refused rather than truncated.
 */

let dir: string;
let outs: VirtualMachineOutputs;
let machine: Machine;

beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), "pq-qga-"));
    const guest = await ensureTestGuest({ qemuGa: true });
    // The shell agent stays off: everything here goes through qemu-ga.
    const vm = {
        name: "qga",
        accel: "tcg",
        agent: "qga",
        memoryMiB: 384,
        network: "none",
        kernel: guest.kernel,
        initrd: guest.initrd,
        kernelArguments: guestKernelArguments({ name: "qga", shellAgent: false }),
    };
    outs = (await vmResource.create({ vm, ready: { agent: true, timeoutSeconds: 120 }, stateDir: path.join(dir, "s") }))
        .outs as VirtualMachineOutputs;
    machine = attach(outs);
}, 300_000);

afterAll(async () => {
    machine?.close();
    if (outs) await vmResource.remove("", outs);
    await rm(dir, { recursive: true, force: true });
}, 60_000);

test("the agent is qemu-ga on org.qemu.guest_agent.0", async () => {
    expect(outs.agent).toBe("qga");
    expect(await machine.succeed("cat /sys/class/virtio-ports/*/name")).toBe("org.qemu.guest_agent.0\n");
    expect(await machine.succeed("ps -o args | grep -c '^/usr/sbin/qemu-ga'")).toBe("1\n");
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
}, 60_000);

test("1 MiB of random binary through stdin and back", async () => {
    const data = randomBytes(1024 * 1024);
    const r = await machine.execute("cat", { stdin: data });
    expect(r.raw.stdout.equals(data)).toBe(true);
}, 120_000);

test("a command past its timeout is killed; the next command works", async () => {
    const err = await machine.execute("sleep 300", { timeoutSeconds: 2 }).catch((e) => e);
    expect(err).toBeInstanceOf(GuestChannelError);
    expect(err.kind).toBe("timeout");
    expect(await machine.succeed("ps -o args | grep -c '^sleep 300' || true")).toBe("0\n");
    expect(await machine.succeed("echo after")).toBe("after\n");
}, 60_000);

test("copy 8 MiB in and out with guest-file-*, BLAKE3 matching", async () => {
    const src = path.join(dir, "in.bin");
    const back = path.join(dir, "back.bin");
    const data = randomBytes(8 * 1024 * 1024);
    await writeFile(src, data);
    const t0 = Date.now();
    await machine.copyToGuest(src, "/tmp/copied.bin");
    const t1 = Date.now();
    await machine.copyFromGuest("/tmp/copied.bin", back);
    console.log(`qga 8 MiB: in ${t1 - t0} ms, out ${Date.now() - t1} ms`);
    expect(Buffer.from(blake3(await readFile(back))).toString("hex")).toBe(Buffer.from(blake3(data)).toString("hex"));
    expect((await stat(back)).mode & 0o077).toBe(0);
}, 180_000);

test("output over 16 MiB is refused in memory and streams to a file", async () => {
    const size = 16 * 1024 * 1024 + 1;
    const err = await machine.execute(`head -c ${size} /dev/zero`, { timeoutSeconds: 120 }).catch((e) => e);
    expect(err).toBeInstanceOf(GuestChannelError);
    expect(err.kind).toBe("too-large");
    expect(err.message).toMatch(/stdout is over the 16777216-byte limit.*stdoutFile/);
    const file = path.join(dir, "big.out");
    const r = await machine.execute(`head -c ${size} /dev/zero`, { timeoutSeconds: 120, stdoutFile: file });
    expect(r.exitCode).toBe(0);
    expect((await stat(file)).size).toBe(size);
}, 240_000);

test("a paused VM: the error names the pause; after cont guest-sync-delimited resynchronises", async () => {
    await qmpOnce(outs.qmpSocket, "stop");
    try {
        const err = await machine.execute("echo stale", { timeoutSeconds: 1 }).catch((e) => e);
        expect(err).toBeInstanceOf(GuestChannelError);
        expect(err.kind).toBe("unanswered");
        expect(err.message).toMatch(/VM is paused \(QMP status paused\)/);
    } finally {
        await qmpOnce(outs.qmpSocket, "cont");
    }
    expect(await machine.succeed("echo fresh")).toBe("fresh\n");
}, 60_000);

test("two callers are serialised; waitForOpenPort works over qga too", async () => {
    const other = attach(outs);
    try {
        const run = (m: Machine, who: string) =>
            Promise.all(
                Array.from({ length: 8 }, (_, i) =>
                    m.succeed(`echo ${who}${i}`).then((o) => expect(o).toBe(`${who}${i}\n`)),
                ),
            );
        await Promise.all([run(machine, "a"), run(other, "b")]);
    } finally {
        other.close();
    }
    await expect(machine.waitForOpenPort(8081, { timeoutSeconds: 2 })).rejects.toThrow(/not within 2 s/);
    await machine.succeed("httpd -p 8081 -h /www");
    await machine.waitForOpenPort(8081, { timeoutSeconds: 30 });
}, 120_000);
