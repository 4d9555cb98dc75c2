import * as net from "node:net";
import * as os from "node:os";
import * as path from "node:path";
import { mkdtemp, rm } from "node:fs/promises";
import { QmpClient, QmpCommandError, queryStatus } from "../../provider/host/qemu/qmp";

/**
 * The client against a scripted QMP peer on a real unix socket: the wire cases a real QEMU
 * produces only by chance (events between a command and its reply, replies split across
 * packets or several in one packet, silence, a peer that hangs up).
 */

type Handler = (msg: any, sock: net.Socket) => void;

const GREETING =
    JSON.stringify({ QMP: { version: { qemu: { major: 7, minor: 2, micro: 0 } }, capabilities: [] } }) + "\r\n";

let dir: string;
const servers: net.Server[] = [];

beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), "pq-qmp-unit-"));
});

afterAll(async () => {
    for (const s of servers) s.close();
    await rm(dir, { recursive: true, force: true });
});

let seq = 0;
async function peer(handler: Handler, opts: { greeting?: string | null } = {}): Promise<string> {
    const socketPath = path.join(dir, `s${seq++}.sock`);
    const server = net.createServer((sock) => {
        if (opts.greeting !== null) sock.write(opts.greeting ?? GREETING);
        let buf = "";
        sock.on("data", (d) => {
            buf += d.toString();
            let nl: number;
            while ((nl = buf.indexOf("\n")) >= 0) {
                const line = buf.slice(0, nl);
                buf = buf.slice(nl + 1);
                const msg = JSON.parse(line);
                if (msg.execute === "qmp_capabilities") sock.write(JSON.stringify({ return: {}, id: msg.id }) + "\r\n");
                else handler(msg, sock);
            }
        });
        sock.on("error", () => undefined);
    });
    servers.push(server);
    await new Promise<void>((resolve) => server.listen(socketPath, resolve));
    return socketPath;
}

const line = (v: unknown) => JSON.stringify(v) + "\r\n";

test("negotiates capabilities and returns a command's value", async () => {
    const sock = await peer((msg, s) => {
        expect(msg.execute).toBe("query-status");
        s.write(line({ return: { running: true, singlestep: false, status: "running" }, id: msg.id }));
    });
    const c = await QmpClient.connect(sock);
    expect(c.greeting).toEqual({ version: { qemu: { major: 7, minor: 2, micro: 0 } }, capabilities: [] });
    await expect(queryStatus(c)).resolves.toEqual({ running: true, status: "running" });
    c.close();
});

test("events interleaved before a reply are recorded and the reply still matches its command", async () => {
    const sock = await peer((msg, s) => {
        const ev = line({ event: "POWERDOWN", timestamp: { seconds: 1, microseconds: 2 } });
        const reply = line({ return: { answer: msg.arguments.n }, id: msg.id });
        // event and reply in one packet, the reply split in the middle
        s.write(ev + reply.slice(0, 7));
        setTimeout(() => s.write(reply.slice(7)), 20);
    });
    const c = await QmpClient.connect(sock);
    const powerdown = c.waitForEvent("POWERDOWN", 2000);
    await expect(c.execute("echo", { n: 42 })).resolves.toEqual({ answer: 42 });
    await expect(powerdown).resolves.toMatchObject({ event: "POWERDOWN" });
    expect(c.events.map((e) => e.event)).toEqual(["POWERDOWN"]);
    c.close();
});

test("replies arriving out of order go to the right callers", async () => {
    const held: any[] = [];
    const sock = await peer((msg, s) => {
        held.push(msg);
        if (held.length === 2) {
            s.write(
                line({ return: held[1].arguments.v, id: held[1].id }) +
                    line({ return: held[0].arguments.v, id: held[0].id }),
            );
        }
    });
    const c = await QmpClient.connect(sock);
    const [a, b] = await Promise.all([c.execute("x", { v: "first" }), c.execute("x", { v: "second" })]);
    expect([a, b]).toEqual(["first", "second"]);
    c.close();
});

test("an error reply becomes a QmpCommandError carrying QEMU's class and text", async () => {
    const sock = await peer((msg, s) => {
        s.write(line({ error: { class: "CommandNotFound", desc: "The command nope has not been found" }, id: msg.id }));
    });
    const c = await QmpClient.connect(sock);
    const err = (await c.execute("nope").catch((e: unknown) => e)) as QmpCommandError;
    expect(err).toBeInstanceOf(QmpCommandError);
    expect(err.errorClass).toBe("CommandNotFound");
    expect(err.message).toBe("QMP nope failed: CommandNotFound: The command nope has not been found");
    c.close();
});

test("a command with no reply times out, and the connection stays usable", async () => {
    const sock = await peer((msg, s) => {
        if (msg.execute === "ok") s.write(line({ return: {}, id: msg.id }));
    });
    const c = await QmpClient.connect(sock);
    const t0 = Date.now();
    await expect(c.execute("silent", undefined, { timeoutMs: 150 })).rejects.toThrow(
        "QMP silent got no reply within 150 ms",
    );
    expect(Date.now() - t0).toBeLessThan(1000);
    await expect(c.execute("ok")).resolves.toEqual({});
    c.close();
});

test("a peer that never greets makes connect fail within its timeout", async () => {
    const sock = await peer(() => undefined, { greeting: null });
    const t0 = Date.now();
    await expect(QmpClient.connect(sock, { connectTimeoutMs: 200 })).rejects.toThrow(
        /greeting.*timed out after 200 ms/,
    );
    expect(Date.now() - t0).toBeLessThan(1500);
});

test("a missing socket fails connect with the path in the message", async () => {
    await expect(QmpClient.connect(path.join(dir, "absent.sock"))).rejects.toThrow(/absent\.sock.*ENOENT/);
});

test("a hang-up rejects pending commands and resolves waitForClose", async () => {
    const sock = await peer((msg, s) => {
        if (msg.execute === "quit") {
            s.write(
                line({ return: {}, id: msg.id }) +
                    line({ event: "SHUTDOWN", data: { guest: false, reason: "host-qmp-quit" } }),
            );
            s.end();
        }
        // "hang" gets no reply: the hang-up must reject it
    });
    const c = await QmpClient.connect(sock);
    const hanging = c.execute("hang", undefined, { timeoutMs: 5000 });
    await expect(c.execute("quit")).resolves.toEqual({});
    await c.waitForClose(2000);
    expect(c.isClosed).toBe(true);
    await expect(hanging).rejects.toThrow(/QMP hang got no reply: .*closed/);
    await expect(c.waitForEvent("SHUTDOWN", 10)).resolves.toMatchObject({ data: { reason: "host-qmp-quit" } });
    await expect(c.execute("after")).rejects.toThrow(/closed/);
});

test("waitForEvent times out when the event never comes", async () => {
    const sock = await peer(() => undefined);
    const c = await QmpClient.connect(sock);
    await expect(c.waitForEvent("SHUTDOWN", 100)).rejects.toThrow("no QMP SHUTDOWN event within 100 ms");
    c.close();
});

test("a line that is not JSON closes the connection with the line in the error", async () => {
    const sock = await peer((msg, s) => {
        s.write("garbage here\r\n");
        void msg;
    });
    const c = await QmpClient.connect(sock);
    await expect(c.execute("x")).rejects.toThrow(/not JSON: garbage here/);
    expect(c.isClosed).toBe(true);
});
