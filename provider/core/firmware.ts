import { optionString } from "./qemuOption";

/**
 * Which firmware a VM boots with, as QEMU arguments. "bios" is QEMU's own default (SeaBIOS)
 * and adds nothing, so VMs made before `vm.firmware` existed keep their argv and hash. "uefi"
 * is OVMF as Debian's `ovmf` package installs it: the code read-only from /usr/share/OVMF, and
 * a variable store (boot entries, EFI variables) the guest writes to, which must be the VM's
 * own — a per-VM copy of OVMF's template, owner-only in the VM's directory (or, for a foreground
 * launcher, its working directory), made once by the launcher and kept across restarts.
 */

export type Firmware = "bios" | "uefi";

/** Debian 12's `ovmf` (the 4 MiB builds; without Secure Boot, so any GRUB or kernel boots). */
export const OVMF_CODE = "/usr/share/OVMF/OVMF_CODE_4M.fd";
export const OVMF_VARS_TEMPLATE = "/usr/share/OVMF/OVMF_VARS_4M.fd";

/** The VM's copy of the variable store. Relative in the argv that is hashed: no host paths in a VM's identity. */
export const UEFI_VARS_FILE = "uefi-vars.fd";

/** The two pflash drives of OVMF: code (never written) and the VM's variable store. */
export function firmwareArgs(firmware: Firmware, varsFile: string): string[] {
    if (firmware === "bios") return [];
    return [
        "-drive",
        optionString(["if=pflash", "format=raw", "unit=0", "readonly=on", ["file", OVMF_CODE]]),
        "-drive",
        optionString(["if=pflash", "format=raw", "unit=1", ["file", varsFile]]),
    ];
}
