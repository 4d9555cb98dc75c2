/**
 * Backing chains read for the sources that open an image (file, overlay): qemu-img's view of the
 * chain under a file, checked file by file before anything opens it, and remembered by stamps so
 * a preview of many overlays on one base asks qemu-img once.
 */
import type { ImageFormat } from "../../../core/diskImageSpec";
import { sameStamp, statStamp, type FileStamp } from "../../../host/files/fileHash";
import { preflightBackingChain, requireRegularChain } from "../../../host/files/regularFile";
import { backingChain, QemuImgError, type ImageInfo } from "../../../host/images/qemuImg";
import { fieldError } from "./source";

/**
 * Chains already read by this process, with the stamps of every file in them. A preview of a
 * stack whose overlays share one base asks for the base's chain once per overlay; starting
 * qemu-img costs more than the rest of a no-op diff, and a stat tells whether the answer holds.
 */
const chainMemo = new Map<string, { stamps: FileStamp[]; chain: ImageInfo[] }>();

/** The chain under an image, or a field error carrying qemu-img's own words (a loop, a corrupt header…). */
export async function chainOf(file: string, format: ImageFormat | undefined, field: string): Promise<ImageInfo[]> {
    const key = `${format ?? ""}\0${file}`;
    const memo = chainMemo.get(key);
    if (memo && (await stampsHold([file, ...backingFiles(memo.chain)], memo.stamps))) return memo.chain;
    // Every file of the chain is looked at before anything opens it: a FIFO there would block.
    await preflightBackingChain(file, field, format);
    let chain: ImageInfo[];
    try {
        chain = await backingChain(file, { format });
    } catch (err) {
        if (err instanceof QemuImgError)
            throw fieldError(field, `${field} ${file} cannot be opened as a disk image: ${err.stderr.trim()}`);
        throw err;
    }
    const files = [file, ...backingFiles(chain)];
    await requireRegularChain(files, field);
    const stamps = await Promise.all(files.map((f) => statStamp(f).catch(() => undefined)));
    if (stamps.every((st) => st !== undefined)) chainMemo.set(key, { stamps: stamps as FileStamp[], chain });
    return chain;
}

async function stampsHold(files: string[], stamps: FileStamp[]): Promise<boolean> {
    if (files.length !== stamps.length) return false;
    const now = await Promise.all(files.map((f) => statStamp(f).catch(() => undefined)));
    return now.every((st, i) => st !== undefined && sameStamp(st, stamps[i]));
}

export function knownFormat(found: string, field: string, file: string): ImageFormat {
    if (found === "raw" || found === "qcow2") return found;
    throw fieldError(field, `${file} is a ${found} image; only "raw" and "qcow2" are supported (convert it first)`);
}

/** The files under the top of a chain, as qemu-img resolved them (a relative name is read from its image's directory). */
export function backingFiles(chain: ImageInfo[]): string[] {
    return chain.map((layer) => layer.fullBackingFilename).filter((f): f is string => f !== undefined);
}
