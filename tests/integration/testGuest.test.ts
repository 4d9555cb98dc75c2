import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import * as http from "node:http";
import * as net from "node:net";
import * as os from "node:os";
import * as path from "node:path";
import execa from "execa";
import { ensureTestGuest, guestKernelArguments, moduleLoadOrder, READY_MARKER, TestGuest } from "../guest/testGuest";

/** Boots the test guest with a hand-written QEMU command line and checks each promise its /init makes. */

const QEMU = "qemu-system-x86_64";

let work: string;
let guest: TestGuest;
let qemu: execa.ExecaChildProcess | undefined;
let exited: Promise<number | null>;
let port: number;
let bootMs: number;

function freePort(): Promise<number> {
    return new Promise((resolve, reject) => {
        const s = net.createServer();
        s.once("error", reject);
        s.listen(0, "127.0.0.1", () => {
            const p = (s.address() as net.AddressInfo).port;
            s.close(() => resolve(p));
        });
    });
}

async function waitFor<T>(
    what: string,
    timeoutMs: number,
    probe: () => Promise<T | undefined>,
    context: () => Promise<string>,
): Promise<T> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
        const v = await probe();
        if (v !== undefined) return v;
        if (Date.now() > deadline) throw new Error(`${what} did not happen within ${timeoutMs} ms\n${await context()}`);
        await new Promise((r) => setTimeout(r, 100));
    }
}

const serialLog = () => path.join(work, "serial.log");
const readSerial = () => readFile(serialLog(), "latin1").catch(() => "");
const serialTail = async () => `--- serial log tail ---\n${(await readSerial()).slice(-3000)}`;

function httpGet(url: string, timeoutMs: number): Promise<string | undefined> {
    return new Promise((resolve) => {
        const req = http.get(url, { timeout: timeoutMs }, (res) => {
            let body = "";
            res.setEncoding("utf8");
            res.on("data", (c: string) => (body += c));
            res.on("end", () => resolve(res.statusCode === 200 ? body : undefined));
            res.on("error", () => resolve(undefined));
        });
        req.on("timeout", () => req.destroy());
        req.on("error", () => resolve(undefined));
    });
}

/** The least QMP that asks for an ACPI power-button press: greeting, capabilities, command. */
function qmpPowerdown(socketPath: string): Promise<void> {
    return new Promise((resolve, reject) => {
        const sock = net.createConnection(socketPath);
        let buf = "";
        let step = 0;
        sock.setEncoding("utf8");
        sock.on("data", (chunk: string) => {
            buf += chunk;
            let nl: number;
            while ((nl = buf.indexOf("\n")) >= 0) {
                const msg = JSON.parse(buf.slice(0, nl));
                buf = buf.slice(nl + 1);
                if (msg.event) continue;
                if (msg.error) return reject(new Error(`QMP error: ${JSON.stringify(msg.error)}`));
                if (step === 0 && msg.QMP) sock.write(JSON.stringify({ execute: "qmp_capabilities" }) + "\n");
                else if (step === 1) sock.write(JSON.stringify({ execute: "system_powerdown" }) + "\n");
                else if (step === 2) {
                    sock.end();
                    return resolve();
                }
                step++;
            }
        });
        sock.on("error", reject);
    });
}

