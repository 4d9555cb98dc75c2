import { existsSync, readdirSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import * as net from "node:net";
import * as os from "node:os";
import * as path from "node:path";
import * as vmResource from "../../provider/resources/virtualMachine";
import type { VirtualMachineOutputs } from "../../provider/resources/virtualMachine";
import { ensureTestGuest, guestKernelArguments, READY_MARKER } from "../guest/testGuest";
import { freePort, httpGet } from "../support/net";

/**
 * Several VMs at once on a 2-core host: parallel creates must not clash on directories,
 * sockets or ports, and a host port two parties want goes to one of them with a clear error
 * for the other.
 */

let dir: string;
let guest: { kernel: string; initrd: string };
const created: VirtualMachineOutputs[] = [];

beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), "pq-fleet-"));
    guest = await ensureTestGuest();
}, 180_000);

afterAll(async () => {
    await Promise.all(created.map((outs) => vmResource.remove("", outs).catch(() => undefined)));
    await rm(dir, { recursive: true, force: true });
}, 180_000);

function guestVm(name: string, port: number) {
    return {
        name,
        accel: "tcg",
        kernel: guest.kernel,
        initrd: guest.initrd,
        kernelArguments: guestKernelArguments({ name }),
        portForwards: [{ host: port, guest: 80 }],
    };
}

test("a host port already in use is reported before QEMU starts, naming field and port", async () => {
    const stateDir = path.join(dir, "busy");
    const holder = net.createServer();
    await new Promise<void>((resolve) => holder.listen(0, "127.0.0.1", resolve));
    const port = (holder.address() as net.AddressInfo).port;
    try {
        const extra = await freePort();
        const vm = {
            ...guestVm("busy", extra),
            portForwards: [
                { host: extra, guest: 22 },
                { host: port, guest: 80 },
            ],
        };
        const t0 = Date.now();
        const err = (await vmResource.create({ vm, stateDir }).catch((e: unknown) => e)) as Error;
        expect(err.message).toBe(
            `vm.portForwards[1].host: host port 127.0.0.1:${port}/tcp is already in use by another process or VM; choose another port`,
        );
        // Found by the provider, not by a QEMU that started and failed.
        expect(Date.now() - t0).toBeLessThan(2000);
        expect(readdirSync(path.join(stateDir, "vms"))).toEqual([]);
    } finally {
        holder.close();
    }
});

test("four VMs created in parallel all come up with their own files, sockets and ports", async () => {
    const stateDir = path.join(dir, "four");
    const ports = await Promise.all([0, 1, 2, 3].map(() => freePort()));
    const t0 = Date.now();
    const results = await Promise.all(
        ports.map((port, i) =>
            vmResource
                .create({
                    vm: guestVm(`par-${i}`, port),
                    ready: { serialPattern: READY_MARKER, tcpPort: port, timeoutSeconds: 400 },
                    stateDir,
                })
                .then((r) => {
                    created.push(r.outs);
                    return { ...r, at: (Date.now() - t0) / 1000 };
                }),
        ),
    );
    console.log(
        `four VMs in parallel: all ready after ${((Date.now() - t0) / 1000).toFixed(2)} s; each at ${results.map((r) => r.at.toFixed(1)).join(", ")} s`,
    );
    const outs = results.map((r) => r.outs);
    for (const key of ["vmDir", "qmpSocket", "serialLog", "pidfile", "launcherPath", "pid"] as const) {
        expect(new Set(outs.map((o) => o[key])).size).toBe(4);
    }
    expect(new Set(results.map((r) => r.id)).size).toBe(4);
    for (const [i, port] of ports.entries()) {
        expect(await httpGet(`http://127.0.0.1:${port}/`)).toMatchObject({
            status: 200,
            body: `pulumi-qemu test guest par-${i}\n`,
        });
    }
    const t1 = Date.now();
    await Promise.all(results.map((r) => vmResource.remove(r.id, r.outs)));
    console.log(`four VMs in parallel: delete took ${((Date.now() - t1) / 1000).toFixed(2)} s`);
    for (const o of outs) expect(existsSync(o.vmDir)).toBe(false);
}, 600_000);

test("two VMs asking for one host port: one gets it, the other fails clearly and the first is untouched", async () => {
    const stateDir = path.join(dir, "clash");
    const port = await freePort();
    const ask = (name: string) =>
        vmResource.create({
            vm: guestVm(name, port),
            ready: { serialPattern: READY_MARKER, tcpPort: port, timeoutSeconds: 300 },
            stateDir,
        });
    // At the same time: both may pass the provider's own check, and QEMU decides.
    const settled = await Promise.allSettled([ask("clash-a"), ask("clash-b")]);
    const won = settled.filter(
        (s): s is PromiseFulfilledResult<Awaited<ReturnType<typeof ask>>> => s.status === "fulfilled",
    );
    const lost = settled.filter((s): s is PromiseRejectedResult => s.status === "rejected");
    for (const w of won) created.push(w.value.outs);
    expect([won.length, lost.length]).toEqual([1, 1]);
    expect(String(lost[0].reason.message)).toMatch(
        new RegExp(`^vm\\.portForwards\\[0\\]\\.host: host port 127\\.0\\.0\\.1:${port}/tcp is already in use`),
    );

    // Afterwards, one more asks: refused before QEMU starts.
    await expect(ask("clash-c")).rejects.toThrow(
        `vm.portForwards[0].host: host port 127.0.0.1:${port}/tcp is already in use`,
    );

    const first = won[0].value;
    expect(await vmResource.read(first.id, first.outs)).toEqual({
        id: first.id,
        props: { ...first.outs, status: "running" },
    });
    const name = (first.outs.vm as { name: string }).name;
    expect(await httpGet(`http://127.0.0.1:${port}/`)).toMatchObject({
        status: 200,
        body: `pulumi-qemu test guest ${name}\n`,
    });
    expect(readdirSync(path.join(stateDir, "vms"))).toEqual([first.id]);
    await vmResource.remove(first.id, first.outs);
}, 600_000);
