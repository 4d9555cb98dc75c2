import { randomBytes } from "node:crypto";
import {
    encodeRequestHead,
    ReplyParser,
    shellQuote,
    shellScript,
    type ReplyHeader,
} from "../../provider/core/shellFraming";

const NONCE = "0123456789abcdef0123456789abcdef";
const OTHER = "ffffffffffffffffffffffffffffffff";

function reply(nonce: string, status: string, code: number, out: Buffer, err: Buffer): Buffer {
    return Buffer.concat([
        Buffer.from(`PQSH1 ACK ${nonce}\nPQSH1 RET ${nonce} ${status} ${code} ${out.length} ${err.length}\n`),
        out,
        err,
        Buffer.from(`PQSH1 END ${nonce}\n`),
    ]);
}

function parseAll(nonce: string, chunks: Buffer[]) {
    const got = {
        header: undefined as ReplyHeader | undefined,
        out: [] as Buffer[],
        err: [] as Buffer[],
        done: false,
        acks: 0,
    };
    const p = new ReplyParser(nonce, {
        ack: () => got.acks++,
        header: (h) => (got.header = h),
        stdout: (c) => got.out.push(Buffer.from(c)),
        stderr: (c) => got.err.push(Buffer.from(c)),
        done: () => (got.done = true),
    });
    for (const c of chunks) p.feed(c);
    return { ...got, stdout: Buffer.concat(got.out), stderr: Buffer.concat(got.err), discarded: p.discarded };
}

/** Splits into chunks at random places, including 1-byte ones. */
function randomChunks(buf: Buffer): Buffer[] {
    const out: Buffer[] = [];
    for (let at = 0; at < buf.length;) {
        const n = 1 + Math.floor(Math.random() * Math.min(97, buf.length - at));
        out.push(buf.subarray(at, at + n));
        at += n;
    }
    return out;
}

describe("request", () => {
    test("header line, then the script; lengths count bytes", () => {
        const script = shellScript("printf 'é'");
        const head = encodeRequestHead({ nonce: NONCE, script, stdinBytes: 5, timeoutSeconds: 7 });
        expect(head.toString("utf8")).toBe(`\nPQSH1 ${NONCE} ${script.length} 5 7\nprintf 'é'\n`);
    });

    test("bad nonce or counts are refused", () => {
        expect(() =>
            encodeRequestHead({ nonce: "x", script: Buffer.alloc(0), stdinBytes: 0, timeoutSeconds: 1 }),
        ).toThrow(/nonce/);
        expect(() =>
            encodeRequestHead({ nonce: NONCE, script: Buffer.alloc(0), stdinBytes: -1, timeoutSeconds: 1 }),
        ).toThrow(/stdinBytes/);
        expect(() =>
            encodeRequestHead({ nonce: NONCE, script: Buffer.alloc(0), stdinBytes: 0, timeoutSeconds: 1.5 }),
        ).toThrow(/timeoutSeconds/);
    });

    test("environment becomes quoted exports; names and NULs are checked", () => {
        expect(shellScript("env", { A: "it's $HOME\n`x`" }).toString()).toBe(`export A='it'\\''s $HOME\n\`x\`'\nenv\n`);
        expect(() => shellScript("env", { "1A": "x" })).toThrow(/env: "1A" is not a valid/);
        expect(() => shellScript("env", { A: "a\0b" })).toThrow(/env\.A.*NUL/);
        expect(() => shellScript("echo \0")).toThrow(/command.*NUL.*stdin/);
        expect(shellQuote("")).toBe("''");
    });
});

describe("ReplyParser", () => {
    test("binary stdout and stderr apart, in any chunking", () => {
        const out = randomBytes(100_000);
        const err = Buffer.from("warn\0\n'\"");
        for (let i = 0; i < 20; i++) {
            const r = parseAll(NONCE, randomChunks(reply(NONCE, "exited", 255, out, err)));
            expect(r.done).toBe(true);
            expect(r.header).toEqual({
                status: "exited",
                exitCode: 255,
                stdoutBytes: out.length,
                stderrBytes: err.length,
            });
            expect(r.stdout.equals(out)).toBe(true);
            expect(r.stderr.equals(err)).toBe(true);
        }
    });

    test("everything before our nonce's ACK is discarded, including a whole stale reply", () => {
        const stale = reply(OTHER, "exited", 0, Buffer.from(`PQSH1 ACK ${NONCE.slice(0, 20)}`), Buffer.alloc(0));
        const noise = Buffer.from("boot noise\n\x00\xff");
        const ours = reply(NONCE, "timeout", 137, Buffer.alloc(0), Buffer.alloc(0));
        const r = parseAll(NONCE, randomChunks(Buffer.concat([noise, stale, ours])));
        expect(r.acks).toBe(1);
        expect(r.done).toBe(true);
        expect(r.header?.status).toBe("timeout");
        expect(r.discarded).toBe(noise.length + stale.length);
    });

    test("no reply yet is not done; a wrong header or trailer is an error", () => {
        expect(parseAll(NONCE, [Buffer.from(`PQSH1 ACK ${NONCE}\nPQSH1 RET`)]).done).toBe(false);
        expect(() => parseAll(NONCE, [Buffer.from(`PQSH1 ACK ${NONCE}\nPQSH1 RET ${OTHER} exited 0 0 0\n`)])).toThrow(
            /malformed reply header/,
        );
        expect(() =>
            parseAll(NONCE, [
                Buffer.from(`PQSH1 ACK ${NONCE}\nPQSH1 RET ${NONCE} exited 0 1 0\nxyPQSH1 END ${NONCE}\n`),
            ]),
        ).toThrow(/trailer/);
    });
});
