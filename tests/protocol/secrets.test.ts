import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import { openDriver, type Driver, type PluginKind } from "../engine/driver";
import { forProvider, fromProvider, isSecret, makeSecret, type Props } from "../engine/wire";

/**
 * A secret input through each plugin, with the engine's handling of secrets in between: a
 * plugin that answered acceptSecrets=false (the dynamic one) receives plain values and the engine
 * re-marks outputs named like secret inputs; one that accepts secrets receives and must return
 * them tagged. Either way the value must reach the provider and stay secret in the state.
 */

describe.each<PluginKind>(["dynamic", "qemu"])("a secret input through the %s plugin", (kind) => {
    let driver: Driver;
    let dir: string;

    beforeAll(async () => {
        dir = await mkdtemp(path.join(os.tmpdir(), `pq-proto-secret-${kind}-`));
        driver = await openDriver(kind);
        console.log(`${kind} plugin: Configure answered acceptSecrets=${driver.acceptSecrets}`);
    }, 60_000);

    afterAll(async () => {
        await driver?.close();
        if (dir) await rm(dir, { recursive: true, force: true });
    });

    test("a secret path and a secret VM name are used, and stay secret in the outputs", async () => {
        const urn = driver.urn("RunScript", "secret");
        const launcher = path.join(dir, "run-secret.sh");
        const news: Props = driver.news("RunScript", {
            path: makeSecret(launcher),
            vm: {
                name: makeSecret("hidden-name"),
                accel: "tcg",
                kernel: "/boot/vmlinuz",
                kernelArguments: ["console=ttyS0"],
            },
        });
        const sent = forProvider(driver.acceptSecrets, news);
        const checked = await driver.plugin.check(urn, {}, sent);
        expect(checked.failures).toEqual([]);
        const inputs = fromProvider(driver.acceptSecrets, checked.inputs, news);
        expect(isSecret(inputs.path)).toBe(true);

        const made = await driver.plugin.create(urn, forProvider(driver.acceptSecrets, inputs));
        const outs = fromProvider(driver.acceptSecrets, made.properties, inputs);
        expect(await readFile(launcher, "utf8")).toContain("hidden-name");
        expect(isSecret(outs.path)).toBe(true);
        expect(isSecret((outs.vm as Props).name)).toBe(true);
        // Outputs computed from the secret under other names: only the provider could mark them.
        const argvSecret = isSecret(outs.argv);
        // Our plugin marks them; the dynamic one cannot (it refuses secrets, and the engine only
        // re-marks outputs named like a secret input) — the README says to use additionalSecretOutputs.
        if (kind === "qemu") expect(argvSecret).toBe(true);
        console.log(
            `${kind} plugin: argv (holds the secret name) comes back ${argvSecret ? "secret" : "in plain text"}; id ${made.id === launcher ? "is the secret path, in plain text" : made.id}`,
        );

        await driver.plugin.delete(
            made.id,
            urn,
            forProvider(driver.acceptSecrets, outs),
            forProvider(driver.acceptSecrets, inputs),
        );
        expect(driver.engine.errors()).toEqual([]);
    });
});

// Only a plugin that receives secrets marked can know what to hide: the dynamic one is handed
// plain values (acceptSecrets=false), so this is our plugin's promise alone (the README says so).
describe("our plugin hides secret values in check failures and errors", () => {
    let driver: Driver;
    let dir: string;

    beforeAll(async () => {
        dir = await mkdtemp(path.join(os.tmpdir(), "pq-proto-secret-errors-"));
        driver = await openDriver("qemu");
    }, 60_000);

    afterAll(async () => {
        await driver?.close();
        if (dir) await rm(dir, { recursive: true, force: true });
    });

    test("check failures and errors never show a secret value in clear", async () => {
        const urn = driver.urn("RunScript", "leaky");
        const badName = driver.news("RunScript", {
            vm: { name: makeSecret("hidden\nname-value"), kernel: "/boot/vmlinuz" },
        });
        const checked = await driver.plugin.check(urn, {}, forProvider(driver.acceptSecrets, badName));
        expect(checked.failures.map((f) => f.property)).toEqual(["vm.name"]);
        expect(JSON.stringify(checked.failures)).not.toContain("name-value");
        expect(checked.failures[0].reason).toContain("[secret]");

        const taken = path.join(dir, "users-own-file-with-a-secret-name");
        await writeFile(taken, "not a launcher");
        const inputs = driver.news("RunScript", { path: makeSecret(taken), vm: { kernel: "/boot/vmlinuz" } });
        const ok = await driver.plugin.check(urn, {}, forProvider(driver.acceptSecrets, inputs));
        expect(ok.failures).toEqual([]);
        const failed = await driver.plugin.create(urn, ok.inputs).then(
            () => "created",
            (err: Error) => err.message,
        );
        expect(failed).toMatch(/refusing to overwrite \[secret\]: it was not written by pulumi-qemu/);
        expect(failed).not.toContain("users-own-file-with-a-secret-name");
        expect(await readFile(taken, "utf8")).toBe("not a launcher");
    });
});
