import { randomBytes } from "node:crypto";
import { readFile, mkdtemp, rm, stat, writeFile } from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import { blake3 } from "@noble/hashes/blake3";
import { GuestChannelError } from "../../provider/host/guest/guestChannel";
import { qmpOnce } from "../../provider/host/qemu/qmp";
import * as vmResource from "../../provider/resources/virtualMachine";
import type { VirtualMachineOutputs } from "../../provider/resources/virtualMachine";
import { attach, type Machine } from "../../sdk/testing";
import { ensureTestGuest, guestKernelArguments, READY_MARKER } from "../guest/testGuest";

/**
 * The "shell" agent and the test API against the real busybox test guest under TCG: exit codes
 * and signals, binary-exact stdin/stdout, timeouts and resynchronisation (also across a paused
 * VM), many commands in a row, concurrent callers, waits, copies, QMP actions.
 */

let dir: string;
let guest: { kernel: string; initrd: string };
const created: VirtualMachineOutputs[] = [];
let outs: VirtualMachineOutputs;
let machine: Machine;

async function boot(name: string, extra: Record<string, unknown> = {}): Promise<VirtualMachineOutputs> {
    const vm = {
        name,
        accel: "tcg",
        agent: "shell",
        kernel: guest.kernel,
        initrd: guest.initrd,
        kernelArguments: guestKernelArguments({ name }),
        ...extra,
    };
    const r = await vmResource.create({
        vm,
        ready: { serialPattern: READY_MARKER, timeoutSeconds: 120 },
        stateDir: path.join(dir, "state"),
    });
    created.push(r.outs as VirtualMachineOutputs);
    return r.outs as VirtualMachineOutputs;
}

beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), "pq-sh-"));
    guest = await ensureTestGuest();
    outs = await boot("shell", { memoryMiB: 384 });
    machine = attach(outs);
}, 240_000);

afterAll(async () => {
    machine?.close();
    for (const o of created) await vmResource.remove("", o).catch(() => undefined);
    await rm(dir, { recursive: true, force: true });
}, 60_000);

test("the VM exposes its agent socket, owner-only", async () => {
    expect(outs.agent).toBe("shell");
    expect(outs.agentSocket).toBe(path.join(outs.vmDir, "agent.sock"));
    const st = await stat(outs.agentSocket!);
    expect(st.isSocket()).toBe(true);
    expect(st.mode & 0o077).toBe(0);
});

test("exit codes 0, 1, 255 and a signal; stdout and stderr apart", async () => {
    expect(await machine.execute("true")).toMatchObject({ exitCode: 0, stdout: "", stderr: "" });
    expect((await machine.execute("exit 1")).exitCode).toBe(1);
    expect((await machine.execute("exit 255")).exitCode).toBe(255);
    // Killed by SIGTERM: the shell reports 128 + 15.
    expect((await machine.execute("kill -TERM $$; sleep 5")).exitCode).toBe(143);
    const r = await machine.execute("echo out; echo err >&2; echo out2; exit 7");
    expect(r).toMatchObject({ exitCode: 7, stdout: "out\nout2\n", stderr: "err\n" });
    await expect(machine.succeed("echo nope >&2; exit 3")).rejects.toThrow(/exited 3; stderr: "nope\\n"/);
    expect((await machine.fail("false")).exitCode).toBe(1);
    await expect(machine.fail("true")).rejects.toThrow(/expected to fail/);
}, 60_000);

test("1 MiB of random binary through stdin and back, exactly", async () => {
    const data = randomBytes(1024 * 1024);
    const r = await machine.execute("cat", { stdin: data });
    expect(r.exitCode).toBe(0);
    expect(r.raw.stdout.length).toBe(data.length);
    expect(r.raw.stdout.equals(data)).toBe(true);
    // And to stderr, so the second stream is binary-safe too.
    const e = await machine.execute("cat >&2", { stdin: data.subarray(0, 65537) });
    expect(e.raw.stderr.equals(data.subarray(0, 65537))).toBe(true);
    expect(e.raw.stdout.length).toBe(0);
}, 120_000);

test("quotes, newlines, NUL bytes and environment values survive", async () => {
    const tricky = `it's "quoted" $HOME \`x\` \\ ; | & \n second line\n`;
    expect(await machine.succeed(`printf '%s' "$V"`, { env: { V: tricky } })).toBe(tricky);
    expect(await machine.succeed(`cat <<'EOF'\n${tricky}EOF`)).toBe(tricky);
    const withNul = Buffer.from("a\0b\0\n\0\xff", "latin1");
    const r = await machine.execute("od -An -tx1 | tr -s ' \\n' ' '; cat /dev/null", { stdin: withNul });
    expect(r.stdout.trim()).toBe("61 00 62 00 0a 00 ff");
    await expect(machine.execute("echo \0")).rejects.toThrow(/NUL.*stdin/);
    await expect(machine.execute("env", { env: { "A-B": "x" } })).rejects.toThrow(
        /not a valid environment variable name/,
    );
}, 60_000);

