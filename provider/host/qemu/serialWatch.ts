import { open, stat } from "node:fs/promises";
import { StringDecoder } from "node:string_decoder";
import { cleanConsole, ConsoleScanner, parseSerialPattern, SERIAL_OVERLAP_CHARS } from "../../core/serialPattern";

/**
 * Watches a VM's serial log for `ready.serialPattern` without reading it all again on every poll:
 * each poll reads only what the guest wrote since the last one (nothing when the file did not
 * grow), and the pure ConsoleScanner searches it with a bounded overlap. A chatty guest then
 * costs CPU in proportion to what it prints, not to that times the number of polls.
 */

/** Bytes read per read(2): a big backlog is searched in pieces, yielding to the event loop in between. */
const READ_CHUNK_BYTES = 1024 * 1024;

export class SerialLogWatcher {
    private scanner: ConsoleScanner;
    private decoder = new StringDecoder("utf8");
    private offset = 0;
    private ino: number | undefined;
    /** Bytes of the log read so far, over every poll (for benchmarks and tests). */
    bytesRead = 0;

    constructor(
        readonly file: string,
        readonly pattern: string,
        private readonly overlap = SERIAL_OVERLAP_CHARS,
    ) {
        this.scanner = new ConsoleScanner(parseSerialPattern(pattern), overlap);
    }

    get matched(): boolean {
        return this.scanner.matched;
    }

    /** Reads what was added since the last poll and answers whether the pattern has been seen. */
    async poll(): Promise<boolean> {
        if (this.scanner.matched) return true;
        let st;
        try {
            st = await stat(this.file);
        } catch {
            return false; // QEMU has not created it yet.
        }
        if (!st.isFile()) return false;
        if (this.ino !== undefined && (st.ino !== this.ino || st.size < this.offset)) this.restart();
        this.ino = st.ino;
        if (st.size <= this.offset) return false;
        const fh = await open(this.file, "r");
        try {
            const buf = Buffer.allocUnsafe(Math.min(READ_CHUNK_BYTES, st.size - this.offset));
            while (this.offset < st.size && !this.scanner.matched) {
                const { bytesRead } = await fh.read(buf, 0, Math.min(buf.length, st.size - this.offset), this.offset);
                if (bytesRead === 0) break;
                this.offset += bytesRead;
                this.bytesRead += bytesRead;
                this.scanner.push(this.decoder.write(buf.subarray(0, bytesRead)));
            }
        } finally {
            await fh.close();
        }
        return this.scanner.matched;
    }

    /** A new log at the same path (a restarted VM) or a truncated one is read from its start. */
    private restart(): void {
        this.scanner = new ConsoleScanner(this.scanner.pattern, this.overlap);
        this.decoder = new StringDecoder("utf8");
        this.offset = 0;
    }
}

/** At most this much of the log's end is read for an error message. */
export const SERIAL_LOG_TAIL_BYTES = 64 * 1024;

/** The last `lines` lines of the console, cleaned, reading only the end of the file. */
export async function serialLogTail(serialLog: string, lines = 25): Promise<string> {
    let raw: string;
    let cut = false;
    try {
        const fh = await open(serialLog, "r");
        try {
            const { size } = await fh.stat();
            const start = Math.max(0, size - SERIAL_LOG_TAIL_BYTES);
            const buf = Buffer.alloc(size - start);
            const { bytesRead } = await fh.read(buf, 0, buf.length, start);
            raw = buf.subarray(0, bytesRead).toString("utf8");
            cut = start > 0;
        } finally {
            await fh.close();
        }
    } catch {
        return "(no serial log)";
    }
    return consoleTail(raw, cut, lines);
}

/** The last `lines` of a serial log's last bytes, cleaned; `cut`: they start mid-file. */
export function consoleTail(raw: string, cut: boolean, lines = 25): string {
    // A cut in the middle of a line (or of a character) is not shown.
    if (cut) raw = raw.slice(raw.indexOf("\n") + 1);
    const text = cleanConsole(raw).trimEnd();
    if (!text) return "(the serial console printed nothing)";
    return text.split("\n").slice(-lines).join("\n");
}
