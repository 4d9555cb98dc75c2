import type * as pulumi from "@pulumi/pulumi";
import { lstat, readFile } from "node:fs/promises";
import * as path from "node:path";
import { sha256Hex } from "../../core/hash";
import { octal } from "../../core/fileMode";
import { launcherArgv } from "../../core/launcher";
import { isOurLauncherText } from "../../host/files/launcherFile";
import { isOwnFileSync, resolveStateDir } from "../../host/files/stateDir";
import { withoutUndefined } from "../common";
import { StateError } from "../stateGuard";

/**
 * `pulumi import` of a RunScript by its path. A launcher pulumi-qemu wrote carries its header
 * and the argv it runs, but not the VM spec it came from, so its `argvHash` cannot be known
 * here: the adopted state has `imported` instead, and diff matches the program's `vm` against
 * the file's text (see `importedTextMatches` in runScript.ts). The first rewrite (a new mode,
 * drift) records the full state.
 */

/** The outputs of an adopted launcher: no argvHash and no vm until it is rewritten. */
export interface ImportedLauncher {
    path: string;
    requestedPath?: string;
    stateDir?: string;
    argv: string[];
    accel: "kvm" | "tcg";
    mode: string;
    contentHash: string;
    imported: true;
}

export async function importLauncher(id: string): Promise<pulumi.dynamic.ReadResult> {
    const refuse = (why: string, fix: string) =>
        new StateError(`import of RunScript ${JSON.stringify(id)}: ${why}. ${fix} Nothing was touched.`);
    if (!path.isAbsolute(id))
        throw refuse(
            "the id of a RunScript is the launcher's absolute path",
            "Pass the path, e.g. `pulumi import qemu:index:RunScript NAME /path/to/run-vm.sh`.",
        );
    let st;
    try {
        st = await lstat(id);
    } catch (err) {
        if ((err as NodeJS.ErrnoException).code === "ENOENT")
            throw refuse("there is no file at that path", "Check the path.");
        throw err;
    }
    if (!st.isFile())
        throw refuse("it is not a regular file (a symbolic link, directory or device)", "Import the launcher itself.");
    if (!isOwnFileSync(id))
        throw refuse(
            "the file belongs to another user",
            "Only the user running Pulumi can own what pulumi-qemu manages.",
        );
    const text = await readFile(id, "utf8");
    const argv = isOurLauncherText(text) ? launcherArgv(text) : undefined;
    if (!argv) {
        throw refuse(
            "it is not a launcher pulumi-qemu wrote (no pulumi-qemu header and exec line), so it will not be adopted (destroy would delete it)",
            "Declare a new RunScript at another path.",
        );
    }
    const accelAt = argv.indexOf("-accel");
    const accel = argv[accelAt + 1];
    if (accelAt < 0 || (accel !== "kvm" && accel !== "tcg"))
        throw refuse("its command line names no -accel kvm or tcg", "Declare a new RunScript instead.");
    const placed = defaultPlacement(id);
    const mode = octal(st.mode & 0o777);
    const outs: ImportedLauncher = withoutUndefined({
        path: id,
        requestedPath: placed ? undefined : id,
        stateDir: placed?.stateDir,
        argv,
        accel,
        mode,
        contentHash: sha256Hex(text),
        imported: true as const,
    }) as ImportedLauncher;
    const inputs = withoutUndefined({
        path: placed ? undefined : id,
        stateDir: placed?.stateDir,
        mode: mode === "0500" ? undefined : mode,
    });
    return { id, props: outs, inputs };
}

/** `<stateDir>/launchers/run-vm-<16 hex>-<8 hex>.sh` is where create puts a launcher without a `path`. */
function defaultPlacement(file: string): { stateDir?: string } | undefined {
    if (
        path.basename(path.dirname(file)) !== "launchers" ||
        !/^run-vm-[0-9a-f]{16}-[0-9a-f]{8}\.sh$/.test(path.basename(file))
    )
        return undefined;
    const stateDir = path.dirname(path.dirname(file));
    return stateDir === resolveStateDir(undefined) ? {} : { stateDir };
}
