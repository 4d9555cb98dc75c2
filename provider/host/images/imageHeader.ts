import { open, stat } from "node:fs/promises";
import { backingName, HEADER_READ_BYTES, parseQcow2Header } from "../../core/qcow2Header";
import type { ImageFormat } from "../../core/diskImageSpec";

/**
 * What an image's own bytes say about it, read in process: its virtual size, and for qcow2 the
 * backing file named in its header. For images the provider wrote itself, where qemu-img's
 * probing and checks add nothing but a process start.
 */

export interface ImageHeader {
    virtualSize: number;
    backingFilename?: string;
    /** qcow2: where its tables end (see Qcow2Header.metadataEnd). */
    metadataEnd?: number;
}

export async function readImageHeader(file: string, format: ImageFormat): Promise<ImageHeader> {
    // A raw image is its bytes: qemu-img reports its length as the virtual size.
    if (format === "raw") return { virtualSize: (await stat(file)).size };
    const fh = await open(file, "r");
    try {
        const head = Buffer.alloc(HEADER_READ_BYTES);
        const { bytesRead } = await fh.read(head, 0, head.length, 0);
        const header = parseQcow2Header(head.subarray(0, bytesRead));
        const tables = header.metadataEnd === undefined ? {} : { metadataEnd: header.metadataEnd };
        if (header.backingFileSize === 0) return { virtualSize: header.virtualSize, ...tables };
        const name = Buffer.alloc(header.backingFileSize);
        const got = await fh.read(name, 0, name.length, header.backingFileOffset);
        return {
            virtualSize: header.virtualSize,
            backingFilename: backingName(header, name.subarray(0, got.bytesRead)),
            ...tables,
        };
    } finally {
        await fh.close();
    }
}
