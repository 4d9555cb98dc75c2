import { chmod, mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import { resolveAccel } from "../../provider/host/qemu/accel";
import { buildQemuArgv } from "../../provider/core/qemuArgv";
import { renderLauncher } from "../../provider/core/launcher";
import { mountTag } from "../../provider/core/mountTag";
import { parseVmSpec } from "../../provider/core/vmSpec";
import { ensureTestGuest, guestKernelArguments, READY_MARKER } from "../guest/testGuest";
import { freePort, httpGetWhenUp, tcpListenAddresses } from "../support/net";
import { startWatched, type Watched } from "../support/process";

/**
 * The foundation end to end: a spec becomes an argv, the argv a launcher script, and the
 * launcher, run by a real /bin/sh, boots a real guest that uses the share and the port.
 */
describe("a guest booted from buildQemuArgv + renderLauncher", () => {
    let dir: string;
    let share: string;
    let port: number;
    let vm: Watched | undefined;
    let accel: { accel: string; reason: string };

    beforeAll(async () => {
        dir = await mkdtemp(path.join(os.tmpdir(), "pq-launcher-"));
        // A space and a comma: the comma must reach QEMU as ",," and the space survive the shell.
        share = path.join(dir, "shared dir, with comma");
        await mkdir(share);
        await writeFile(
            path.join(share, "pq-init.sh"),
            "echo written-by-guest > /mnt/share/from-guest.txt\nsync\necho pq-init-done\n",
        );
        port = await freePort();

        const guest = await ensureTestGuest();
        accel = await resolveAccel("auto");
        const spec = parseVmSpec({
            accel: "auto",
            kernel: guest.kernel,
            initrd: guest.initrd,
            kernelArguments: guestKernelArguments({
                name: "launcher-test",
                mounts: [{ tag: mountTag(share), at: "/mnt/share" }],
            }),
            shares: [{ source: share }],
            portForwards: [{ host: port, guest: 80 }],
        });
        const launcher = path.join(dir, "run-vm.sh");
        await writeFile(launcher, renderLauncher(buildQemuArgv(spec, { accel: accel.accel as "kvm" | "tcg" })));
        await chmod(launcher, 0o555);
        vm = startWatched("/bin/sh", [launcher]);
        await vm.waitFor(READY_MARKER, 120_000);
    }, 180_000);

    afterAll(async () => {
        await vm?.stop();
        await rm(dir, { recursive: true, force: true });
    });

    test('accel "auto" chose TCG on this machine and the guest booted instead of hanging', () => {
        expect(accel.accel).toBe("tcg");
        expect(vm!.output()).toContain(READY_MARKER);
    });

    test("the guest writes into a 9p share whose host path has a space and a comma", async () => {
        await vm!.waitFor("pq-init-done", 30_000);
        expect(await readFile(path.join(share, "from-guest.txt"), "utf8")).toBe("written-by-guest\n");
    });

    test("the forwarded port answers HTTP served inside the guest, on loopback only", async () => {
        const res = await httpGetWhenUp(`http://127.0.0.1:${port}/`, 30_000);
        expect(res.status).toBe(200);
        expect(res.body).toContain("pulumi-qemu test guest launcher-test");
        expect(tcpListenAddresses(port)).toEqual(["127.0.0.1"]);
    });
});
