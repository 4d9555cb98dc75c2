import * as YAML from "yaml";
import {
    MAX_SEED_BYTES,
    renderYaml,
    yamlMappingProblem,
    type CloudInitSourceSpec,
} from "../../provider/core/cloudInitSeed";
import { imageFormat, imageInputHash, parseDiskImageSpec } from "../../provider/resources/diskImage/spec";
import { InputError } from "../../provider/core/validation";

function seed(source: Record<string, unknown>): CloudInitSourceSpec {
    const spec = parseDiskImageSpec({ source: { kind: "cloudInit", ...source } }).source;
    if (spec.kind !== "cloudInit") throw new Error("not a seed");
    return spec;
}

function file(spec: CloudInitSourceSpec, name: string): string | undefined {
    return spec.files.find((f) => f.name === name)?.text;
}

function hashOf(source: Record<string, unknown>): string {
    const spec = seed(source);
    return imageInputHash(spec, { kind: "cloudInit" });
}

function problems(source: unknown): { property: string; reason: string }[] {
    try {
        parseDiskImageSpec({ source: { kind: "cloudInit", ...(source as object) } });
    } catch (err) {
        if (err instanceof InputError) return err.problems;
        throw err;
    }
    throw new Error(`expected ${JSON.stringify(source)} to be refused`);
}

describe("cloud-init seeds: rendering", () => {
    test("an object becomes #cloud-config YAML with sorted keys; lists keep their order", () => {
        const s = seed({ userData: { runcmd: ["b", "a"], hostname: "web", users: [{ name: "u", groups: "sudo" }] } });
        const text = file(s, "user-data")!;
        expect(text.startsWith("#cloud-config\n")).toBe(true);
        expect(YAML.parse(text)).toEqual({
            hostname: "web",
            runcmd: ["b", "a"],
            users: [{ name: "u", groups: "sudo" }],
        });
        expect(text.indexOf("hostname:")).toBeLessThan(text.indexOf("runcmd:"));
        expect(s.format).toBe("iso");
        expect(imageFormat(s)).toBe("raw");
        expect(s.files.map((f) => f.name)).toEqual(["meta-data", "user-data"]);
    });

    test("key order in the inputs does not change the bytes or the hash (the engine does not keep it)", () => {
        const a = seed({ userData: { a: 1, b: { x: 1, y: 2 } }, metaData: { "local-hostname": "h", zone: "z" } });
        const b = seed({ metaData: { zone: "z", "local-hostname": "h" }, userData: { b: { y: 2, x: 1 }, a: 1 } });
        expect(a.files).toEqual(b.files);
        expect(imageInputHash(a, { kind: "cloudInit" })).toBe(imageInputHash(b, { kind: "cloudInit" }));
    });

    test("a string is kept byte for byte, scripts included", () => {
        const script = "#!/bin/sh\necho hi > /tmp/x\n";
        expect(file(seed({ userData: script }), "user-data")).toBe(script);
        const config = "#cloud-config\nhostname: a\n";
        expect(file(seed({ userData: config }), "user-data")).toBe(config);
    });

    test("multi-line strings in an object render as YAML that reads back the same", () => {
        const content = "line 1\n  indented: not a key\n# not a comment\n";
        const s = seed({ userData: { write_files: [{ path: "/etc/motd", content }] } });
        expect(YAML.parse(file(s, "user-data")!).write_files[0].content).toBe(content);
    });

    test("instance-id defaults to one derived from the content; changing anything changes it", () => {
        const a = seed({ userData: { hostname: "a" } });
        const b = seed({ userData: { hostname: "b" } });
        expect(a.instanceId).toMatch(/^iid-[0-9a-f]{20}$/);
        expect(YAML.parse(file(a, "meta-data")!)).toEqual({ "instance-id": a.instanceId });
        expect(b.instanceId).not.toBe(a.instanceId);
        expect(seed({ userData: { hostname: "a" }, metaData: { "local-hostname": "x" } }).instanceId).not.toBe(
            a.instanceId,
        );
        expect(seed({ userData: { hostname: "a" }, format: "vfat" }).instanceId).not.toBe(a.instanceId);
        expect(seed({ userData: { hostname: "a" } }).instanceId).toBe(a.instanceId);
    });

    test("an explicit instance-id and local-hostname are written as given", () => {
        const s = seed({
            userData: "#cloud-config\n{}\n",
            metaData: { "instance-id": "i-1", "local-hostname": "web-1" },
        });
        expect(s.instanceId).toBe("i-1");
        expect(YAML.parse(file(s, "meta-data")!)).toEqual({ "instance-id": "i-1", "local-hostname": "web-1" });
    });

    test("network-config and vendor-data appear only when given", () => {
        const net = { version: 2, ethernets: { eth0: { dhcp4: true } } };
        const s = seed({ userData: {}, networkConfig: net, vendorData: { packages: [] } });
        expect(s.files.map((f) => f.name)).toEqual(["meta-data", "network-config", "user-data", "vendor-data"]);
        expect(YAML.parse(file(s, "network-config")!)).toEqual(net);
        expect(file(s, "vendor-data")!.startsWith("#cloud-config\n")).toBe(true);
        expect(seed({ userData: {}, networkConfig: { network: { version: 2 } } }).files.map((f) => f.name)).toContain(
            "network-config",
        );
    });

    test("renderYaml quotes what YAML 1.1 would otherwise read as booleans", () => {
        expect(YAML.parse(renderYaml({ a: "yes", b: "on", c: "no" }), { version: "1.1" })).toEqual({
            a: "yes",
            b: "on",
            c: "no",
        });
    });
});

