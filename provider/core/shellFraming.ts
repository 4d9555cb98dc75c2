import { shellQuote } from "./shellQuote";
/**
 * The framing of the "shell" guest agent (provider/guest/shell-agent.sh), as pure functions and
 * a streaming parser: no I/O here.
 *
 * Host → guest, one request:
 *   "\n" "PQSH1 <nonce> <scriptBytes> <stdinBytes> <timeoutSeconds>\n" <script> <stdin>
 * The leading newline ends whatever half line a previous, abandoned request left in the guest's
 * reader; the guest ignores every line that is not a well-formed header. Payloads are raw bytes
 * counted by the header, so they may hold anything (the guest reads them with `dd`).
 *
 * Guest → host, one reply:
 *   "PQSH1 ACK <nonce>\n"                                       as soon as the header is read
 *   "PQSH1 RET <nonce> <status> <exitCode> <outBytes> <errBytes>\n" <stdout> <stderr>
 *   "PQSH1 END <nonce>\n"
 * The host throws away every byte before the ACK of the nonce it just sent: a reply to an
 * earlier request the host gave up on (or anything else on the port) can never be mistaken for
 * this one, because the nonce is fresh and random per request. That is the resynchronisation.
 */

export const SHELL_PROTOCOL = "PQSH1";
/** One request's nonce: 128 random bits in lowercase hex (the guest checks the shape). */
export const NONCE_PATTERN = /^[0-9a-f]{32}$/;
/** A header line longer than this is not ours. */
const MAX_HEADER_BYTES = 256;

export interface ShellRequest {
    nonce: string;
    /** Shell text the guest runs with `sh` (see `shellScript`). */
    script: Buffer;
    stdinBytes: number;
    /** Killed in the guest (its whole process group) after this many seconds; 0: never. */
    timeoutSeconds: number;
}

/** The bytes before the stdin payload: header line and script. The caller sends stdin after them. */
export function encodeRequestHead(req: ShellRequest): Buffer {
    if (!NONCE_PATTERN.test(req.nonce))
        throw new Error(`nonce must be 32 lowercase hex digits, got ${JSON.stringify(req.nonce)}`);
    for (const [name, n] of [
        ["stdinBytes", req.stdinBytes],
        ["timeoutSeconds", req.timeoutSeconds],
    ] as const) {
        if (!Number.isSafeInteger(n) || n < 0) throw new Error(`${name} must be a whole number ≥ 0, got ${n}`);
    }
    const header = `\n${SHELL_PROTOCOL} ${req.nonce} ${req.script.length} ${req.stdinBytes} ${req.timeoutSeconds}\n`;
    return Buffer.concat([Buffer.from(header, "latin1"), req.script]);
}

export { shellQuote };

const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

/**
 * The script the guest runs: the environment as `export` lines, then the command verbatim. A
 * shell cannot hold NUL in its text, so a command or value with one is refused (send such
 * bytes through stdin instead).
 */
export function shellScript(command: string, env: Record<string, string> = {}): Buffer {
    if (command.includes("\0"))
        throw new Error("command: a shell command cannot contain NUL bytes; pass binary data through stdin");
    const lines: string[] = [];
    for (const [name, value] of Object.entries(env)) {
        if (!ENV_NAME.test(name))
            throw new Error(
                `env: ${JSON.stringify(name)} is not a valid environment variable name (letters, digits and _, not starting with a digit)`,
            );
        if (value.includes("\0")) throw new Error(`env.${name}: a value cannot contain NUL bytes`);
        lines.push(`export ${name}=${shellQuote(value)}`);
    }
    lines.push(command);
    return Buffer.from(lines.join("\n") + "\n", "utf8");
}

export type ReplyStatus = "exited" | "timeout";

export interface ReplyHeader {
    status: ReplyStatus;
    exitCode: number;
    stdoutBytes: number;
    stderrBytes: number;
}

export interface ReplyHandlers {
    /** The guest read our header: everything before this was discarded. */
    ack?(): void;
    header(h: ReplyHeader): void;
    stdout(chunk: Buffer): void;
    stderr(chunk: Buffer): void;
    done(): void;
}

export class ShellProtocolError extends Error {
    constructor(message: string) {
        super(message);
        this.name = "ShellProtocolError";
    }
}

type State = "ack" | "header" | "stdout" | "stderr" | "trailer" | "done";

/**
 * Parses one reply as bytes arrive, in whatever chunks. Output is handed on as it comes, so a
 * caller can stream a large stdout to a file instead of holding it.
 */
