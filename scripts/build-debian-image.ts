/**
 * Builds (or finds in the cache) the Debian 12 guest the tests and examples/debian-web boot:
 * mmdebstrap's root filesystem made into an ext4 image by pulumi-qemu's own DiskImage
 * (directory source, owners "preserve"), with the kernel and initrd to boot it directly.
 * Needs root (mmdebstrap --mode=root), mmdebstrap, and Debian's mirror (PQ_DEBIAN_MIRROR).
 *
 *   sudo node bin/scripts/build-debian-image.js [--cache DIR] [--json]
 *   sudo node bin/scripts/build-debian-image.js --rootfs DIR
 *
 * With --rootfs it stops after mmdebstrap and leaves the tree in DIR, for a stack that builds
 * the image itself (examples/debian-web: DiskImage directory source, owners "preserve").
 *
 * The cache defaults to ${PQ_DEBIAN_CACHE:-${XDG_CACHE_HOME:-~/.cache}/pulumi-qemu-tests}; a
 * second run reuses it until Debian publishes new package versions (a point release).
 */
import { DEBIAN_KERNEL_ARGUMENTS, ensureDebianGuest, mmdebstrapRootfs } from "../tests/guest/debianGuest";

async function main(): Promise<void> {
    const args = process.argv.slice(2);
    const at = args.indexOf("--cache");
    const cacheRoot = at >= 0 ? args[at + 1] : undefined;
    if (at >= 0 && !cacheRoot) throw new Error("--cache needs a directory");
    const t0 = Date.now();
    const r = args.indexOf("--rootfs");
    if (r >= 0) {
        const rootfs = args[r + 1];
        if (!rootfs || !rootfs.startsWith("/")) throw new Error("--rootfs needs an absolute directory (new or empty)");
        const boot = await mmdebstrapRootfs(rootfs, (line) =>
            process.stderr.write(`[${((Date.now() - t0) / 1000).toFixed(1)}s] ${line}\n`),
        );
        console.log(
            `root filesystem in ${rootfs} (${((Date.now() - t0) / 1000).toFixed(1)} s)\n\nFor examples/debian-web:`,
        );
        console.log(`  pulumi config set rootfsDir ${rootfs}`);
        console.log(`  pulumi config set kernel ${boot.kernel}`);
        console.log(`  pulumi config set initrd ${boot.initrd}`);
        console.log(`Kernel arguments: ${DEBIAN_KERNEL_ARGUMENTS.join(" ")}`);
        return;
    }
    const guest = await ensureDebianGuest({ cacheRoot });
    const seconds = (Date.now() - t0) / 1000;
    if (args.includes("--json")) {
        console.log(JSON.stringify({ ...guest, seconds }, null, 2));
        return;
    }
    console.log(`${guest.buildSeconds ? "built" : "cached"} in ${seconds.toFixed(1)} s`);
    console.log(`image       ${guest.image}   (raw ext4; boot an overlay on it)`);
    console.log(`inputHash   ${guest.inputHash}`);
    console.log(`kernel      ${guest.kernel}`);
    console.log(`initrd      ${guest.initrd}`);
    console.log(`arguments   ${guest.kernelArguments.join(" ")}`);
    console.log(`packages    ${guest.packages}`);
    console.log("\nFor examples/debian-web (an overlay per VM on this image):");
    console.log(`  pulumi config set baseImage ${guest.image}`);
    console.log(`  pulumi config set baseInputHash ${guest.inputHash}`);
    console.log(`  pulumi config set kernel ${guest.kernel}`);
    console.log(`  pulumi config set initrd ${guest.initrd}`);
}

main().catch((err: Error) => {
    console.error(`build-debian-image: ${err.message}`);
    process.exit(1);
});
