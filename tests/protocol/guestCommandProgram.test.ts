import { existsSync } from "node:fs";
import { mkdir, mkdtemp, readFile, rm } from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import { assertBuilt, MAIN_ROOT } from "../engine/driver";
import { destroy, refresh, up, type ProjectOptions, type RunSummary } from "../engine/miniEngine";
import { prepareProgram } from "../engine/program";
import { ensureTestGuest, guestKernelArguments } from "../guest/testGuest";
import { attach } from "../../sdk/testing";

/**
 * examples/guest-command as a user runs it, through the mini engine: up runs the step in the
 * guest, a no-op up changes nothing, the step undone inside the guest is drift after refresh and
 * the next up runs it again, and destroy runs its `delete` in the guest before the VM goes.
 */

let work: string;
let opts: ProjectOptions;
let shared: string;

beforeAll(async () => {
    assertBuilt();
    const guest = await ensureTestGuest();
    work = await mkdtemp(path.join(os.tmpdir(), "pq-gcp-"));
    shared = path.join(work, "shared");
    await mkdir(shared, { mode: 0o777 });
    const dir = await prepareProgram(path.join(MAIN_ROOT, "examples", "guest-command"), path.join(work, "program"));
    opts = {
        dir,
        project: "qemu-guest-command",
        stack: "test",
        statePath: path.join(work, "state.json"),
        env: { PULUMI_QEMU_STATE_DIR: path.join(work, "qs") },
        config: {
            kernel: guest.kernel,
            initrd: guest.initrd,
            kernelArguments: guestKernelArguments({ name: "gcp", mounts: [{ tag: "pqshare", at: "/mnt/share" }] }),
            sharedDir: shared,
            accel: "tcg",
        },
    };
}, 180_000);

afterAll(async () => {
    if (opts && existsSync(opts.statePath))
        await destroy(opts).catch((err) => console.error(`cleanup destroy: ${err.message}`));
    if (work) await rm(work, { recursive: true, force: true });
}, 120_000);

function changes(s: RunSummary): number {
    return Object.entries(s.counts)
        .filter(([op]) => op !== "same")
        .reduce((n, [, c]) => n + c, 0);
}

test("up, no-op up, drift found by check, up again, destroy runs delete", async () => {
    const first = await up(opts);
    expect(first.outputs.greeting).toBe("managed by pulumi\n");
    const machine = attach(first.outputs.machine as any);
    try {
        expect(await machine.succeed("cat /etc/motd")).toBe("managed by pulumi\n");

        expect(changes(await up(opts))).toBe(0);

        await machine.succeed("rm /etc/motd");
        const refreshed = await refresh(opts);
        expect(JSON.stringify(refreshed.steps)).toMatch(/motd/);
        const again = await up(opts);
        expect(changes(again)).toBeGreaterThan(0);
        expect(await machine.succeed("cat /etc/motd")).toBe("managed by pulumi\n");
        expect(changes(await up(opts))).toBe(0);
    } finally {
        machine.close();
    }
    await destroy(opts);
    expect(await readFile(path.join(shared, "deleted"), "utf8")).toBe("motd-deleted\n");
}, 600_000);
