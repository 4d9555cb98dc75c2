import { runTool, ToolTimeoutError } from "../process/toolRun";

/**
 * qemu-img, and nothing else: each function is one invocation. Failures carry qemu-img's own
 * message, because that is what tells a user which file was corrupt or which disk was full.
 */

export class QemuImgError extends Error {
    constructor(
        readonly argv: string[],
        readonly stderr: string,
    ) {
        super(`qemu-img ${argv.join(" ")} failed: ${stderr.trim() || "no message"}`);
        this.name = "QemuImgError";
    }
}

export interface ImageInfo {
    filename: string;
    format: string;
    virtualSize: number;
    actualSize?: number;
    /** The backing file as written in the header. */
    backingFilename?: string;
    /** The backing file resolved against the image's directory. */
    fullBackingFilename?: string;
    backingFormat?: string;
}

/**
 * info and create touch headers only: a minute without an answer means qemu-img is blocked (a
 * FIFO or a device in the chain, a hung mount), and the user is told so instead of waiting forever.
 */
export const QEMU_IMG_METADATA_TIMEOUT_MS = 60_000;
/**
 * convert copies data, which takes as long as the image is big: no total deadline, but it is
 * stopped once it has read and written nothing for this long.
 */
export const QEMU_IMG_STALL_MS = 120_000;

export interface QemuImgRunOptions {
    timeoutMs?: number;
    stallMs?: number;
}

async function run(args: string[], qemuImg: string, limits: QemuImgRunOptions): Promise<string> {
    let r;
    try {
        r = await runTool(qemuImg, args, { ...limits, label: `qemu-img ${args.join(" ")}` });
    } catch (err) {
        // As a QemuImgError, so that callers name the field whose file could not be read.
        if (err instanceof ToolTimeoutError) throw new QemuImgError(args, `qemu-img ${err.why} and was stopped`);
        throw err;
    }
    if (r.exitCode !== 0)
        throw new QemuImgError(
            args,
            r.stderr || r.stdout || r.spawnError || (r.signal ? `killed by ${r.signal}` : `exit code ${r.exitCode}`),
        );
    return r.stdout;
}

function toInfo(raw: Record<string, unknown>): ImageInfo {
    const str = (k: string) => (typeof raw[k] === "string" ? (raw[k] as string) : undefined);
    const num = (k: string) => (typeof raw[k] === "number" ? (raw[k] as number) : undefined);
    const filename = str("filename");
    const format = str("format");
    const virtualSize = num("virtual-size");
    if (filename === undefined || format === undefined || virtualSize === undefined) {
        throw new Error(
            `qemu-img info gave an answer without filename, format or virtual-size: ${JSON.stringify(raw)}`,
        );
    }
    const info: ImageInfo = { filename, format, virtualSize };
    const optional: [keyof ImageInfo, string | number | undefined][] = [
        ["actualSize", num("actual-size")],
        ["backingFilename", str("backing-filename")],
        ["fullBackingFilename", str("full-backing-filename")],
        ["backingFormat", str("backing-filename-format")],
    ];
    for (const [k, v] of optional) if (v !== undefined) (info as unknown as Record<string, unknown>)[k] = v;
    return info;
}

/** The image and every backing file under it, top first. qemu-img itself refuses a chain that loops. */
export async function backingChain(
    file: string,
    opts: { format?: string; qemuImg?: string; timeoutMs?: number } = {},
): Promise<ImageInfo[]> {
    const args = ["info", "-U", "--output=json", "--backing-chain", ...(opts.format ? ["-f", opts.format] : []), file];
    const parsed = JSON.parse(
        await run(args, opts.qemuImg ?? "qemu-img", { timeoutMs: opts.timeoutMs ?? QEMU_IMG_METADATA_TIMEOUT_MS }),
    ) as unknown;
    if (!Array.isArray(parsed))
        throw new Error(`qemu-img info --backing-chain did not give a list: ${JSON.stringify(parsed).slice(0, 200)}`);
    return parsed.map((x) => toInfo(x as Record<string, unknown>));
}

/** A new empty image. qemu-img truncates whatever is at `file`: callers pass a fresh temp path. */
export async function createImage(
    file: string,
    format: string,
    sizeBytes: number,
    qemuImg = "qemu-img",
    limits: QemuImgRunOptions = {},
): Promise<void> {
    await run(["create", "-q", "-f", format, file, String(sizeBytes)], qemuImg, {
        timeoutMs: QEMU_IMG_METADATA_TIMEOUT_MS,
        ...limits,
    });
}

/** A qcow2 overlay; `backing` must be absolute, because a relative one is read from the overlay's directory. */
export async function createOverlay(
    file: string,
    backing: string,
    backingFormat: string,
    sizeBytes?: number,
    qemuImg = "qemu-img",
    limits: QemuImgRunOptions = {},
): Promise<void> {
    if (!backing.startsWith("/")) throw new Error(`createOverlay: backing ${backing} must be an absolute path`);
    const args = [
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        backing,
        "-F",
        backingFormat,
        file,
        ...(sizeBytes === undefined ? [] : [String(sizeBytes)]),
    ];
    await run(args, qemuImg, { timeoutMs: QEMU_IMG_METADATA_TIMEOUT_MS, ...limits });
}

/**
 * Copies `source` into a new image at `target`, flattening any backing chain, so the import
 * stands alone. `-U` lets a source in use by a VM be read; the source is opened read-only.
 */
export async function convertImage(
    source: string,
    sourceFormat: string,
    target: string,
    targetFormat: string,
    qemuImg = "qemu-img",
    limits: QemuImgRunOptions = {},
): Promise<void> {
    await run(["convert", "-U", "-q", "-f", sourceFormat, "-O", targetFormat, source, target], qemuImg, {
        stallMs: QEMU_IMG_STALL_MS,
        ...limits,
    });
}
