import execa from "execa";
import { existsSync } from "node:fs";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import { assertBuilt, MAIN_ROOT } from "../engine/driver";
import { destroy, loadState, up, type ProjectOptions } from "../engine/miniEngine";
import { consecutiveFreePorts } from "../engine/ports";
import { prepareProgram } from "../engine/program";
import { ensureDebianGuest } from "../guest/debianGuest";
import { httpGetWhenUp } from "../support/net";
import { isRunning } from "../support/process";

/**
 * examples/debian-web as a user runs it, through the mini engine and the dynamic-provider
 * plugin, on the cached Debian image (baseImage + baseInputHash): one Debian VM configured only
 * by its seed serves its page and takes our SSH key; a second up changes nothing; destroy stops it.
 */

let work: string;
let opts: ProjectOptions;
let key: string;

beforeAll(async () => {
    assertBuilt();
    const guest = await ensureDebianGuest();
    work = await mkdtemp(path.join(os.tmpdir(), "pq-debian-web-"));
    key = path.join(work, "id_ed25519");
    await execa("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", "pq-example", "-f", key]);
    const dir = await prepareProgram(path.join(MAIN_ROOT, "examples", "debian-web"), path.join(work, "program"));
    opts = {
        dir,
        project: "qemu-debian-web",
        stack: "test",
        statePath: path.join(work, "state.json"),
        env: { PULUMI_QEMU_STATE_DIR: path.join(work, "qs") },
        config: {
            kernel: guest.kernel,
            initrd: guest.initrd,
            baseImage: guest.image,
            baseInputHash: guest.inputHash,
            count: 1,
            firstPort: await consecutiveFreePorts(2),
            sshPublicKey: (await readFile(`${key}.pub`, "utf8")).trim(),
            accel: "tcg",
        },
    };
}, 20 * 60_000);

afterAll(async () => {
    if (opts && existsSync(opts.statePath))
        await destroy(opts).catch((err) => console.error(`cleanup destroy: ${err.message}`));
    if (work) await rm(work, { recursive: true, force: true });
}, 120_000);

test(
    "up boots a Debian web server configured by its seed; a second up changes nothing; destroy stops it",
    async () => {
        const first = await up(opts);
        console.log(`debian-web, 1 VM: up ${first.seconds.toFixed(1)} s`);
        expect(first.logs.filter((l) => l.severity === "error")).toEqual([]);
        expect(first.counts.create).toBe(3);
        const sites = first.outputs.sites as Record<string, string>;
        expect((await httpGetWhenUp(sites["debian-web-1"], 60_000)).body).toContain("<h1>debian-web-1</h1>");
        const [, port] = /-p (\d+)/.exec((first.outputs.ssh as Record<string, string>)["debian-web-1"])!;
        const r = await execa(
            "ssh",
            [
                "-i",
                key,
                "-p",
                port,
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
                "-o",
                "BatchMode=yes",
                "-o",
                "LogLevel=ERROR",
                "web@127.0.0.1",
                "hostname",
            ],
            { timeout: 60_000 },
        );
        expect(r.stdout.trim()).toBe("debian-web-1");

        const again = await up(opts);
        expect(again.counts).toMatchObject({ create: 0, update: 0, replace: 0, delete: 0 });

        const state = await loadState(opts.statePath);
        const vm = state.resources.find((x) => x.type === "pulumi-nodejs:dynamic/qemu:VirtualMachine")!;
        await destroy(opts);
        expect(isRunning(Number(vm.outputs.pid))).toBe(false);
    },
    20 * 60_000,
);
