import { formatSize, MAX_SIZE_BYTES, parseSize } from "../../provider/core/size";

const bytes = (v: unknown) => {
    const r = parseSize(v);
    if (!r.ok) throw new Error(`expected ${JSON.stringify(v)} to parse, got: ${r.reason}`);
    return r.bytes;
};
const reason = (v: unknown) => {
    const r = parseSize(v);
    if (r.ok) throw new Error(`expected ${JSON.stringify(v)} to be refused, got ${r.bytes}`);
    return r.reason;
};

describe("parseSize", () => {
    test.each([
        [512, 512],
        [100000256, 100000256],
        ["100000256", 100000256],
        ["512K", 512 * 1024],
        ["512k", 512 * 1024],
        ["512M", 512 * 1024 ** 2],
        ["512MiB", 512 * 1024 ** 2],
        ["20G", 20 * 1024 ** 3],
        ["20GiB", 20 * 1024 ** 3],
        ["2T", 2 * 1024 ** 4],
        ["1TiB", 1024 ** 4],
        ["1.5G", 1.5 * 1024 ** 3],
        ["0.5K", 512],
        [" 64M ", 64 * 1024 ** 2],
    ])("%j is %d bytes", (input, expected) => {
        expect(bytes(input)).toBe(expected);
    });

    test.each([
        ["-1G", /binary suffix/],
        [-1, /greater than 0/],
        [0, /greater than 0/],
        ["0", /greater than 0/],
        ["0G", /greater than 0/],
        ["12Q", /binary suffix/],
        ["1.1K", /not a whole number of bytes/],
        ["0.3", /not a whole number of bytes/],
        [1.5, /not a whole number of bytes/],
        [Number.NaN, /not a whole number/],
        [Number.POSITIVE_INFINITY, /not a whole number/],
        ["", /binary suffix/],
        ["G", /binary suffix/],
        ["1 G", /binary suffix/],
        ["1e9", /binary suffix/],
        ["512MB", /ambiguous/],
        ["1GB", /ambiguous/],
        ["1gib", /write "GiB"/],
        ["99999999T", /larger than the largest/],
        [MAX_SIZE_BYTES + 1, /whole number|at most/],
        [null, /binary suffix/],
        [true, /binary suffix/],
        [{}, /binary suffix/],
        // qemu-img would round these up to whole 512-byte sectors without a word.
        [1, /multiple of 512 bytes .*round 1 bytes up to 512\); write 512$/],
        [100000000, /multiple of 512 bytes .*up to 100000256\); write 100000256$/],
        ["1000", /multiple of 512 bytes.*write "1K"$/],
        ["0.25K", /multiple of 512 bytes.*write 512$/],
        [1048575, /write "1M"$/],
    ])("%j is refused", (input, message) => {
        expect(reason(input)).toMatch(message);
    });
});

describe("formatSize", () => {
    test("picks the largest binary unit", () => {
        expect(formatSize(1000)).toBe("1000 bytes");
        expect(formatSize(1536)).toBe("1.5 KiB");
        expect(formatSize(20 * 1024 ** 3)).toBe("20 GiB");
    });
});