test("a command past its timeout is killed in the guest with its children; the next command works", async () => {
    const t0 = Date.now();
    const err = await machine.execute("sleep 300 & echo started; sleep 300", { timeoutSeconds: 2 }).catch((e) => e);
    expect(err).toBeInstanceOf(GuestChannelError);
    expect(err.kind).toBe("timeout");
    expect(err.message).toMatch(/within 2 s and was killed/);
    expect(err.partial.stdout.toString()).toBe("started\n");
    expect(Date.now() - t0).toBeLessThan(15_000);
    // The background sleep was in the command's process group: gone too.
    expect(await machine.succeed("ps -o args | grep -c '^sleep 300' || true")).toBe("0\n");
    expect(await machine.succeed("echo after")).toBe("after\n");
}, 60_000);

test("a paused VM: the host gives up naming the pause, and after cont the stale reply is skipped", async () => {
    await qmpOnce(outs.qmpSocket, "stop");
    try {
        const err = await machine.execute("echo stale-reply", { timeoutSeconds: 1 }).catch((e) => e);
        expect(err).toBeInstanceOf(GuestChannelError);
        expect(err.kind).toBe("unanswered");
        expect(err.message).toMatch(/did not answer/);
        expect(err.message).toMatch(/VM is paused \(QMP status paused\)/);
        expect(err.message).toMatch(/PQ-GUEST-READY/);
    } finally {
        await qmpOnce(outs.qmpSocket, "cont");
    }
    // The guest now answers the abandoned request first; the host discards that and resyncs.
    expect(await machine.succeed("echo fresh")).toBe("fresh\n");
    expect(await machine.succeed("echo fresh2")).toBe("fresh2\n");
}, 90_000);

test("200 commands in a row", async () => {
    const t0 = Date.now();
    for (let i = 0; i < 200; i++) expect(await machine.succeed(`echo ${i}`)).toBe(`${i}\n`);
    console.log(`200 commands: ${((Date.now() - t0) / 200).toFixed(1)} ms each`);
}, 120_000);

test("two callers on one channel are serialised, never interleaved", async () => {
    const other = attach(outs);
    try {
        await machine.succeed("rm -f /tmp/order");
        const run = (m: Machine, who: string) =>
            Promise.all(
                Array.from({ length: 15 }, (_, i) =>
                    m
                        .succeed(
                            `echo begin ${who}${i} >> /tmp/order; usleep 20000; echo end ${who}${i} >> /tmp/order; echo ${who}${i}`,
                        )
                        .then((out) => expect(out).toBe(`${who}${i}\n`)),
                ),
            );
        await Promise.all([run(machine, "a"), run(other, "b")]);
        const lines = (await machine.succeed("cat /tmp/order")).trim().split("\n");
        expect(lines).toHaveLength(60);
        for (let i = 0; i < lines.length; i += 2) {
            expect(lines[i].replace("begin", "end")).toBe(lines[i + 1]);
        }
    } finally {
        other.close();
    }
}, 120_000);

test("waitForOpenPort sees a guest service only once it listens; waits have deadlines", async () => {
    await machine.waitForOpenPort(80, { timeoutSeconds: 10 });
    const t0 = Date.now();
    await expect(machine.waitForOpenPort(8080, { timeoutSeconds: 2 })).rejects.toThrow(
        /waitForOpenPort\(8080\): not within 2 s. Listening in the guest: 80/,
    );
    expect(Date.now() - t0).toBeLessThan(10_000);
    await machine.succeed("(sleep 2; httpd -p 8080 -h /www) > /dev/null 2>&1 &");
    await machine.waitForOpenPort(8080, { timeoutSeconds: 30 });
    await machine.succeed("killall httpd; true");
    await machine.waitForClosedPort(8080, { timeoutSeconds: 30 });
    await machine.succeed("httpd -p 80 -h /www");

    await machine.succeed("(sleep 1; touch /tmp/later) &");
    await machine.waitForFile("/tmp/later", { timeoutSeconds: 30 });
    await expect(machine.waitUntilSucceeds("test -e /tmp/never", { timeoutSeconds: 2 })).rejects.toThrow(
        /not within 2 s. Last attempt: command "test -e \/tmp\/never" exited 1/,
    );
    expect((await machine.waitUntilFails("test -e /tmp/never", { timeoutSeconds: 5 })).exitCode).toBe(1);

    await machine.succeed("echo console-marker-$((6 * 7)) > /dev/console");
    expect(await machine.waitForConsoleText(/console-marker-\d+/, { timeoutSeconds: 10 })).toBe("console-marker-42");
}, 120_000);

