import { createHash } from "node:crypto";
import { base32Lower } from "../../provider/core/base32";
import { mountTag, MAX_MOUNT_TAG_BYTES } from "../../provider/core/mountTag";

describe("base32Lower (RFC 4648, lowercase, unpadded)", () => {
    // RFC 4648 section 10 test vectors, lowercased and with the padding removed.
    test.each([
        ["", ""],
        ["f", "my"],
        ["fo", "mzxq"],
        ["foo", "mzxw6"],
        ["foob", "mzxw6yq"],
        ["fooba", "mzxw6ytb"],
        ["foobar", "mzxw6ytboi"],
    ])("%j → %j", (input, expected) => {
        expect(base32Lower(Buffer.from(input))).toBe(expected);
    });

    test("agrees with an independent bit-by-bit encoder on random bytes", () => {
        const alphabet = "abcdefghijklmnopqrstuvwxyz234567";
        for (let n = 0; n < 200; n++) {
            const bytes = createHash("sha256")
                .update(String(n))
                .digest()
                .subarray(0, n % 33);
            const bits = [...bytes].map((b) => b.toString(2).padStart(8, "0")).join("");
            const padded = bits.padEnd(Math.ceil(bits.length / 5) * 5, "0");
            let expected = "";
            for (let i = 0; i < padded.length; i += 5) expected += alphabet[parseInt(padded.slice(i, i + 5), 2)];
            expect(base32Lower(bytes)).toBe(expected);
        }
    });
});

describe("mountTag (Guix's file-system->mount-tag)", () => {
    test("is TAG + base32(sha1(path)) without its first four characters", () => {
        const path = "/home/alice/src";
        const digest = createHash("sha1").update(path, "utf8").digest();
        expect(mountTag(path)).toBe("TAG" + base32Lower(digest).slice(4));
    });

    test.each([
        // Golden values from Python: "TAG" + base64.b32encode(hashlib.sha1(p).digest()).lower().rstrip("=")[4:]
        ["/gnu/store", "TAGjoptajej2oynju6yvboauz7pl6uj"],
        ["/home/alice/src", "TAG5hdphqrn6fcj6xw32jbdga5u6biz"],
    ])("golden value for %s", (path, expected) => {
        expect(mountTag(path)).toBe(expected);
        expect(Buffer.byteLength(expected)).toBe(MAX_MOUNT_TAG_BYTES);
    });

    test("hashes the UTF-8 bytes of non-ASCII paths", () => {
        const path = "/srv/données partagées,v2";
        const digest = createHash("sha1").update(Buffer.from(path, "utf8")).digest();
        expect(mountTag(path)).toBe("TAG" + base32Lower(digest).slice(4));
        expect(mountTag(path)).not.toBe(mountTag("/srv/donnees partagees,v2"));
    });
});
