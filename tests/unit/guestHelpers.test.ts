import { inflateSync } from "node:zlib";
import { listeningTcpPorts } from "../../provider/core/procNet";
import { crc32, parsePpm, ppmToPng } from "../../provider/core/ppmToPng";

test("listening ports from /proc/net/tcp and tcp6; other states and the header are ignored", () => {
    const text = [
        "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode",
        "   0: 00000000:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0000000000000000 100 0 0 10 0",
        "   1: 0100007F:1F90 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 2 1 0000000000000000 100 0 0 10 0",
        "  sl  local_address                         remote_address                        st",
        "   0: 00000000000000000000000000000000:0016 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0",
    ].join("\n");
    expect([...listeningTcpPorts(text)].sort()).toEqual([22, 80]);
});

test("PPM to PNG keeps size and pixels", () => {
    const rgb = Buffer.from([255, 0, 0, 0, 255, 0, 0, 0, 255, 1, 2, 3]);
    const ppm = Buffer.concat([Buffer.from("P6\n# qemu\n2 2\n255\n"), rgb]);
    expect(parsePpm(ppm)).toEqual({ width: 2, height: 2, rgb });
    const png = ppmToPng(ppm);
    expect(png.subarray(0, 8)).toEqual(Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]));
    expect(png.readUInt32BE(16)).toBe(2);
    expect(png.readUInt32BE(20)).toBe(2);
    const idatLen = png.readUInt32BE(33);
    expect(png.subarray(37, 41).toString()).toBe("IDAT");
    expect(inflateSync(png.subarray(41, 41 + idatLen))).toEqual(
        Buffer.from([0, 255, 0, 0, 0, 255, 0, 0, 0, 0, 255, 1, 2, 3]),
    );
    expect(crc32(Buffer.from("123456789"))).toBe(0xcbf43926);
    expect(() => parsePpm(Buffer.from("P3\n1 1\n255\n"))).toThrow(/P6/);
    expect(() => parsePpm(Buffer.from("P6\n2 2\n255\nabc"))).toThrow(/truncated/);
});
