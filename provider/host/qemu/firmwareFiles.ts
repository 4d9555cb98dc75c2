import { constants } from "node:fs";
import { access } from "node:fs/promises";
import { OVMF_CODE, OVMF_VARS_TEMPLATE } from "../../core/firmware";

/**
 * OVMF's files, looked for before a `firmware: "uefi"` VM starts: without them QEMU would fail
 * with a bare "Could not open" on a pflash drive, and the launcher's copy of the variable store
 * with a cp error, neither of which says what to install.
 */
export async function assertFirmwareInstalled(): Promise<void> {
    const missing: string[] = [];
    for (const file of [OVMF_CODE, OVMF_VARS_TEMPLATE]) {
        await access(file, constants.R_OK).catch(() => missing.push(file));
    }
    if (missing.length) {
        throw new Error(
            `vm.firmware "uefi" needs OVMF, and ${missing.join(" and ")} cannot be read on this host: install Debian's or Ubuntu's ovmf package (apt-get install ovmf), or use firmware "bios"`,
        );
    }
}
