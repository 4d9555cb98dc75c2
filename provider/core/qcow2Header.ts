/**
 * The fixed fields of a qcow2 header (QEMU's docs/interop/qcow2.txt), big-endian at fixed
 * offsets. Two of them — the virtual size and the backing file's name — are all create and
 * refresh need from an image the provider made, and reading them costs a 4 KiB read where
 * `qemu-img info` costs a process start.
 */

export const QCOW2_MAGIC = 0x514649fb;
/** The spec's bound on a backing file name. */
export const MAX_BACKING_NAME_BYTES = 1023;
/** The fields read end at byte 72 (a version 2 header's length); the backing name is read where the header says it is. */
export const HEADER_READ_BYTES = 72;

export interface Qcow2Header {
    version: number;
    virtualSize: number;
    /** Where the backing file's name lies, and its length; both 0 without a backing file. */
    backingFileOffset: number;
    backingFileSize: number;
    /**
     * Where the image's own tables end (the L1 table and the refcount table, whose places the
     * header gives): a file shorter than this lost its metadata, whatever its header still says.
     * Undefined when fewer than 72 bytes were read.
     */
    metadataEnd?: number;
}

export class Qcow2HeaderError extends Error {
    constructor(what: string) {
        super(`not a qcow2 header we can read: ${what}`);
        this.name = "Qcow2HeaderError";
    }
}

export function parseQcow2Header(bytes: Uint8Array): Qcow2Header {
    if (bytes.length < 32) throw new Qcow2HeaderError(`only ${bytes.length} bytes; the fields read end at byte 32`);
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    if (view.getUint32(0) !== QCOW2_MAGIC) throw new Qcow2HeaderError(`magic 0x${view.getUint32(0).toString(16)}`);
    const version = view.getUint32(4);
    if (version !== 2 && version !== 3) throw new Qcow2HeaderError(`version ${version}`);
    const backingFileOffset = safeNumber(view.getBigUint64(8), "backing_file_offset");
    const backingFileSize = view.getUint32(16);
    if (backingFileSize > MAX_BACKING_NAME_BYTES) throw new Qcow2HeaderError(`backing_file_size ${backingFileSize}`);
    if ((backingFileOffset === 0) !== (backingFileSize === 0))
        throw new Qcow2HeaderError(`backing_file_offset ${backingFileOffset} with size ${backingFileSize}`);
    const virtualSize = safeNumber(view.getBigUint64(24), "size");
    if (bytes.length < 72) return { version, virtualSize, backingFileOffset, backingFileSize };
    const clusterBits = view.getUint32(20);
    if (clusterBits < 9 || clusterBits > 21) throw new Qcow2HeaderError(`cluster_bits ${clusterBits}`);
    const l1End = safeNumber(view.getBigUint64(40), "l1_table_offset") + view.getUint32(36) * 8;
    const refcountEnd =
        safeNumber(view.getBigUint64(48), "refcount_table_offset") + view.getUint32(56) * 2 ** clusterBits;
    return { version, virtualSize, backingFileOffset, backingFileSize, metadataEnd: Math.max(l1End, refcountEnd) };
}

/** The backing file's name from `bytes` read at the header's backingFileOffset, or undefined when it has none. */
export function backingName(header: Qcow2Header, bytes: Uint8Array): string | undefined {
    if (header.backingFileSize === 0) return undefined;
    if (bytes.length < header.backingFileSize)
        throw new Qcow2HeaderError(`backing name cut short (${bytes.length} of ${header.backingFileSize} bytes)`);
    try {
        return new TextDecoder("utf-8", { fatal: true }).decode(bytes.subarray(0, header.backingFileSize));
    } catch {
        // Only an outside rebase writes such a name; the provider never does.
        throw new Qcow2HeaderError("a backing file name that is not UTF-8");
    }
}

function safeNumber(v: bigint, field: string): number {
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new Qcow2HeaderError(`${field} ${v}`);
    return Number(v);
}
