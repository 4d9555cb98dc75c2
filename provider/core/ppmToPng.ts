import { deflateSync } from "node:zlib";

/**
 * QMP `screendump` writes a binary PPM (P6); people and tools want PNG. The conversion is
 * a header parse and a deflate, both in memory (zlib is a pure computation here, not I/O).
 */

export interface RgbImage {
    width: number;
    height: number;
    /** width × height × 3 bytes, rows top to bottom. */
    rgb: Buffer;
}

/** Parses a binary PPM with maxval 255 (what QEMU writes). */
export function parsePpm(ppm: Buffer): RgbImage {
    let at = 0;
    const token = (): string => {
        for (;;) {
            while (at < ppm.length && /\s/.test(String.fromCharCode(ppm[at]))) at++;
            if (ppm[at] === 0x23) {
                while (at < ppm.length && ppm[at] !== 0x0a) at++;
                continue;
            }
            break;
        }
        const start = at;
        while (at < ppm.length && !/\s/.test(String.fromCharCode(ppm[at]))) at++;
        return ppm.subarray(start, at).toString("latin1");
    };
    if (token() !== "P6") throw new Error("not a binary PPM (P6) image");
    const width = Number(token());
    const height = Number(token());
    const maxval = Number(token());
    if (!(width > 0 && height > 0) || maxval !== 255)
        throw new Error(`unsupported PPM: ${width}x${height}, maxval ${maxval}`);
    at++; // the single whitespace byte after maxval
    const rgb = ppm.subarray(at, at + width * height * 3);
    if (rgb.length !== width * height * 3)
        throw new Error(`PPM is truncated: ${rgb.length} of ${width * height * 3} pixel bytes`);
    return { width, height, rgb };
}

export function encodePng(img: RgbImage): Buffer {
    const stride = img.width * 3;
    const raw = Buffer.alloc((stride + 1) * img.height);
    for (let y = 0; y < img.height; y++) {
        raw[y * (stride + 1)] = 0; // filter: none
        img.rgb.copy(raw, y * (stride + 1) + 1, y * stride, (y + 1) * stride);
    }
    const ihdr = Buffer.alloc(13);
    ihdr.writeUInt32BE(img.width, 0);
    ihdr.writeUInt32BE(img.height, 4);
    ihdr[8] = 8; // bit depth
    ihdr[9] = 2; // colour type: truecolour
    return Buffer.concat([
        Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
        chunk("IHDR", ihdr),
        chunk("IDAT", deflateSync(raw)),
        chunk("IEND", Buffer.alloc(0)),
    ]);
}

export function ppmToPng(ppm: Buffer): Buffer {
    return encodePng(parsePpm(ppm));
}

function chunk(type: string, data: Buffer): Buffer {
    const head = Buffer.alloc(8);
    head.writeUInt32BE(data.length, 0);
    head.write(type, 4, "latin1");
    const crc = Buffer.alloc(4);
    crc.writeUInt32BE(crc32(Buffer.concat([head.subarray(4), data])), 0);
    return Buffer.concat([head, data, crc]);
}

const CRC_TABLE = (() => {
    const t = new Uint32Array(256);
    for (let n = 0; n < 256; n++) {
        let c = n;
        for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
        t[n] = c >>> 0;
    }
    return t;
})();

export function crc32(buf: Buffer): number {
    let c = 0xffffffff;
    for (const b of buf) c = CRC_TABLE[(c ^ b) & 0xff] ^ (c >>> 8);
    return (c ^ 0xffffffff) >>> 0;
}
