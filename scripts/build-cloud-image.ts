/**
 * Builds (or finds in the cache) the cloud-like Debian 12 disk image the firmware-boot tests,
 * the DHCP test and the cloud-fleet example boot: a qcow2 GPT disk with GRUB for BIOS and UEFI,
 * cloud-init (NoCloud), qemu-guest-agent and sshd — the shape of Debian's genericcloud image,
 * made offline from Debian's packages (tests/guest/cloudGuest.ts). Needs root (mmdebstrap
 * --mode=root), mmdebstrap, grub-pc-bin, grub-efi-amd64-bin, fdisk, dosfstools, mtools and
 * Debian's mirror (PQ_DEBIAN_MIRROR).
 *
 *   sudo node bin/scripts/build-cloud-image.js [--cache DIR] [--json]
 *
 * Prints the image's path and its SHA512SUMS line.
 */
import * as path from "node:path";
import { ensureCloudGuest } from "../tests/guest/cloudGuest";

async function main(): Promise<void> {
    const args = process.argv.slice(2);
    const at = args.indexOf("--cache");
    const cacheRoot = at >= 0 ? args[at + 1] : undefined;
    if (at >= 0 && !cacheRoot) throw new Error("--cache needs a directory");
    const t0 = Date.now();
    const guest = await ensureCloudGuest({
        cacheRoot,
        log: (line) => process.stderr.write(`[${((Date.now() - t0) / 1000).toFixed(1)}s] ${line}\n`),
    });
    const seconds = (Date.now() - t0) / 1000;
    if (args.includes("--json")) {
        console.log(JSON.stringify({ ...guest, seconds }, null, 2));
        return;
    }
    console.log(
        `${guest.image} (${guest.buildSeconds ? `built in ${guest.buildSeconds} s` : `cached; ${seconds.toFixed(1)} s`})`,
    );
    console.log(`${guest.sha512}  ${path.basename(guest.image)}`);
}

main().catch((err: Error) => {
    console.error(err.message);
    process.exit(1);
});
