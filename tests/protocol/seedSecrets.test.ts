import { mkdtemp, rm, stat } from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import { openDriver, type Driver, type PluginKind } from "../engine/driver";
import { forProvider, fromProvider, isSecret, makeSecret, type Props } from "../engine/wire";

/**
 * A cloud-init seed whose user data is a secret, through each plugin as the engine drives it:
 * the seed is made from the real value, the user data comes back secret in the outputs, and a
 * refused #cloud-config never shows its text in the check failure.
 */

const SECRET_TEXT = "root:S3cr3t-Pa55";

describe.each<PluginKind>(["dynamic", "qemu"])("a secret cloud-init seed through the %s plugin", (kind) => {
    let driver: Driver;
    let dir: string;

    beforeAll(async () => {
        dir = await mkdtemp(path.join(os.tmpdir(), `pq-proto-seed-${kind}-`));
        driver = await openDriver(kind);
    }, 60_000);

    afterAll(async () => {
        await driver?.close();
        if (dir) await rm(dir, { recursive: true, force: true });
    });

    test("secret user data makes the seed and stays secret in the outputs", async () => {
        const urn = driver.urn("DiskImage", "seed");
        const news: Props = driver.news("DiskImage", {
            stateDir: path.join(dir, "state"),
            source: {
                kind: "cloudInit",
                userData: makeSecret({ chpasswd: { list: SECRET_TEXT, expire: false } }),
                metaData: { "local-hostname": "s" },
            },
        });
        const sent = forProvider(driver.acceptSecrets, news);
        const checked = await driver.plugin.check(urn, {}, sent);
        expect(checked.failures).toEqual([]);
        const inputs = fromProvider(driver.acceptSecrets, checked.inputs, news);
        const made = await driver.plugin.create(urn, forProvider(driver.acceptSecrets, inputs));
        const outs = fromProvider(driver.acceptSecrets, made.properties, inputs);
        expect(isSecret((outs.source as Props).userData)).toBe(true);
        expect((await stat(made.id)).mode & 0o777).toBe(0o600);
        expect(made.id).not.toContain(SECRET_TEXT);
        await driver.plugin.delete(
            made.id,
            urn,
            forProvider(driver.acceptSecrets, outs),
            forProvider(driver.acceptSecrets, inputs),
        );
        expect(driver.engine.errors()).toEqual([]);
    });

    test("a bad #cloud-config is a check failure on source.userData that does not quote it", async () => {
        const urn = driver.urn("DiskImage", "bad-seed");
        const news: Props = driver.news("DiskImage", {
            stateDir: path.join(dir, "state"),
            source: { kind: "cloudInit", userData: makeSecret(`#cloud-config\nchpasswd: { list: '${SECRET_TEXT}'\n`) },
        });
        const checked = await driver.plugin.check(urn, {}, forProvider(driver.acceptSecrets, news));
        expect(checked.failures.length).toBe(1);
        expect(checked.failures[0].property).toBe("source.userData");
        expect(checked.failures[0].reason).toMatch(/not valid YAML/);
        expect(JSON.stringify(checked.failures)).not.toContain("S3cr3t");
    });
});
