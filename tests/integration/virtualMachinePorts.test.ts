import * as dgram from "node:dgram";
import * as http from "node:http";
import * as net from "node:net";
import {
    assertHostPortsFree,
    hostPortProblem,
    pickFreePort,
    portProber,
    tcpAnswers,
} from "../../provider/host/net/ports";

/**
 * The host-port checks a VM relies on, against real sockets: what counts as taken, and what
 * counts as an answer (an accepted connection alone must not).
 */

const closers: Array<() => void> = [];
afterAll(() => closers.forEach((c) => c()));

async function listen(server: net.Server): Promise<number> {
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    closers.push(() => server.close());
    return (server.address() as net.AddressInfo).port;
}

test("a TCP port with a listener is taken; the message names field, address, port and protocol", async () => {
    const port = await listen(net.createServer());
    expect(
        await hostPortProblem({ port, address: "127.0.0.1", protocol: "tcp", field: "vm.portForwards[0].host" }),
    ).toBe(
        `vm.portForwards[0].host: host port 127.0.0.1:${port}/tcp is already in use by another process or VM; choose another port`,
    );
    // A listener on loopback also blocks the wildcard address.
    expect(await hostPortProblem({ port, address: "0.0.0.0", protocol: "tcp", field: "f" })).toMatch(/already in use/);
    const free = await pickFreePort();
    expect(await hostPortProblem({ port: free, address: "127.0.0.1", protocol: "tcp", field: "f" })).toBeUndefined();
});

test("UDP ports are checked as UDP", async () => {
    const sock = dgram.createSocket("udp4");
    await new Promise<void>((resolve) => sock.bind(0, "127.0.0.1", resolve));
    closers.push(() => sock.close());
    const port = sock.address().port;
    expect(
        await hostPortProblem({ port, address: "127.0.0.1", protocol: "udp", field: "vm.portForwards[2].host" }),
    ).toMatch(new RegExp(`^vm\\.portForwards\\[2\\]\\.host: host port 127\\.0\\.0\\.1:${port}/udp is already in use`));
});

test("an address that is not the host's is reported as such", async () => {
    expect(
        await hostPortProblem({
            port: 40000,
            address: "192.0.2.1",
            protocol: "tcp",
            field: "vm.portForwards[0].hostAddress",
        }),
    ).toBe("vm.portForwards[0].hostAddress: host address 192.0.2.1 is not an address of this host");
});

test("assertHostPortsFree lists every taken port at once", async () => {
    const a = await listen(net.createServer());
    const b = await listen(net.createServer());
    const free = await pickFreePort();
    await expect(
        assertHostPortsFree([
            { port: a, address: "127.0.0.1", protocol: "tcp", field: "x[0]" },
            { port: free, address: "127.0.0.1", protocol: "tcp", field: "x[1]" },
            { port: b, address: "127.0.0.1", protocol: "tcp", field: "x[2]" },
        ]),
    ).rejects.toThrow(
        new RegExp(`^x\\[0\\]: host port 127\\.0\\.0\\.1:${a}/tcp .*\\nx\\[2\\]: host port 127\\.0\\.0\\.1:${b}/tcp`),
    );
});

test("a server that accepts and stays silent is not an answer; one that speaks first or answers HTTP is", async () => {
    // What QEMU's user networking does before the guest listens: accept, then nothing.
    const silent = await listen(net.createServer((s) => closers.push(() => s.destroy())));
    const t0 = Date.now();
    expect(await tcpAnswers("127.0.0.1", silent, 800)).toBe(false);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(790);

    const banner = await listen(net.createServer((s) => s.end("SSH-2.0-test\r\n")));
    expect(await tcpAnswers("127.0.0.1", banner, 2000)).toBe(true);

    const web = http.createServer((_req, res) => res.end("ok"));
    const webPort = await listen(web);
    expect(await tcpAnswers("127.0.0.1", webPort, 2000)).toBe(true);

    const closed = await pickFreePort();
    expect(await tcpAnswers("127.0.0.1", closed, 2000)).toBe(false);
});

test("overlapping probes notice a service soon after it starts, while earlier probes still hang", async () => {
    let speak = false;
    const hanging: net.Socket[] = [];
    const port = await listen(
        net.createServer((s) => {
            if (speak) s.end("hello\n");
            else hanging.push(s);
        }),
    );
    closers.push(() => hanging.forEach((s) => s.destroy()));
    const prober = portProber("127.0.0.1", port, { probeTimeoutMs: 10_000, intervalMs: 100 });
    try {
        const until = Date.now() + 1000;
        while (Date.now() < until) {
            expect(prober.tick()).toBe(false);
            await new Promise((r) => setTimeout(r, 20));
        }
        expect(hanging.length).toBeGreaterThanOrEqual(5);
        speak = true;
        const t0 = Date.now();
        while (!prober.tick()) {
            if (Date.now() - t0 > 5000) throw new Error("the prober did not notice the service within 5 s");
            await new Promise((r) => setTimeout(r, 20));
        }
        expect(Date.now() - t0).toBeLessThan(1500);
    } finally {
        prober.stop();
    }
});
