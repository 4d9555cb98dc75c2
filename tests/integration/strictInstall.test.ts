import execa from "execa";
import { readdirSync, readFileSync, realpathSync, statSync } from "node:fs";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import { startEngineServer, type EngineServer } from "../engine/engineServer";
import { MAIN_ROOT } from "../engine/paths";
import { startPlugin, type PluginClient } from "../engine/plugin";

/**
 * The packed package installed into a user's project with npm's strict layout
 * (`--install-strategy=linked`, pnpm's isolated node_modules): each package sees only what it
 * declares, so a runtime dependency that is not in package.json fails here, where a hoisted
 * install would find it by luck. Then: one copy of @pulumi/pulumi (a peer dependency, shared with
 * the program), a program that imports the package and declares resources, importing it never
 * serving the plugin, and the plugin started the way Pulumi's nodejs language host starts it.
 * Installs from npm's cache (CI's `npm ci` filled it); needs a build (`npm run build`).
 */

let dir: string;
let project: string;
let pkgDir: string;
let engine: EngineServer | undefined;
let plugin: PluginClient | undefined;

const pulumiVersion = (): string =>
    JSON.parse(readFileSync(path.join(MAIN_ROOT, "node_modules", "@pulumi", "pulumi", "package.json"), "utf8")).version;

beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), "pulumi-qemu-strict-"));
    const packed = await execa("npm", ["pack", "--json", "--ignore-scripts", "--pack-destination", dir], {
        cwd: MAIN_ROOT,
    });
    const [{ filename }] = JSON.parse(packed.stdout) as { filename: string }[];
    project = path.join(dir, "user-program");
    await mkdir(project);
    await writeFile(
        path.join(project, "package.json"),
        JSON.stringify({ name: "user-program", version: "1.0.0", private: true }),
    );
    await execa(
        "npm",
        [
            "install",
            "--install-strategy=linked",
            "--prefer-offline",
            "--no-audit",
            "--no-fund",
            "--loglevel=error",
            path.join(dir, filename),
            `@pulumi/pulumi@${pulumiVersion()}`,
        ],
        { cwd: project, env: { ...process.env, npm_config_update_notifier: "false" } },
    );
    pkgDir = realpathSync(path.join(project, "node_modules", "pulumi-qemu"));
}, 300_000);

afterAll(async () => {
    await plugin?.close();
    await engine?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
});

test("the layout is strict: pulumi-qemu sees only the packages it declares", () => {
    const declared = JSON.parse(readFileSync(path.join(pkgDir, "package.json"), "utf8"));
    const visible = readdirSync(path.dirname(pkgDir))
        .filter((n) => n !== ".bin")
        .flatMap((n) =>
            n.startsWith("@") ? readdirSync(path.join(path.dirname(pkgDir), n)).map((m) => `${n}/${m}`) : [n],
        );
    const expected = [...Object.keys(declared.dependencies), ...Object.keys(declared.peerDependencies), "pulumi-qemu"];
    expect(visible.sort()).toEqual(expected.sort());
});

test("every package the shipped code requires resolves from the file that requires it", () => {
    const unresolved: string[] = [];
    let requires = 0;
    const walk = (d: string) => {
        for (const name of readdirSync(d)) {
            const file = path.join(d, name);
            if (statSync(file).isDirectory()) walk(file);
            else if (file.endsWith(".js")) {
                for (const m of readFileSync(file, "utf8").matchAll(/require\("([^".][^"]*)"\)/g)) {
                    if (m[1].startsWith("node:")) continue;
                    requires++;
                    try {
                        require.resolve(m[1], { paths: [path.dirname(file)] });
                    } catch {
                        unresolved.push(`${path.relative(pkgDir, file)}: ${m[1]}`);
                    }
                }
            }
        }
    };
    walk(path.join(pkgDir, "bin"));
    expect(requires).toBeGreaterThan(20);
    expect(unresolved).toEqual([]);
});

test("@pulumi/pulumi is the program's own copy (a peer dependency, not a second runtime)", () => {
    const ours = realpathSync(require.resolve("@pulumi/pulumi/package.json", { paths: [pkgDir] }));
    const programs = realpathSync(require.resolve("@pulumi/pulumi/package.json", { paths: [project] }));
    expect(ours).toBe(programs);
});

test("a program imports pulumi-qemu and pulumi-qemu/testing and declares resources", async () => {
    const program = `
const pulumi = require("@pulumi/pulumi");
pulumi.runtime.setMocks({ newResource: (a) => ({ id: a.name + "-id", state: { ...a.inputs, path: "/tmp/" + a.name + ".qcow2" } }), call: (a) => a.inputs }, "proj", "stack", false);
const qemu = require("pulumi-qemu");
const { attach } = require("pulumi-qemu/testing");
const img = new qemu.DiskImage("img", { source: { kind: "blank", size: "1G", format: "qcow2" } });
img.path.apply((p) => console.log("path " + p + " attach " + typeof attach));
`;
    await writeFile(path.join(project, "program.js"), program);
    const r = await execa(process.execPath, ["program.js"], { cwd: project, timeout: 60_000 });
    expect(r.stdout).toContain("path /tmp/img.qcow2 attach function");
}, 60_000);

test("importing pulumi-qemu never serves the plugin, even inside another plugin run by run-plugin", async () => {
    // Another plugin run by Pulumi's run-plugin, which imports pulumi-qemu as a library: argv[1] is
    // run-plugin's script. It must finish loading and exit, printing no port.
    const fake = path.join(project, "cmd", "run-plugin");
    await mkdir(fake, { recursive: true });
    await writeFile(
        path.join(fake, "index.js"),
        `require("pulumi-qemu"); require("pulumi-qemu/testing"); console.log("loaded");`,
    );
    const r = await execa(process.execPath, [path.join(fake, "index.js"), "127.0.0.1:1"], {
        cwd: project,
        timeout: 15_000,
        reject: false,
    });
    expect(r.timedOut).toBe(false);
    expect(r.exitCode).toBe(0);
    expect(r.stdout.trim()).toBe("loaded");
}, 60_000);

test("Pulumi's nodejs language host starts the plugin from the package directory (run-plugin)", async () => {
    engine = await startEngineServer();
    const runPlugin = require.resolve("@pulumi/pulumi/cmd/run-plugin", { paths: [project] });
    plugin = await startPlugin("qemu", process.execPath, [runPlugin, pkgDir, engine.address], { cwd: pkgDir });
    const schema = JSON.parse(await plugin.getSchema());
    expect(Object.keys(schema.resources)).toEqual(
        expect.arrayContaining(["qemu:index:DiskImage", "qemu:index:VirtualMachine"]),
    );
    const bad = await plugin.check(
        "urn:pulumi:s::p::qemu:index:DiskImage::img",
        {},
        { source: { kind: "blank", size: "1G", format: "vmdk" } },
    );
    expect(bad.failures.map((f) => f.property)).toEqual(["source.format"]);
}, 90_000);
