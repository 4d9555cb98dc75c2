import type { Stats } from "node:fs";
import { open, stat } from "node:fs/promises";
import * as path from "node:path";
import {
    backingName,
    HEADER_READ_BYTES,
    parseQcow2Header,
    QCOW2_MAGIC,
    Qcow2HeaderError,
} from "../../core/qcow2Header";
import { InputError } from "../../core/validation";

/**
 * Image sources and backing files must be regular files. Opening a FIFO blocks until someone
 * writes to it (qemu-img, b3sum and our own hashing would wait forever), a socket cannot be read
 * at all, and a device is not something an image should silently be copied from or hashed whole.
 * These checks run before any tool or hash opens the file, so the user gets an error naming the
 * field instead of a hang.
 */

/** What a non-regular file is, in words a user recognises. */
export function fileTypeName(st: Stats): string {
    if (st.isFIFO()) return "a FIFO (named pipe)";
    if (st.isSocket()) return "a socket";
    if (st.isCharacterDevice()) return "a character device";
    if (st.isBlockDevice()) return "a block device";
    if (st.isDirectory()) return "a directory";
    if (st.isSymbolicLink()) return "a symbolic link";
    return "not a regular file";
}

function problem(field: string, reason: string): InputError {
    return new InputError([{ property: field, reason }]);
}

/**
 * Refuses `file` (what `field` names, such as `source.backing`) unless it is a regular file,
 * following symbolic links as every reader of it would. `role` says what the file is for in the message.
 */
export async function requireRegularFile(file: string, field: string, role = "a disk image"): Promise<void> {
    let st: Stats;
    try {
        st = await stat(file);
    } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code === "ENOENT") throw problem(field, `${field} ${file} does not exist`);
        if (code === "ENOTDIR")
            throw problem(field, `${field} ${file} does not exist (a part of the path is not a directory)`);
        if (code === "ENAMETOOLONG") throw problem(field, `${field} is too long a path for this host`);
        throw problem(field, `${field} ${file} cannot be read: ${(err as Error).message}`);
    }
    if (!st.isFile()) {
        throw problem(
            field,
            `${field} ${file} is ${fileTypeName(st)}; ${role} must be a regular file (a FIFO, socket or device would block or be read without end)`,
        );
    }
}

/** Every file of a chain as qemu-img listed it, checked before any of them is hashed. */
export async function requireRegularChain(files: readonly string[], field: string): Promise<void> {
    for (const [i, file] of files.entries()) {
        await requireRegularFile(file, field, i === 0 ? "a disk image" : `a backing file (under ${files[i - 1]})`);
    }
}

/** A chain deeper than this is refused: QEMU's own images never nest so far, a loop would. */
export const MAX_CHAIN_DEPTH = 64;

/**
 * The files of the backing chain under `top`, top first, found by reading qcow2 headers in this
 * process — each file is stat'ed (and refused unless regular) before it is opened, so no FIFO is
 * ever opened, by us or by the `qemu-img info --backing-chain` the caller runs next. `format` as
 * the user gave it: a raw top has no chain; without one, qcow2 is recognised by its magic.
 * Backing names qemu-img would not read as a file (`json:`, `nbd:`…) end the walk: qemu-img, with
 * its deadline, judges those.
 */
export async function preflightBackingChain(top: string, field: string, format?: "raw" | "qcow2"): Promise<string[]> {
    const files: string[] = [];
    let file = top;
    let fmt: "raw" | "qcow2" | undefined = format;
    for (;;) {
        if (files.includes(file)) throw problem(field, `${field} ${top}: the backing chain loops at ${file}`);
        if (files.length >= MAX_CHAIN_DEPTH)
            throw problem(field, `${field} ${top}: the backing chain is more than ${MAX_CHAIN_DEPTH} files deep`);
        await requireRegularFile(
            file,
            field,
            files.length === 0 ? "a disk image" : `a backing file (under ${files[files.length - 1]})`,
        );
        files.push(file);
        if (fmt === "raw") return files;
        const next = await qcow2Backing(file);
        if (next === undefined) return files;
        if (/^[a-z0-9+-]+:/i.test(next) && !next.startsWith("/")) return files; // a protocol, not a path
        file = path.resolve(path.dirname(file), next);
        fmt = undefined;
    }
}

/** The backing name in `file`'s qcow2 header, or undefined for a file without one or not qcow2. */
async function qcow2Backing(file: string): Promise<string | undefined> {
    const fh = await open(file, "r");
    try {
        const head = Buffer.alloc(HEADER_READ_BYTES);
        const { bytesRead } = await fh.read(head, 0, head.length, 0);
        if (bytesRead < 4 || head.readUInt32BE(0) !== QCOW2_MAGIC) return undefined;
        let header;
        try {
            header = parseQcow2Header(head.subarray(0, bytesRead));
        } catch (err) {
            if (err instanceof Qcow2HeaderError) return undefined; // qemu-img will say what is wrong
            throw err;
        }
        if (header.backingFileSize === 0) return undefined;
        const name = Buffer.alloc(header.backingFileSize);
        const got = await fh.read(name, 0, name.length, header.backingFileOffset);
        try {
            return backingName(header, name.subarray(0, got.bytesRead));
        } catch {
            return undefined;
        }
    } finally {
        await fh.close();
    }
}