export class ReplyParser {
    private state: State = "ack";
    private pending = Buffer.alloc(0);
    private remaining = 0;
    private header: ReplyHeader | undefined;
    private readonly ackLine: Buffer;
    private readonly trailerLine: Buffer;
    /** Bytes thrown away while looking for our ACK (stale replies, boot noise). */
    discarded = 0;

    constructor(
        private readonly nonce: string,
        private readonly on: ReplyHandlers,
    ) {
        this.ackLine = Buffer.from(`${SHELL_PROTOCOL} ACK ${nonce}\n`, "latin1");
        this.trailerLine = Buffer.from(`${SHELL_PROTOCOL} END ${nonce}\n`, "latin1");
    }

    get finished(): boolean {
        return this.state === "done";
    }

    /** Where the reply is, for error messages. */
    get phase(): State {
        return this.state;
    }

    feed(chunk: Buffer): void {
        let buf = this.pending.length ? Buffer.concat([this.pending, chunk]) : chunk;
        this.pending = Buffer.alloc(0);
        while (buf.length > 0 && this.state !== "done") {
            switch (this.state) {
                case "ack": {
                    const at = buf.indexOf(this.ackLine);
                    if (at < 0) {
                        // Keep a tail that may be the start of the ACK split across chunks.
                        const keep = Math.min(buf.length, this.ackLine.length - 1);
                        this.discarded += buf.length - keep;
                        this.pending = Buffer.from(buf.subarray(buf.length - keep));
                        return;
                    }
                    this.discarded += at;
                    buf = buf.subarray(at + this.ackLine.length);
                    this.state = "header";
                    this.on.ack?.();
                    break;
                }
                case "header": {
                    const nl = buf.indexOf(0x0a);
                    if (nl < 0) {
                        if (buf.length > MAX_HEADER_BYTES)
                            throw new ShellProtocolError(`reply header longer than ${MAX_HEADER_BYTES} bytes`);
                        this.pending = Buffer.from(buf);
                        return;
                    }
                    this.header = this.parseHeader(buf.subarray(0, nl).toString("latin1"));
                    buf = buf.subarray(nl + 1);
                    this.on.header(this.header);
                    this.remaining = this.header.stdoutBytes;
                    this.state = "stdout";
                    if (this.remaining === 0) this.afterStdout();
                    break;
                }
                case "stdout":
                case "stderr": {
                    const n = Math.min(this.remaining, buf.length);
                    const part = buf.subarray(0, n);
                    if (this.state === "stdout") this.on.stdout(part);
                    else this.on.stderr(part);
                    this.remaining -= n;
                    buf = buf.subarray(n);
                    if (this.remaining === 0) {
                        if (this.state === "stdout") this.afterStdout();
                        else this.state = "trailer";
                    }
                    break;
                }
                case "trailer": {
                    const need = this.trailerLine.length;
                    if (buf.length < need) {
                        if (!this.trailerLine.subarray(0, buf.length).equals(buf)) throw this.badTrailer(buf);
                        this.pending = Buffer.from(buf);
                        return;
                    }
                    if (!buf.subarray(0, need).equals(this.trailerLine)) throw this.badTrailer(buf.subarray(0, need));
                    buf = buf.subarray(need);
                    this.state = "done";
                    this.on.done();
                    break;
                }
            }
        }
        // Bytes after the trailer belong to nobody: the port carries one reply at a time.
    }

    private afterStdout(): void {
        this.remaining = this.header!.stderrBytes;
        this.state = this.remaining === 0 ? "trailer" : "stderr";
    }

    private parseHeader(line: string): ReplyHeader {
        const m = /^PQSH1 RET ([0-9a-f]{32}) (exited|timeout) (\d{1,3}) (\d{1,15}) (\d{1,15})$/.exec(line);
        if (!m || m[1] !== this.nonce)
            throw new ShellProtocolError(`malformed reply header ${JSON.stringify(line.slice(0, 120))}`);
        return {
            status: m[2] as ReplyStatus,
            exitCode: Number(m[3]),
            stdoutBytes: Number(m[4]),
            stderrBytes: Number(m[5]),
        };
    }

    private badTrailer(got: Buffer): ShellProtocolError {
        return new ShellProtocolError(
            `reply did not end with its trailer (got ${JSON.stringify(got.toString("latin1").slice(0, 60))}): the output changed size while it was sent`,
        );
    }
}