describe("cloud-init seeds: identity", () => {
    test("changed user data gives a new inputHash; the same gives the same", () => {
        expect(hashOf({ userData: { hostname: "a" } })).toBe(hashOf({ userData: { hostname: "a" } }));
        expect(hashOf({ userData: { hostname: "a" } })).not.toBe(hashOf({ userData: { hostname: "b" } }));
        expect(hashOf({ userData: "x" })).not.toBe(hashOf({ userData: "x", format: "vfat" }));
    });

    test("moving text from one file to another cannot collide (fields are framed, not concatenated)", () => {
        const a = hashOf({ userData: "#!/bin/sh\nab", vendorData: "c", metaData: { "instance-id": "i" } });
        const b = hashOf({ userData: "#!/bin/sh\na", vendorData: "bc", metaData: { "instance-id": "i" } });
        expect(a).not.toBe(b);
    });

    test("user data does not appear in the inputHash's preimage in the clear", () => {
        const s = seed({ userData: { chpasswd: { list: "root:SECRET-PASSWORD" } } });
        const pre = JSON.stringify(
            (
                require("../../provider/core/cloudInitSeed") as typeof import("../../provider/core/cloudInitSeed")
            ).seedSpecForHash(s),
        );
        expect(pre).not.toContain("SECRET-PASSWORD");
    });
});

describe("cloud-init seeds: bad input", () => {
    test("user data that is neither a string nor an object is refused by field", () => {
        for (const userData of [42, ["a"], null, true]) {
            const p = problems({ userData });
            expect(p[0].property).toBe("source.userData");
            expect(p[0].reason).toMatch(/must be a string .* or an object/);
        }
        expect(problems({})[0].property).toBe("source.userData");
    });

    test("a #cloud-config that is not valid YAML is refused, by line and column, without its text", () => {
        const p = problems({ userData: "#cloud-config\npassword: SECRET-1\n  bad: [unclosed\n" });
        expect(p).toHaveLength(1);
        expect(p[0].property).toBe("source.userData");
        expect(p[0].reason).toMatch(/is not valid YAML \([A-Z_]+ at line \d+, column \d+\)/);
        expect(p[0].reason).not.toContain("SECRET-1");
        expect(problems({ userData: "#cloud-config\n- a\n- b\n" })[0].reason).toMatch(/not a mapping/);
        expect(problems({ userData: "#cloud-config\na: 1\na: 2\n" })[0].reason).toMatch(/DUPLICATE_KEY/);
        expect(yamlMappingProblem("#cloud-config\n")).toBeUndefined();
    });

    test("metaData: a non-string instance-id or a bad host name is refused by field", () => {
        expect(problems({ userData: "", metaData: { "instance-id": 7 } })).toEqual([
            { property: "source.metaData.instance-id", reason: "metaData.instance-id must be a string (got 7)" },
        ]);
        expect(problems({ userData: "", metaData: { "local-hostname": "-bad" } })[0].property).toBe(
            "source.metaData.local-hostname",
        );
        expect(problems({ userData: "", metaData: "x" })[0].property).toBe("source.metaData");
    });

    test("networkConfig must be version 2; format iso or vfat; unknown keys refused", () => {
        expect(problems({ userData: "", networkConfig: { version: 1, config: [] } })[0]).toMatchObject({
            property: "source.networkConfig",
        });
        expect(problems({ userData: "", format: "udf" })[0]).toMatchObject({
            property: "source.format",
            reason: expect.stringMatching(/"iso".*"vfat"/),
        });
        expect(problems({ userData: "", userdata: "" })[0].reason).toMatch(/userdata/);
    });

    test("a seed over 1 MiB is refused, saying how big it is and not what it holds", () => {
        const big = "#!/bin/sh\n" + "x".repeat(MAX_SEED_BYTES);
        const p = problems({ userData: big });
        expect(p[0].property).toBe("source.userData");
        expect(p[0].reason).toMatch(/add up to \d+ bytes, more than the 1048576-byte \(1 MiB\) limit/);
        expect(p[0].reason).not.toContain("xxxx");
        // Just under the limit is fine.
        expect(() =>
            seed({ userData: "x".repeat(MAX_SEED_BYTES - 100), metaData: { "instance-id": "i" } }),
        ).not.toThrow();
    });
});
