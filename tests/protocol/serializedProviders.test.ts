import { execFileSync } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import { assertBuilt, MAIN_ROOT } from "../engine/driver";
import { linkPackages } from "../engine/program";
import { serializeProvider } from "../engine/serialize";

/**
 * What pulumi.dynamic.Resource stores in the stack for each resource: the serialized shim. It
 * must stay small (it is in every resource's state), name the package rather than this machine's
 * files, and work when loaded alone in a fresh process, as the plugin loads it.
 */

const SHIMS = ["diskImageProvider", "runScriptProvider", "virtualMachineProvider", "networkProvider"] as const;
const MAX_BYTES = 8 * 1024;

let texts: Record<string, string>;
let dir: string;

beforeAll(async () => {
    assertBuilt();
    const sdk = require(path.join(MAIN_ROOT, "bin", "sdk", "index.js"));
    texts = {};
    for (const name of SHIMS) texts[name] = await serializeProvider(sdk[name]);
    dir = await mkdtemp(path.join(os.tmpdir(), "pq-serialized-"));
    await linkPackages(dir);
});

afterAll(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
});

test.each(SHIMS)("%s serializes small and names the package, not this checkout", (name) => {
    const text = texts[name];
    console.log(`${name}: serialized provider is ${Buffer.byteLength(text)} bytes`);
    expect(Buffer.byteLength(text)).toBeLessThan(MAX_BYTES);
    expect(text).toContain("pulumi-qemu/bin/provider/resources/");
    expect(text).not.toContain(MAIN_ROOT);
});

test("a serialized shim runs alone in a fresh process and reaches the installed lifecycle", async () => {
    // The plugin's way of loading it: compile the text as a module whose requires resolve from the program's directory.
    await writeFile(path.join(dir, "provider.js"), texts.runScriptProvider);
    const script = `
        const provider = require("./provider.js").handler();
        const vm = { name: "fresh", accel: "tcg", kernel: "/boot/vmlinuz", kernelArguments: ["console=ttyS0"] };
        Promise.all([
            provider.check({}, { vm }),
            provider.check({}, { vm: { ...vm, memoryMiB: -1 } }),
        ]).then(([good, bad]) => console.log(JSON.stringify({ methods: Object.keys(provider).sort(), good: good.failures ?? [], bad: bad.failures ?? [] })));
    `;
    const out = execFileSync(process.execPath, ["-e", script], { cwd: dir, encoding: "utf8" });
    const result = JSON.parse(out);
    expect(result.methods).toEqual(["check", "create", "delete", "diff", "read", "update"]);
    expect(result.good).toEqual([]);
    expect(result.bad).toEqual([expect.objectContaining({ property: expect.stringContaining("memoryMiB") })]);
});
