import { packageSchema } from "../../provider/plugin/schema";
import { danglingNames, metaschemaErrors, undocumented } from "../engine/schemaDocs";

/** The plugin's package schema documents itself and is well formed (in-process; tests/protocol/schema.test.ts asks the plugin). */

const schema = () => JSON.parse(packageSchema("1.2.3"));

test("every resource, input and output property, nested types included, has a description", () => {
    const s = schema();
    expect(undocumented(s)).toEqual([]);
    // The walk reaches nested types: the VM spec's fields and the NIC outputs are counted.
    expect(Object.keys(s.types["qemu:index:VmSpec"].properties).length).toBeGreaterThan(15);
    expect(s.types["qemu:index:Nic"].properties.ipv4.description).toMatch(/IPv4/);
});

test("the schema validates against the package metaschema, and names only what it defines", () => {
    const s = schema();
    expect(metaschemaErrors(s)).toEqual([]);
    expect(danglingNames(s)).toEqual([]);
});

test("the checks catch a missing description, a malformed property and a dangling name", () => {
    const s = schema();
    delete s.types["qemu:index:Ready"].properties.timeoutSeconds.description;
    s.resources["qemu:index:DiskImage"].properties.drift.description = "";
    expect(undocumented(s)).toEqual([
        "resources.qemu:index:DiskImage.properties.drift",
        "types.qemu:index:Ready.properties.timeoutSeconds",
    ]);

    const bad = schema();
    bad.resources["qemu:index:VirtualMachine"].properties.pid.type = "int"; // not a Pulumi primitive
    bad.resources["qemu:index:Network"].inputProperties.name.descripton = "typo"; // unknown key
    const errors = metaschemaErrors(bad);
    expect(errors.some((e) => e.includes("/resources/qemu:index:VirtualMachine/properties/pid"))).toBe(true);
    expect(
        errors.some(
            (e) => e.includes("/resources/qemu:index:Network/inputProperties/name") && e.includes("descripton"),
        ),
    ).toBe(true);

    const dangling = schema();
    dangling.resources["qemu:index:RunScript"].required.push("nope");
    dangling.types["qemu:index:Disk"].properties.path = { $ref: "#/types/qemu:index:Missing", description: "x y z" };
    expect(danglingNames(dangling)).toEqual([
        "resources.qemu:index:RunScript.required: nope",
        "$ref to undefined type qemu:index:Missing",
    ]);
});
