import * as dgram from "node:dgram";
import { mkdtemp, rm } from "node:fs/promises";
import * as net from "node:net";
import * as os from "node:os";
import * as path from "node:path";
import { parseVmSpec } from "../../provider/core/vmSpec";
import { hostPortProblem } from "../../provider/host/net/ports";
import { pickHostPorts, portOutputs } from "../../provider/resources/virtualMachine/ports";

/**
 * Host ports the provider picks, against real sockets: free and distinct, remembered per VM
 * name so a VM made again gets its port back, a new one (and a note) when that port is taken.
 */

let stateDir: string;
const closers: Array<() => void> = [];

beforeAll(async () => {
    stateDir = await mkdtemp(path.join(os.tmpdir(), "pq-ports-"));
});

afterAll(async () => {
    closers.forEach((c) => c());
    await rm(stateDir, { recursive: true, force: true });
});

test("picked ports are free, distinct, apart from explicit ones, and free for UDP when the forward is UDP", async () => {
    const spec = parseVmSpec({
        name: "pick",
        portForwards: [{ guest: 80 }, { guest: 22 }, { host: 40999, guest: 443 }, { guest: 53, protocol: "udp" }],
    });
    const { hostPorts, note } = await pickHostPorts(spec, stateDir);
    expect(note).toBeUndefined();
    expect(Object.keys(hostPorts).sort()).toEqual(["0", "1", "3"]);
    const picked = Object.values(hostPorts);
    expect(new Set([...picked, 40999]).size).toBe(4);
    expect(
        await hostPortProblem({ port: hostPorts[0], address: "127.0.0.1", protocol: "tcp", field: "f" }),
    ).toBeUndefined();
    expect(
        await hostPortProblem({ port: hostPorts[3], address: "127.0.0.1", protocol: "udp", field: "f" }),
    ).toBeUndefined();
    expect(portOutputs(spec, hostPorts)).toEqual({
        ports: { "80": hostPorts[0], "22": hostPorts[1], "443": 40999, "53/udp": hostPorts[3] },
        endpoints: {
            "80": `127.0.0.1:${hostPorts[0]}`,
            "22": `127.0.0.1:${hostPorts[1]}`,
            "443": "127.0.0.1:40999",
            "53/udp": `127.0.0.1:${hostPorts[3]}`,
        },
    });
});

test("a VM made again gets its old port back; when that port is taken it gets another and says so", async () => {
    const spec = parseVmSpec({ name: "sticky", portForwards: [{ guest: 80 }] });
    const first = (await pickHostPorts(spec, stateDir)).hostPorts[0];
    expect((await pickHostPorts(spec, stateDir)).hostPorts[0]).toBe(first);
    // Another VM name does not share the memory.
    expect(
        (await pickHostPorts(parseVmSpec({ name: "other", portForwards: [{ guest: 80 }] }), stateDir)).hostPorts[0],
    ).not.toBe(first);

    const holder = net.createServer();
    await new Promise<void>((resolve) => holder.listen(first, "127.0.0.1", resolve));
    closers.push(() => holder.close());
    const again = await pickHostPorts(spec, stateDir);
    expect(again.hostPorts[0]).not.toBe(first);
    expect(again.note).toBe(
        `vm.portForwards[0].host: host port ${first}, used before, is taken; picked ${again.hostPorts[0]}`,
    );
    // The new port is remembered from now on.
    holder.close();
    expect((await pickHostPorts(spec, stateDir)).hostPorts[0]).toBe(again.hostPorts[0]);
});

test("a remembered UDP port now bound by someone else is not reused", async () => {
    const spec = parseVmSpec({ name: "dns", portForwards: [{ guest: 53, protocol: "udp" }] });
    const first = (await pickHostPorts(spec, stateDir)).hostPorts[0];
    const sock = dgram.createSocket("udp4");
    await new Promise<void>((resolve) => sock.bind(first, "127.0.0.1", resolve));
    closers.push(() => sock.close());
    const again = await pickHostPorts(spec, stateDir);
    expect(again.hostPorts[0]).not.toBe(first);
    expect(again.note).toMatch(/used before, is taken/);
});
