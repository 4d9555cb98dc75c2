import { parseHost } from "../../provider/core/hostSpec";
import { judgeOurDaemon, parseProcStat } from "../../provider/host/qemu/qemuProcess";
import { consoleTail } from "../../provider/host/qemu/serialWatch";
import * as gc from "../../provider/resources/guestCommand";
import { UNKNOWN } from "../../provider/resources/common";
import { configureHost } from "../../provider/resources/placement";

/**
 * The pure parts of driving a VM on a far host: the GuestCommand placement rule (a command runs
 * where its VM is), QEMU's liveness judged from /proc facts read elsewhere, and a console tail
 * from bytes read elsewhere. The real thing runs in tests/integration/remoteAttach.test.ts.
 */

const vmOutputs = (host?: string) => ({
    id: "vm-AbC123",
    agent: "shell",
    agentSocket: "/home/lab/.local/state/pulumi-qemu/vms/vm-AbC123/agent.sock",
    qmpSocket: "/home/lab/.local/state/pulumi-qemu/vms/vm-AbC123/qmp.sock",
    serialLog: "/home/lab/.local/state/pulumi-qemu/vms/vm-AbC123/serial.log",
    pid: 4242,
    processStartTime: "123456",
    bootId: "b0-07",
    pidfile: "/home/lab/.local/state/pulumi-qemu/vms/vm-AbC123/qemu.pid",
    ...(host ? { host } : {}),
});

afterEach(() => configureHost(undefined));

describe("GuestCommand is placed on its VM's host", () => {
    test("same host (own input, written another way), or both on this machine: no failure", async () => {
        expect((await gc.check({}, { vm: vmOutputs(), create: "true" })).failures ?? []).toEqual([]);
        const r = await gc.check(
            {},
            { vm: vmOutputs("ssh://lab@lab-2.example.com:22"), host: "ssh://lab@LAB-2.example.com", create: "true" },
        );
        expect(r.failures ?? []).toEqual([]);
    });

    test("the provider's configured host counts as the command's placement", async () => {
        configureHost(parseHost("ssh://lab@lab-2.example.com:2222"));
        expect(
            (await gc.check({}, { vm: vmOutputs("ssh://lab@lab-2.example.com:2222"), create: "true" })).failures ?? [],
        ).toEqual([]);
        const local = await gc.check({}, { vm: vmOutputs(), create: "true" });
        expect(local.failures?.[0]).toMatchObject({
            property: "vm",
            reason: expect.stringContaining(
                "the VM runs on this machine but this GuestCommand is placed on host ssh://lab@lab-2.example.com:2222",
            ),
        });
    });

    test("without a host of its own, a command goes where its VM is", async () => {
        const r = await gc.check({}, { vm: vmOutputs("ssh://lab@lab-2.example.com:22"), create: "true" });
        expect(r.failures ?? []).toEqual([]);
        expect(r.inputs.host).toEqual({ url: "ssh://lab@lab-2.example.com:22" });
    });

    test("a VM elsewhere fails check with both placements and the fix", async () => {
        configureHost(undefined);
        const local = vmOutputs();
        const there = await gc.check({}, { vm: local, host: "ssh://lab@lab-3.example.com", create: "true" });
        expect(there.failures?.[0]).toMatchObject({
            property: "vm",
            reason: expect.stringContaining(
                "the VM runs on this machine but this GuestCommand is placed on host ssh://lab@lab-3.example.com:22; a command reaches its VM through the agent socket on the VM's host, so leave the GuestCommand's host out",
            ),
        });
        const here = await gc.check(
            {},
            { vm: vmOutputs("ssh://lab@lab-2.example.com:22"), host: "ssh://lab@lab-3.example.com", create: "true" },
        );
        expect(here.failures).toHaveLength(1);
        expect(here.failures![0].property).toBe("vm");
        expect(here.failures![0].reason).toMatch(
            /the VM runs on host ssh:\/\/lab@lab-2\.example\.com:22 but this GuestCommand is placed on host ssh:\/\/lab@lab-3\.example\.com:22/,
        );
        expect(here.failures![0].reason).toContain('set the GuestCommand\'s host to "ssh://lab@lab-2.example.com:22"');
        const bad = await gc.check({}, { vm: { ...vmOutputs(), host: "http://x" }, create: "true" });
        expect(bad.failures?.[0]).toMatchObject({
            property: "vm",
            reason: expect.stringContaining("vm.host must be the VirtualMachine's host output"),
        });
    });

    test("a vm still unknown at preview is not judged", async () => {
        const r = await gc.check({}, { vm: { ...vmOutputs(), host: UNKNOWN }, create: "true" });
        expect(r.failures ?? []).toEqual([]);
    });
});

describe("QEMU's liveness from facts read on another host", () => {
    const identity = { pid: 4242, startTime: "123456", bootId: "b0-07" };
    const stat =
        "4242 (qemu-system-x86) S 1 4241 4241 0 -1 4194560 1 0 0 0 1 1 0 0 20 0 3 0 123456 1000 100 18446744073709551615 1 1 0 0 0 0 0 4096 0 0 0 0 17 0 0 0 0 0 0\n";
    const facts = (over: Partial<{ bootId: string; stat: string | undefined; cmdline: string[] | undefined }> = {}) => {
        const f = {
            bootId: "b0-07",
            stat: stat as string | undefined,
            cmdline: ["qemu-system-x86_64", "-pidfile", "/p/qemu.pid"] as string[] | undefined,
            ...over,
        };
        return {
            bootId: async () => f.bootId,
            stat: async () => (f.stat ? parseProcStat(f.stat) : undefined),
            cmdline: async () => f.cmdline,
        };
    };
    test("alive, and each way of being gone", async () => {
        expect(await judgeOurDaemon(identity, "/p/qemu.pid", facts())).toEqual({ alive: true });
        expect(await judgeOurDaemon(identity, "/p/qemu.pid", facts({ bootId: "other" }))).toMatchObject({
            alive: false,
            reason: expect.stringMatching(/rebooted/),
        });
        expect(await judgeOurDaemon(identity, "/p/qemu.pid", facts({ stat: undefined }))).toMatchObject({
            alive: false,
            reason: "no process 4242",
        });
        expect(
            await judgeOurDaemon(identity, "/p/qemu.pid", facts({ stat: stat.replace(" S ", " Z ") })),
        ).toMatchObject({ alive: false, reason: expect.stringMatching(/exited/) });
        expect(
            await judgeOurDaemon(identity, "/p/qemu.pid", facts({ stat: stat.replace(" 123456 ", " 999 ") })),
        ).toMatchObject({ alive: false, reason: expect.stringMatching(/another process/) });
        expect(await judgeOurDaemon(identity, "/other.pid", facts())).toMatchObject({
            alive: false,
            reason: expect.stringMatching(/not the QEMU that writes \/other\.pid/),
        });
    });
});

test("a console tail from bytes read elsewhere: a cut first line is dropped, escapes cleaned, last lines kept", () => {
    expect(consoleTail("half line\nsecond\n\x1b[1mthird\x1b[0m\r\n", true)).toBe("second\nthird");
    expect(consoleTail("first\nsecond\n", false, 1)).toBe("second");
    expect(consoleTail("", false)).toBe("(the serial console printed nothing)");
});
