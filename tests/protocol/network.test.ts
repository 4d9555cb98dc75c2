import { existsSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import { openDriver, type Driver, type PluginKind } from "../engine/driver";
import type { Props } from "../engine/wire";
import { isRunning } from "../support/process";

/**
 * Network's lifecycle over gRPC through both plugins (the dynamic shim and `qemu:index:Network`):
 * check naming a bad subnet, create with a real switch, a no-op diff, a replacing diff, read,
 * read after the switch is killed, delete.
 */

const DIFF_NONE = 1;
const DIFF_SOME = 2;

describe.each<PluginKind>(["dynamic", "qemu"])("Network through the %s plugin", (kind) => {
    let driver: Driver;
    let dir: string;
    const started: number[] = [];

    beforeAll(async () => {
        dir = await mkdtemp(path.join(os.tmpdir(), `pq-pnet-${kind[0]}-`));
        driver = await openDriver(kind);
    }, 120_000);

    afterAll(async () => {
        await driver?.close();
        for (const pid of started) if (isRunning(pid)) process.kill(pid, "SIGKILL");
        if (dir) await rm(dir, { recursive: true, force: true });
    });

    test("check, create, no-op diff, replacing diff, read, read after kill -9, delete", async () => {
        const urn = driver.urn("Network", `lan-${kind}`);
        const stateDir = path.join(dir, "s");
        const bad = await driver.plugin.check(urn, {}, driver.news("Network", { stateDir, subnet: "10.5.5.5/24" }));
        expect(bad.failures).toEqual([
            {
                property: "subnet",
                reason: expect.stringMatching(/host bits set; write its network address, 10\.5\.5\.0\/24/),
            },
        ]);

        const checked = await driver.plugin.check(
            urn,
            {},
            driver.news("Network", { stateDir, name: "lan", subnet: "10.55.0.0/24" }),
        );
        expect(checked.failures).toEqual([]);
        const made = await driver.plugin.create(urn, checked.inputs);
        const outs = made.properties as unknown as {
            pid: number;
            subnet: string;
            switchDir: string;
            networkDir: string;
        };
        started.push(outs.pid);
        expect(made.id).toMatch(/^lan-/);
        expect(outs.subnet).toBe("10.55.0.0/24");
        expect(isRunning(outs.pid)).toBe(true);
        expect(existsSync(path.join(outs.switchDir, "ctl"))).toBe(true);

        const same = await driver.plugin.check(
            urn,
            checked.inputs,
            driver.news("Network", { stateDir, name: "lan", subnet: "10.55.0.0/24" }),
        );
        expect(await driver.plugin.diff(made.id, urn, made.properties, same.inputs, checked.inputs)).toEqual({
            changes: DIFF_NONE,
            replaces: [],
            deleteBeforeReplace: false,
        });
        const moved = await driver.plugin.check(
            urn,
            checked.inputs,
            driver.news("Network", { stateDir, name: "lan", subnet: "10.56.0.0/24" }),
        );
        expect(await driver.plugin.diff(made.id, urn, made.properties, moved.inputs, checked.inputs)).toEqual({
            changes: DIFF_SOME,
            replaces: ["subnet"],
            deleteBeforeReplace: true,
        });

        const live = await driver.plugin.read(made.id, urn, made.properties, checked.inputs);
        expect(live.id).toBe(made.id);
        expect(live.properties).toMatchObject({ pid: outs.pid, subnet: "10.55.0.0/24" });

        process.kill(outs.pid, "SIGKILL");
        const until = Date.now() + 5000;
        while (isRunning(outs.pid) && Date.now() < until) await new Promise((r) => setTimeout(r, 50));
        expect((await driver.plugin.read(made.id, urn, made.properties, checked.inputs)).id).toBe("");

        await driver.plugin.delete(made.id, urn, made.properties as Props, checked.inputs);
        expect(existsSync(outs.networkDir)).toBe(false);
        expect(driver.engine.errors()).toEqual([]);
    }, 120_000);
});
