import { backingName, parseQcow2Header, QCOW2_MAGIC } from "../../provider/core/qcow2Header";

/** Headers laid out by hand from QEMU's qcow2 spec; real qemu-img images are in tests/integration/imageHeader.test.ts. */
function header(fields: {
    magic?: number;
    version?: number;
    backingOffset?: bigint;
    backingSize?: number;
    size?: bigint;
}): Uint8Array {
    const b = new Uint8Array(104);
    const v = new DataView(b.buffer);
    v.setUint32(0, fields.magic ?? QCOW2_MAGIC);
    v.setUint32(4, fields.version ?? 3);
    v.setBigUint64(8, fields.backingOffset ?? 0n);
    v.setUint32(16, fields.backingSize ?? 0);
    v.setUint32(20, 16);
    v.setBigUint64(24, fields.size ?? 0n);
    return b;
}

describe("parseQcow2Header", () => {
    test("reads version, virtual size and where the backing name is", () => {
        expect(parseQcow2Header(header({ size: 100_000_256n, backingOffset: 0x210n, backingSize: 15 }))).toEqual({
            version: 3,
            virtualSize: 100_000_256,
            backingFileOffset: 0x210,
            backingFileSize: 15,
            metadataEnd: 0, // no tables laid out in this hand-made header
        });
        expect(parseQcow2Header(header({ version: 2, size: 3n << 30n }))).toEqual({
            version: 2,
            virtualSize: 3 * 2 ** 30,
            backingFileOffset: 0,
            backingFileSize: 0,
            metadataEnd: 0,
        });
    });

    test.each([
        ["another magic", header({ magic: 0x7f454c46 }), /magic 0x7f454c46/],
        ["version 1", header({ version: 1 }), /version 1/],
        [
            "a backing name longer than the spec allows",
            header({ backingOffset: 512n, backingSize: 1024 }),
            /backing_file_size 1024/,
        ],
        ["a backing offset without a size", header({ backingOffset: 512n }), /backing_file_offset 512 with size 0/],
        ["a size past 2^53", header({ size: 1n << 60n }), /size 1152921504606846976/],
        ["a file shorter than the fields", header({}).subarray(0, 20), /only 20 bytes/],
    ])("refuses %s", (_what, bytes, message) => {
        expect(() => parseQcow2Header(bytes)).toThrow(message);
    });
});

describe("backingName", () => {
    const h = parseQcow2Header(header({ backingOffset: 512n, backingSize: 9 }));

    test("is the UTF-8 text of exactly backing_file_size bytes", () => {
        expect(backingName(h, new TextEncoder().encode("/a b,c/éxtra bytes after"))).toBe("/a b,c/é");
    });

    test("is undefined without a backing file, and refuses a cut-short name", () => {
        expect(backingName(parseQcow2Header(header({})), new Uint8Array())).toBeUndefined();
        expect(() => backingName(h, new TextEncoder().encode("/a b"))).toThrow(/cut short \(4 of 9 bytes\)/);
    });
});

describe("metadataEnd", () => {
    test("is where the L1 and refcount tables end, whichever is later", () => {
        const b = header({ size: 8n << 20n });
        const v = new DataView(b.buffer);
        v.setUint32(36, 1); // l1_size: one entry
        v.setBigUint64(40, 0x30000n); // l1_table_offset
        v.setBigUint64(48, 0x10000n); // refcount_table_offset
        v.setUint32(56, 1); // refcount_table_clusters, of 2^16 bytes
        expect(parseQcow2Header(b).metadataEnd).toBe(0x30008);
        expect(parseQcow2Header(b.subarray(0, 32)).metadataEnd).toBeUndefined();
    });
});
