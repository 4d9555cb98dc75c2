import { mkdtemp, rm } from "node:fs/promises";
import * as net from "node:net";
import * as os from "node:os";
import * as path from "node:path";
import { buildQemuArgv, specArgvHash } from "../../provider/core/qemuArgv";
import { QemuStartError, startDaemonized } from "../../provider/host/qemu/qemuProcess";
import { parseVmSpec } from "../../provider/core/vmSpec";
import * as vmResource from "../../provider/resources/virtualMachine";
import {
    cleanConsole,
    explainStartError,
    serialMatcher,
    type VirtualMachineOutputs,
} from "../../provider/resources/virtualMachine";
import { UNKNOWN } from "../../provider/resources/common";

/**
 * The decisions a VirtualMachine makes without booting a guest: input checks, what replaces a
 * running guest and what does not, how the console is matched, how QEMU's errors are explained.
 */

const base = { accel: "tcg", kernel: "/boot/vmlinuz", memoryMiB: 256 };

function oldOutputs(vm: Record<string, unknown>, ready?: Record<string, unknown>): VirtualMachineOutputs {
    return {
        vm,
        ...(ready ? { ready } : {}),
        vmDir: "/nonexistent/vms/vm-abcdef",
        pid: 1,
        pidfile: "/nonexistent/vms/vm-abcdef/qemu.pid",
        qmpSocket: "/nonexistent/vms/vm-abcdef/qmp.sock",
        serialLog: "/nonexistent/vms/vm-abcdef/serial.log",
        launcherPath: "/nonexistent/vms/vm-abcdef/run-vm.sh",
        argvHash: specArgvHash(parseVmSpec(vm)),
        status: "running",
        accel: "tcg",
        accelReason: "asked for tcg",
        startedAt: "2026-01-01T00:00:00.000Z",
        readySeconds: 3,
        processStartTime: "1",
        bootId: "none",
    };
}

test("check names each bad field with its value", async () => {
    const r = await vmResource.check(
        {},
        {
            vm: {
                ...base,
                portForwards: [
                    { host: 8080, guest: 80 },
                    { host: 70000, guest: 80 },
                ],
            },
            ready: { serialPattern: "/([/", tcpPort: 9999, timeoutSeconds: -1 },
        },
    );
    expect(r.failures).toEqual(
        expect.arrayContaining([
            { property: "vm.portForwards[1].host", reason: "host must be between 1 and 65535 (got 70000)" },
            {
                property: "ready.serialPattern",
                reason: expect.stringMatching(/is not a regular expression this provider can run \(missing closing \]/),
            },
            { property: "ready.timeoutSeconds", reason: "timeoutSeconds must be more than 0 (got -1)" },
        ]),
    );
    const port = await vmResource.check(
        {},
        { vm: { ...base, portForwards: [{ host: 8080, guest: 80 }] }, ready: { tcpPort: 9999 } },
    );
    expect(port.failures).toEqual([
        {
            property: "ready.tcpPort",
            reason: "tcpPort must be a host port the VM forwards over TCP (got 9999; forwarded: 8080)",
        },
    ]);
    const ok = { vm: { ...base, portForwards: [{ host: 8080, guest: 80 }] }, ready: { tcpPort: 8080 } };
    expect(await vmResource.check({}, ok)).toEqual({ inputs: ok });
});

test("a preview with unknown values neither fails nor touches anything", async () => {
    const news = { vm: { ...base, kernel: UNKNOWN }, ready: { tcpPort: UNKNOWN } };
    expect(await vmResource.check({}, news)).toEqual({ inputs: news });
    expect(await vmResource.diff("vm-abcdef", oldOutputs(base), news as never)).toEqual({
        changes: true,
        replaces: ["vm"],
        deleteBeforeReplace: true,
    });
});

test("diff: spelled-out defaults are no change, ready alone updates in place, the argv replaces", async () => {
    const olds = oldOutputs(base, { serialPattern: "login:" });
    expect(
        await vmResource.diff("id", olds, {
            vm: { ...base, cpus: 1, graphic: false, network: "user", shares: [] },
            ready: { serialPattern: "login:" },
        }),
    ).toEqual({ changes: false });
    expect(
        await vmResource.diff("id", olds, { vm: base, ready: { serialPattern: "login:", timeoutSeconds: 300 } }),
    ).toEqual({ changes: true });
    expect(
        await vmResource.diff("id", olds, { vm: { ...base, memoryMiB: 512 }, ready: { serialPattern: "login:" } }),
    ).toEqual({
        changes: true,
        replaces: ["vm"],
        deleteBeforeReplace: false,
    });
    expect(
        await vmResource.diff("id", olds, { vm: base, ready: { serialPattern: "login:" }, stateDir: "/elsewhere" }),
    ).toMatchObject({ replaces: ["stateDir"] });
});

