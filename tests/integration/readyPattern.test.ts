import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import * as vmResource from "../../provider/resources/virtualMachine";
import { ensureTestGuest, guestKernelArguments } from "../guest/testGuest";
import { processesMentioning } from "../support/process";

/**
 * A readiness pattern that would backtrack for ever on V8's engine (`/(a+)+$/` against a long
 * run of "a" that ends otherwise) against a real guest's console: the create must still give up
 * at its timeout, with the provider's event loop free, and leave nothing running.
 */

let dir: string;

beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), "pq-ready-"));
});

afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
});

test("a catastrophic serialPattern times out on time instead of stalling the provider", async () => {
    const guest = await ensureTestGuest();
    const share = path.join(dir, "share");
    await mkdir(share);
    // 60 a's then "!": 2^60 ways to split them for a backtracking engine; one pass for RE2.
    await writeFile(
        path.join(share, "pq-init.sh"),
        `i=0; s=; while [ $i -lt 60 ]; do s="\${s}a"; i=$((i+1)); done; echo "$s!"\n`,
    );
    const vm = {
        accel: "tcg",
        kernel: guest.kernel,
        initrd: guest.initrd,
        kernelArguments: guestKernelArguments({ name: "regex", mounts: [{ tag: "pqshare", at: "/mnt/share" }] }),
        shares: [{ source: share, mountTag: "pqshare" }],
    };
    const stateDir = path.join(dir, "state");
    let ticks = 0;
    const timer = setInterval(() => ticks++, 100);
    const t0 = Date.now();
    try {
        const failure = await vmResource
            .create({ vm, stateDir, ready: { serialPattern: "/(a+)+$/", timeoutSeconds: 20 } })
            .then(
                () => "created",
                (err: Error) => err.message,
            );
        expect(failure).toMatch(/not ready within 20 s \(waiting for serialPattern/);
        // The console did carry the run of a's (the error shows its last lines).
        expect(failure).toContain(`${"a".repeat(60)}!`);
    } finally {
        clearInterval(timer);
    }
    const seconds = (Date.now() - t0) / 1000;
    expect(seconds).toBeLessThan(60);
    // The event loop kept turning the whole time (a blocked loop would have let almost no ticks through).
    expect(ticks).toBeGreaterThan(seconds * 5);
    expect(processesMentioning(stateDir)).toEqual([]);
}, 120_000);
