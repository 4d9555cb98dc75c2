import type * as pulumi from "@pulumi/pulumi";
import { lstat } from "node:fs/promises";
import * as path from "node:path";
import { defaultImageDir, sidecarPath } from "../../core/diskImageSpec";
import { octal } from "../../core/fileMode";
import { CONTENT_DIGEST } from "../../core/hash";
import { sameFile, stampOf, statStamp } from "../../host/files/fileHash";
import { readImageHeader } from "../../host/images/imageHeader";
import { isOwnFileSync, resolveStateDir } from "../../host/files/stateDir";
import { withoutUndefined } from "../common";
import type { DiskImageOutputs } from "./state";
import { readSidecar, settleRecord } from "./record";
import { StateError } from "../stateGuard";
import { recoverSource } from "./sourceRecovery";

/**
 * `pulumi import` (and the `import` resource option) call Read with an id and no state. A
 * DiskImage's id is its path; an image pulumi-qemu made has a record beside it
 * (`<image>.pulumi-qemu.json`) with its inputHash, format and the file's identity, which is
 * all diff needs to match it against the inputs the program declares. The record does not say
 * what the image was made from: where the image tells (blank, overlay), sourceRecovery.ts works it
 * out, so the inputs returned pass check and show no change (`pulumi import` writes them into the
 * generated code); otherwise the program must declare `source`, and a mismatch shows as a
 * replacement, which the engine refuses for an import, so nothing is touched.
 *
 * Only images with our record are adopted: delete removes what it adopts, and the provider never
 * deletes what it did not make.
 */
export async function importImage(
    id: string,
    noChange: (outs: DiskImageOutputs, inputs: Record<string, unknown>) => Promise<boolean>,
): Promise<pulumi.dynamic.ReadResult> {
    const refuse = (why: string, fix: string) =>
        new StateError(`import of DiskImage ${JSON.stringify(id)}: ${why}. ${fix} Nothing was touched.`);
    if (!path.isAbsolute(id))
        throw refuse(
            "the id of a DiskImage is the image file's absolute path",
            "Pass the path, e.g. `pulumi import qemu:index:DiskImage NAME /path/to/image.qcow2`.",
        );
    let st;
    try {
        st = await lstat(id, { bigint: true });
    } catch (err) {
        if ((err as NodeJS.ErrnoException).code === "ENOENT")
            throw refuse("there is no file at that path", "Check the path.");
        throw err;
    }
    if (!st.isFile())
        throw refuse(
            "it is not a regular file (a symbolic link, directory or device)",
            "Import the image file itself.",
        );
    if (!isOwnFileSync(id))
        throw refuse(
            "the file belongs to another user",
            "Only the user running Pulumi can own what pulumi-qemu manages.",
        );
    const record = await readSidecar(id);
    if (!record) {
        const state = await settleRecord(id).catch(() => "foreign" as const);
        if (state === "in-progress")
            throw refuse(
                "a pulumi-qemu create of this image is still running",
                "Wait for it to finish, then import again.",
            );
        throw refuse(
            `it has no pulumi-qemu record (${sidecarPath(id)}), so pulumi-qemu did not make it and will not adopt it (destroy would delete it)`,
            `Use it as it is: as a VM disk (\`vm.disks: [{ path: ${JSON.stringify(id)}, format }]\`), or copy it into a new DiskImage with \`source: { kind: "file", path: ${JSON.stringify(id)} }\`.`,
        );
    }
    if (!sameFile(stampOf(st), record.stamp)) {
        throw refuse(
            `the file is not the one its record describes (inode or birth time differ: it was replaced since pulumi-qemu made it)`,
            "Declare a new DiskImage instead.",
        );
    }
    const header = await readImageHeader(id, record.format);
    const backingPath = header.backingFilename;
    const backingStamp = backingPath ? await statStamp(backingPath).catch(() => undefined) : undefined;
    if (backingPath && !backingStamp)
        throw refuse(
            `its backing file ${backingPath} is gone`,
            "An overlay without its backing image cannot be used; declare a new one.",
        );
    const placed = defaultPlacement(id, record.inputHash);
    const outs: DiskImageOutputs = withoutUndefined({
        // What it was made from is not recorded: the program's `source` is judged against inputHash.
        source: undefined,
        stateDir: placed?.stateDir,
        path: id,
        pathDefaulted: placed !== undefined,
        mode: octal(Number(st.mode) & 0o777),
        format: record.format,
        virtualSizeBytes: header.virtualSize,
        inputHash: record.inputHash,
        backingPath,
        backingStamp,
        // Records of this version are hashed with the current algorithm; diff resolves the source with it.
        digestAlgorithm: CONTENT_DIGEST,
        imageStamp: record.stamp,
        createdByProvider: true as const,
    }) as DiskImageOutputs;
    // The inputs a generated program starts from, with the source when the image tells it (docs/drift-and-import.md).
    const top = withoutUndefined({
        path: placed ? undefined : id,
        stateDir: placed?.stateDir,
        mode: outs.mode === "0600" ? undefined : outs.mode,
    });
    const source = await recoverSource(
        { format: record.format, virtualSizeBytes: header.virtualSize, backingPath },
        top,
        (inputs) => noChange(outs, inputs),
    );
    return { id, props: outs, inputs: source ? { ...top, source } : top };
}

/**
 * Whether the image lies where create puts images without a `path` (`<stateDir>/images/<16 hex of
 * inputHash>-<suffix>.<format>`), and in which state directory: then the program need not name it.
 * The state directory is left out when it is the default one.
 */
function defaultPlacement(file: string, inputHash: string): { stateDir?: string } | undefined {
    const stateDir = path.dirname(path.dirname(file));
    if (path.dirname(file) !== defaultImageDir(stateDir)) return undefined;
    if (!path.basename(file).startsWith(`${inputHash.slice(0, 16)}-`)) return undefined;
    return stateDir === resolveStateDir(undefined) ? {} : { stateDir };
}