beforeAll(async () => {
    work = await mkdtemp(path.join(os.tmpdir(), "pq-testguest-"));
    const buildStart = Date.now();
    guest = await ensureTestGuest();
    console.log(`test guest ready in ${Date.now() - buildStart} ms (kernel ${guest.kernelVersion})`);

    const share = path.join(work, "share");
    await execa("mkdir", [share]);
    await writeFile(
        path.join(share, "pq-init.sh"),
        "echo hello-from-guest > /mnt/share/from-guest.txt\ncat /mnt/share/from-guest.txt\n",
    );
    port = await freePort();

    const append = guestKernelArguments({ name: "web1", mounts: [{ tag: "share0", at: "/mnt/share" }] }).join(" ");
    const argv = [
        "-accel",
        "tcg",
        "-m",
        "256",
        "-display",
        "none",
        "-no-reboot",
        "-serial",
        `file:${serialLog()}`,
        "-qmp",
        `unix:${path.join(work, "qmp.sock")},server=on,wait=off`,
        "-kernel",
        guest.kernel,
        "-initrd",
        guest.initrd,
        "-append",
        append,
        "-virtfs",
        `local,path=${share},security_model=none,mount_tag=share0`,
        "-nic",
        `user,model=virtio-net-pci,hostfwd=tcp:127.0.0.1:${port}-:80`,
    ];
    const launched = Date.now();
    qemu = execa(QEMU, argv, { reject: false, stdio: ["ignore", "pipe", "pipe"] });
    exited = qemu.then((r) => r.exitCode ?? null);
    qemu.catch(() => undefined);

    await waitFor(
        `the guest's ${READY_MARKER} line`,
        90_000,
        async () => {
            if (qemu?.exitCode !== null && qemu?.exitCode !== undefined) {
                const r = await qemu;
                throw new Error(
                    `QEMU exited with ${r.exitCode} before the guest was ready: ${r.stderr}\n${await serialTail()}`,
                );
            }
            return (await readSerial()).includes(READY_MARKER) ? true : undefined;
        },
        serialTail,
    );
    bootMs = Date.now() - launched;
    console.log(`launch to ${READY_MARKER}: ${bootMs} ms`);
}, 300_000);

afterAll(async () => {
    if (qemu && qemu.exitCode === null) {
        qemu.kill("SIGKILL");
        await exited;
    }
    if (work) await rm(work, { recursive: true, force: true });
});

test("modules load after their dependencies", async () => {
    const dep = await readFile(`/lib/modules/${guest.kernelVersion}/modules.dep`, "utf8");
    const names = moduleLoadOrder(dep, ["9p", "virtio_net"]).map((m) => m.name);
    expect(names).toEqual(
        expect.arrayContaining([
            "9pnet",
            "netfs",
            "fscache",
            "9p",
            "failover",
            "net_failover",
            "virtio",
            "virtio_ring",
            "virtio_net",
        ]),
    );
    expect(names.indexOf("9pnet")).toBeLessThan(names.indexOf("9p"));
    expect(names.indexOf("net_failover")).toBeLessThan(names.indexOf("virtio_net"));
    expect(names.indexOf("failover")).toBeLessThan(names.indexOf("net_failover"));
    expect(names.indexOf("virtio_ring")).toBeLessThan(names.indexOf("virtio"));
});

test("the guest boots to the ready marker with every module loaded", async () => {
    const log = await readSerial();
    expect(log).toContain(READY_MARKER);
    expect(log).not.toMatch(/pq: [^\n]*failed|pq: no eth0|pq: bad/);
});

test("a script in the share runs and its file reaches the host", async () => {
    const text = await readFile(path.join(work, "share", "from-guest.txt"), "utf8");
    expect(text.trim()).toBe("hello-from-guest");
    expect(await readSerial()).toContain("pq: /mnt/share/pq-init.sh exited 0");
});

test("busybox httpd answers on the forwarded port with the guest's name", async () => {
    const body = await waitFor(
        "an HTTP answer from the guest",
        30_000,
        () => httpGet(`http://127.0.0.1:${port}/`, 2000),
        serialTail,
    );
    expect(body.trim()).toBe("pulumi-qemu test guest web1");
});

test("QMP system_powerdown makes QEMU exit within 15 s", async () => {
    const asked = Date.now();
    await qmpPowerdown(path.join(work, "qmp.sock"));
    let timer: NodeJS.Timeout | undefined;
    const code = await Promise.race([
        exited,
        new Promise<"timeout">((r) => (timer = setTimeout(() => r("timeout"), 15_000))),
    ]);
    clearTimeout(timer);
    if (code === "timeout") throw new Error(`QEMU still runs 15 s after system_powerdown\n${await serialTail()}`);
    console.log(`system_powerdown to QEMU exit: ${Date.now() - asked} ms (exit code ${code})`);
    expect(code).toBe(0);
}, 30_000);
