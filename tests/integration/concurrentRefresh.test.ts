import { spawn } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import * as vmResource from "../../provider/resources/virtualMachine";
import { assertBuilt, MAIN_ROOT } from "../engine/driver";
import { ensureTestGuest, guestKernelArguments } from "../guest/testGuest";

/**
 * Many refreshes at once — separate provider processes, and many reads in one — all ask QEMU's
 * single QMP connection for the run state. Each must wait its turn and report the truth
 * ("running"), not "unresponsive" because another refresh held the socket.
 */

let dir: string;

beforeAll(async () => {
    assertBuilt();
    dir = await mkdtemp(path.join(os.tmpdir(), "pq-refresh-"));
}, 60_000);

afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
});

function readInChild(id: string, props: unknown): Promise<string> {
    const module = path.join(MAIN_ROOT, "bin", "provider", "resources", "virtualMachine.js");
    const script = `require(${JSON.stringify(module)}).read(process.argv[1], JSON.parse(process.argv[2])).then((r) => console.log(r.props.status), (e) => console.log("error " + e.message));`;
    return new Promise((resolve) => {
        const child = spawn(process.execPath, ["-e", script, id, JSON.stringify(props)], {
            stdio: ["ignore", "pipe", "pipe"],
        });
        let out = "";
        child.stdout.on("data", (d) => (out += d));
        child.stderr.on("data", (d) => (out += d));
        // "close", not "exit": exit can come before the last of stdout has been read.
        child.on("close", () => resolve(out.trim()));
    });
}

test("40 refreshes in 40 processes and 40 reads in one all see the VM running", async () => {
    const guest = await ensureTestGuest();
    const vm = {
        accel: "tcg",
        kernel: guest.kernel,
        initrd: guest.initrd,
        kernelArguments: guestKernelArguments({ name: "busy" }),
    };
    const { id, outs } = await vmResource.create({
        vm,
        stateDir: path.join(dir, "state"),
        ready: { serialPattern: "PQ-GUEST-READY", timeoutSeconds: 120 },
    });
    try {
        const children = await Promise.all(Array.from({ length: 40 }, () => readInChild(id, outs)));
        expect(children).toEqual(Array(40).fill("running"));
        const inProcess = await Promise.all(Array.from({ length: 40 }, () => vmResource.read(id, outs)));
        expect(inProcess.map((r) => r.props.status)).toEqual(Array(40).fill("running"));
    } finally {
        await vmResource.remove(id, outs);
    }
}, 180_000);