test("copy 8 MiB in and out with matching BLAKE3", async () => {
    const src = path.join(dir, "in.bin");
    const back = path.join(dir, "back.bin");
    const data = randomBytes(8 * 1024 * 1024);
    await writeFile(src, data);
    const t0 = Date.now();
    await machine.copyToGuest(src, "/tmp/copied.bin");
    const t1 = Date.now();
    await machine.copyFromGuest("/tmp/copied.bin", back);
    const t2 = Date.now();
    console.log(`8 MiB: in ${t1 - t0} ms, out ${t2 - t1} ms`);
    expect(await machine.succeed("wc -c < /tmp/copied.bin")).toMatch(/^\s*8388608\n$/);
    expect(Buffer.from(blake3(await readFile(back))).toString("hex")).toBe(Buffer.from(blake3(data)).toString("hex"));
    expect((await stat(back)).mode & 0o077).toBe(0);
    await expect(machine.copyFromGuest("/tmp/missing", path.join(dir, "missing"))).rejects.toThrow(/No such file/);
    await machine.succeed("rm /tmp/copied.bin");
}, 180_000);

test("output over 16 MiB is refused in memory, never truncated, and streams to a file", async () => {
    const size = 16 * 1024 * 1024 + 1;
    const err = await machine.execute(`head -c ${size} /dev/zero`, { timeoutSeconds: 120 }).catch((e) => e);
    expect(err).toBeInstanceOf(GuestChannelError);
    expect(err.kind).toBe("too-large");
    expect(err.message).toMatch(/stdout is 16777217 bytes, over the 16777216-byte limit.*stdoutFile/);
    const file = path.join(dir, "big.out");
    const r = await machine.execute(`head -c ${size} /dev/zero`, { timeoutSeconds: 120, stdoutFile: file });
    expect(r.exitCode).toBe(0);
    expect((await stat(file)).size).toBe(size);
    expect(await machine.succeed("echo still-in-sync")).toBe("still-in-sync\n");
    await rm(file);
}, 240_000);

test("a stdoutFile that cannot be written: a clear error, and the channel stays in step", async () => {
    const err = await machine.execute("echo x", { stdoutFile: path.join(dir, "no-such-dir", "out") }).catch((e) => e);
    expect(err.message).toMatch(
        /the command ran \(exit 0\) but its stdout could not go to stdoutFile .*no-such-dir\/out: ENOENT/,
    );
    expect(await machine.succeed("echo in-step")).toBe("in-step\n");
}, 60_000);

test("setLink takes the NIC's link down and up; screenshot writes a PNG", async () => {
    expect(await machine.succeed("cat /sys/class/net/eth0/carrier")).toBe("1\n");
    const nics = await machine.nics();
    expect(nics).toHaveLength(1);
    await machine.setLink(nics[0], false);
    await machine.waitUntilSucceeds("grep -qx 0 /sys/class/net/eth0/carrier", { timeoutSeconds: 10 });
    await machine.setLink(nics[0], true);
    await machine.waitUntilSucceeds("grep -qx 1 /sys/class/net/eth0/carrier", { timeoutSeconds: 10 });
    await expect(machine.setLink("no-such-nic", false)).rejects.toThrow(/no-such-nic/);

    const png = path.join(dir, "screen.png");
    await machine.screenshot(png);
    const bytes = await readFile(png);
    expect(bytes.subarray(1, 4).toString()).toBe("PNG");
    expect(bytes.readUInt32BE(16)).toBeGreaterThan(0);
    expect(bytes.readUInt32BE(20)).toBeGreaterThan(0);
}, 60_000);

test("shutdown waits for QEMU to exit; afterwards the channel says the guest is gone", async () => {
    await machine.shutdown({ timeoutSeconds: 60 });
    const err = await attach(outs)
        .execute("true")
        .catch((e) => e);
    expect(err).toBeInstanceOf(GuestChannelError);
    expect(err.message).toMatch(/QEMU is gone|guest is gone/);
}, 90_000);

test("crash quits at once; a machine without an agent says how to get one", async () => {
    const plain = await boot("noagent", { agent: "none", network: "none" });
    expect(plain.agentSocket).toBeUndefined();
    const m = attach(plain);
    await expect(m.execute("true")).rejects.toThrow(/no guest agent channel: set vm.agent/);
    const t0 = Date.now();
    await m.crash();
    expect(Date.now() - t0).toBeLessThan(10_000);
    expect(await vmResource.read("x", plain)).toEqual({ id: "", props: {} });
}, 180_000);

test("a guest that reboots mid-command: the error says the guest is gone, with the console", async () => {
    // onReboot "stop" (-no-reboot): the reboot ends QEMU, so the channel closes for good.
    const vm = await boot("reboots", { network: "none", onReboot: "stop" });
    const m = attach(vm);
    try {
        const err = await m.execute("echo going; sleep 1; reboot -f; sleep 30").catch((e) => e);
        expect(err).toBeInstanceOf(GuestChannelError);
        expect(err.kind).toBe("closed");
        expect(err.message).toMatch(/closed while waiting for the command to finish/);
        expect(err.message).toMatch(/The guest is gone: QEMU is not running/);
        expect(err.message).toMatch(/Last lines of the serial console/);
    } finally {
        m.close();
    }
}, 180_000);
