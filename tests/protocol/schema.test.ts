import { startEngineServer, type EngineServer } from "../engine/engineServer";
import { assertBuilt } from "../engine/driver";
import { startQemuPlugin, type PluginClient } from "../engine/plugin";
import { danglingNames, metaschemaErrors, undocumented } from "../engine/schemaDocs";

/** Our plugin's GetSchema: what Python, Go, .NET and YAML SDKs are generated from. */

let engine: EngineServer;
let plugin: PluginClient;

beforeAll(async () => {
    assertBuilt();
    engine = await startEngineServer();
    plugin = await startQemuPlugin(engine.address);
});

afterAll(async () => {
    await plugin?.close();
    await engine?.close();
});

const EXPECTED: Record<string, { inputs: string[]; outputs: string[] }> = {
    "qemu:index:DiskImage": {
        inputs: ["path", "stateDir", "source"],
        outputs: ["path", "format", "virtualSizeBytes", "inputHash", "backingPath"],
    },
    "qemu:index:RunScript": { inputs: ["vm", "path", "stateDir"], outputs: ["path", "argv", "argvHash"] },
    "qemu:index:VirtualMachine": {
        inputs: ["vm", "ready", "stateDir", "warmStart"],
        outputs: [
            "pid",
            "qmpSocket",
            "serialLog",
            "launcherPath",
            "argvHash",
            "status",
            "accel",
            "startedAt",
            "nics",
            "hosts",
            "networkDrift",
            "ports",
            "endpoints",
            "start",
            "startNote",
        ],
    },
    "qemu:index:Network": {
        inputs: ["name", "subnet", "stateDir"],
        outputs: ["subnet", "netmask", "switchDir", "switchIdentity"],
    },
    "qemu:index:GuestCommand": {
        inputs: [
            "vm",
            "stateDir",
            "create",
            "update",
            "delete",
            "check",
            "environment",
            "stdin",
            "triggers",
            "timeoutSeconds",
        ],
        outputs: ["stdout", "stderr", "exitCode", "vmIdentity", "vmTarget"],
    },
};

test("lists the resource tokens with their input and output properties", async () => {
    const schema = JSON.parse(await plugin.getSchema());
    expect(schema.name).toBe("qemu");
    expect(Object.keys(schema.resources).sort()).toEqual(Object.keys(EXPECTED).sort());
    for (const [token, { inputs, outputs }] of Object.entries(EXPECTED)) {
        const r = schema.resources[token];
        expect(Object.keys(r.inputProperties)).toEqual(expect.arrayContaining(inputs));
        expect(Object.keys(r.properties)).toEqual(expect.arrayContaining(outputs));
    }
    // Every $ref must point at a type the schema defines, or code generation fails.
    const refs = [...JSON.stringify(schema).matchAll(/"\$ref":"#\/types\/([^"]+)"/g)].map((m) => m[1]);
    expect(refs.length).toBeGreaterThan(0);
    for (const ref of refs) expect(Object.keys(schema.types)).toContain(ref);
    expect(engine.errors()).toEqual([]);
});

test("the version in the schema is the package's", async () => {
    const schema = JSON.parse(await plugin.getSchema());
    expect(schema.version).toBe(require("../../package.json").version);
});

test("the served schema documents every property and validates against the package metaschema", async () => {
    const schema = JSON.parse(await plugin.getSchema());
    expect(undocumented(schema)).toEqual([]);
    expect(metaschemaErrors(schema)).toEqual([]);
    expect(danglingNames(schema)).toEqual([]);
    expect(schema.resources["qemu:index:VirtualMachine"].properties.nics.items.$ref).toBe("#/types/qemu:index:Nic");
});
