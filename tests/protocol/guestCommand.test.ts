import { mkdtemp, rm } from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import { openDriver, type Driver, type PluginKind } from "../engine/driver";
import { forProvider, fromProvider, isSecret, makeSecret, type Props } from "../engine/wire";
import * as vmResource from "../../provider/resources/virtualMachine";
import type { VirtualMachineOutputs } from "../../provider/resources/virtualMachine";
import { attach } from "../../sdk/testing";
import { ensureTestGuest, guestKernelArguments, READY_MARKER } from "../guest/testGuest";

/**
 * GuestCommand over gRPC through both plugins, against a real guest with the shell agent:
 * create with a secret environment value, a no-op diff, refresh with a failing check (drift),
 * the diff that follows, and delete running `delete` in the guest. Through our plugin the
 * output of a command given a secret comes back secret.
 */

const DIFF_NONE = 1;
const DIFF_SOME = 2;

describe.each<PluginKind>(["qemu", "dynamic"])("GuestCommand through the %s plugin", (kind) => {
    let driver: Driver;
    let dir: string;
    let vm: VirtualMachineOutputs;
    let vmId: string;

    beforeAll(async () => {
        const guest = await ensureTestGuest();
        dir = await mkdtemp(path.join(os.tmpdir(), `pq-pgc-${kind[0]}-`));
        const spec = {
            name: `pgc-${kind}`,
            accel: "tcg",
            agent: "shell",
            network: "none",
            kernel: guest.kernel,
            initrd: guest.initrd,
            kernelArguments: guestKernelArguments({ name: "pgc" }),
        };
        const madeVm = await vmResource.create({
            vm: spec,
            ready: { serialPattern: READY_MARKER, timeoutSeconds: 120 },
            stateDir: path.join(dir, "s"),
        });
        vm = madeVm.outs as VirtualMachineOutputs;
        vmId = madeVm.id as string;
        driver = await openDriver(kind);
    }, 300_000);

    afterAll(async () => {
        await driver?.close();
        if (vm) await vmResource.remove("", vm);
        if (dir) await rm(dir, { recursive: true, force: true });
    }, 60_000);

    test("create with a secret, no-op diff, failing check is drift, delete runs in the guest", async () => {
        const urn = driver.urn("GuestCommand", "step");
        const news: Props = driver.news("GuestCommand", {
            vm: vm as unknown as Props,
            create: "echo configured-$TOKEN > /tmp/step; echo done",
            delete: "rm /tmp/step",
            check: "test -f /tmp/step",
            environment: { TOKEN: makeSecret("tok123") },
        });
        const sent = forProvider(driver.acceptSecrets, news);
        const checked = await driver.plugin.check(urn, {}, sent);
        expect(checked.failures).toEqual([]);
        const inputs = fromProvider(driver.acceptSecrets, checked.inputs, news);

        const made = await driver.plugin.create(urn, forProvider(driver.acceptSecrets, inputs));
        const outs = fromProvider(driver.acceptSecrets, made.properties, inputs);
        const machine = attach(vm);
        try {
            expect(await machine.succeed("cat /tmp/step")).toBe("configured-tok123\n");
            // The machine stays attached while the plugin refreshes below: its idle connection must not block it.
            expect(isSecret((outs.environment as Props).TOKEN)).toBe(true);
            const stdout = isSecret(outs.stdout) ? (outs.stdout as { value: unknown }).value : outs.stdout;
            expect(stdout).toBe("done\n");
            // Our plugin knows the command had a secret; the dynamic one cannot mark outputs.
            if (kind === "qemu") expect(isSecret(outs.stdout)).toBe(true);
            expect(outs.exitCode).toBe(0);

            const again = await driver.plugin.check(urn, inputs, sent);
            const noop = await driver.plugin.diff(
                made.id,
                urn,
                forProvider(driver.acceptSecrets, outs),
                again.inputs,
                forProvider(driver.acceptSecrets, inputs),
            );
            expect(noop.changes).toBe(DIFF_NONE);

            await machine.succeed("rm /tmp/step");
            const read = await driver.plugin.read(
                made.id,
                urn,
                forProvider(driver.acceptSecrets, outs),
                forProvider(driver.acceptSecrets, inputs),
            );
            expect(read.id).toBe(made.id);
            expect(read.properties.drift).toMatch(/check exited 1/);
            const drifted = await driver.plugin.diff(
                made.id,
                urn,
                read.properties,
                again.inputs,
                forProvider(driver.acceptSecrets, inputs),
            );
            expect(drifted.changes).toBe(DIFF_SOME);

            const updated = await driver.plugin.update(
                made.id,
                urn,
                read.properties,
                again.inputs,
                forProvider(driver.acceptSecrets, inputs),
            );
            expect(updated.properties.drift).toBeUndefined();
            expect(await machine.succeed("cat /tmp/step")).toBe("configured-tok123\n");

            await driver.plugin.delete(made.id, urn, updated.properties, forProvider(driver.acceptSecrets, inputs));
            expect(await machine.succeed("test -e /tmp/step || echo removed")).toBe("removed\n");
            expect(driver.engine.errors()).toEqual([]);
        } finally {
            machine.close();
        }
    }, 120_000);

    test("vm given by id (with stateDir): create, refresh and delete reach the same guest", async () => {
        const urn = driver.urn("GuestCommand", "by-id");
        const news: Props = driver.news("GuestCommand", {
            vm: vmId,
            stateDir: path.join(dir, "s"),
            create: "echo by-id > /tmp/by-id",
            delete: "rm /tmp/by-id",
            check: "test -f /tmp/by-id",
        });
        const checked = await driver.plugin.check(urn, {}, forProvider(driver.acceptSecrets, news));
        expect(checked.failures).toEqual([]);
        const made = await driver.plugin.create(urn, checked.inputs);
        expect((made.properties.vmTarget as Props).pid).toBe(vm.pid);
        const machine = attach(vm);
        try {
            expect(await machine.succeed("cat /tmp/by-id")).toBe("by-id\n");
            const read = await driver.plugin.read(made.id, urn, made.properties, checked.inputs);
            expect(read.id).toBe(made.id);
            expect(read.properties.drift).toBeUndefined();
            await driver.plugin.delete(made.id, urn, made.properties, checked.inputs);
            expect(await machine.succeed("test -e /tmp/by-id || echo removed")).toBe("removed\n");
            const bad = await driver.plugin.check(
                urn,
                {},
                forProvider(driver.acceptSecrets, driver.news("GuestCommand", { vm: "../etc", create: "true" })),
            );
            expect(bad.failures.map((f: { property: string }) => f.property)).toContain("vm");
            expect(driver.engine.errors()).toEqual([]);
        } finally {
            machine.close();
        }
    }, 120_000);
});