test("diff: a VM holding host ports or a writable disk is stopped before its replacement starts", async () => {
    const withPort = { ...base, portForwards: [{ host: 8080, guest: 80 }] };
    expect(await vmResource.diff("id", oldOutputs(withPort), { vm: { ...withPort, memoryMiB: 512 } })).toMatchObject({
        deleteBeforeReplace: true,
    });
    // The old one held the port even if the new one does not.
    expect(await vmResource.diff("id", oldOutputs(withPort), { vm: base })).toMatchObject({
        deleteBeforeReplace: true,
    });
    const withDisk = { ...base, disks: [{ path: "/images/root.qcow2", format: "qcow2" }] };
    expect(await vmResource.diff("id", oldOutputs(withDisk), { vm: { ...withDisk, memoryMiB: 512 } })).toMatchObject({
        deleteBeforeReplace: true,
    });
    const readOnly = { ...base, disks: [{ path: "/images/root.qcow2", format: "qcow2", readOnly: true }] };
    expect(await vmResource.diff("id", oldOutputs(readOnly), { vm: { ...readOnly, memoryMiB: 512 } })).toMatchObject({
        deleteBeforeReplace: false,
    });
});

test("update keeps the running VM and records the new ready settings", async () => {
    const olds = oldOutputs(base, { serialPattern: "login:" });
    const { outs } = await vmResource.update("id", olds, {
        vm: base,
        ready: { tcpPort: undefined, timeoutSeconds: 300 } as never,
    });
    expect(outs).toEqual({ ...olds, ready: { timeoutSeconds: 300 } });
    const { outs: none } = await vmResource.update("id", olds, { vm: base });
    expect("ready" in none).toBe(false);
});

test("serialPattern: plain text is a substring, /…/ a regular expression", () => {
    expect(serialMatcher("[  OK  ] Reached")("x[  OK  ] Reached target")).toBe(true);
    expect(serialMatcher("[  OK  ] Reached")("O")).toBe(false);
    expect(serialMatcher("/^login: $/m")("Welcome\nlogin: \n")).toBe(true);
    expect(serialMatcher("/LOGIN/i")("login")).toBe(true);
    expect(serialMatcher("/^ready$/")("not ready")).toBe(false);
});

test("the console is cleaned of SeaBIOS escape codes and CRLF before matching", () => {
    const raw =
        "\x1bc\x1b[?7l\x1b[2J\x1b[0mSeaBIOS (version 1.16.2)\r\nBooting from ROM..\x1bc\x1b[?7l\x1b[2JPQ-GUEST-READY\r\n";
    const clean = cleanConsole(raw);
    expect(clean).toBe("SeaBIOS (version 1.16.2)\nBooting from ROM..PQ-GUEST-READY\n");
    expect(serialMatcher("/^Booting from ROM\\.\\.PQ-GUEST-READY$/m")(clean)).toBe(true);
});

test("QEMU's own port clash (lost race after the provider's check) is reported with the field", async () => {
    const holder = net.createServer();
    await new Promise<void>((resolve) => holder.listen(0, "127.0.0.1", resolve));
    const port = (holder.address() as net.AddressInfo).port;
    const dir = await mkdtemp(path.join(os.tmpdir(), "pq-vm-clash-"));
    try {
        const spec = parseVmSpec({
            accel: "tcg",
            portForwards: [
                { host: 1234, guest: 22 },
                { host: port, guest: 80 },
            ],
        });
        const pidfile = path.join(dir, "qemu.pid");
        const argv = buildQemuArgv(
            spec,
            { accel: "tcg" },
            { pidfile, qmpSocket: path.join(dir, "qmp.sock"), serialLog: path.join(dir, "serial.log") },
        );
        const raw = await startDaemonized(argv, pidfile).catch((e: unknown) => e);
        expect(raw).toBeInstanceOf(QemuStartError);
        const explained = explainStartError(raw, spec) as Error;
        expect(explained.message).toMatch(
            new RegExp(
                `^vm\\.portForwards\\[1\\]\\.host: host port 127\\.0\\.0\\.1:${port}/tcp is already in use .*Could not set up host forwarding rule`,
            ),
        );
    } finally {
        holder.close();
        await rm(dir, { recursive: true, force: true });
    }
});
