import { argvHash, canonicalJson, hashValue, sha256Hex } from "../../provider/core/hash";
import { execFileSync } from "node:child_process";

describe("hashing of values", () => {
    test("sha256Hex matches coreutils sha256sum", () => {
        const text = "pulumi-qemu ✓\n";
        const expected = execFileSync("sha256sum", { input: Buffer.from(text, "utf8") })
            .toString()
            .split(" ")[0];
        expect(sha256Hex(text)).toBe(expected);
    });

    test("key order does not change the hash, values do", () => {
        expect(hashValue({ a: 1, b: { c: [1, 2], d: "x" } })).toBe(hashValue({ b: { d: "x", c: [1, 2] }, a: 1 }));
        expect(hashValue({ a: 1 })).not.toBe(hashValue({ a: 2 }));
        expect(canonicalJson({ b: undefined, a: [undefined] })).toBe('{"a":[null]}');
    });

    test("argvHash separates argument boundaries", () => {
        expect(argvHash(["a b"])).not.toBe(argvHash(["a", "b"]));
        expect(argvHash(["-m", "256"])).toMatch(/^[0-9a-f]{64}$/);
        expect(argvHash(["-m", "256"])).toBe(argvHash(["-m", "256"]));
    });

    test("non-finite numbers are refused rather than hashed as null", () => {
        expect(() => hashValue({ size: NaN })).toThrow(/no JSON form/);
    });
});
