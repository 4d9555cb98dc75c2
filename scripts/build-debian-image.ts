/**
 * Builds (or finds in the cache) the Debian 12 guest the tests and examples/debian-web boot:
 * mmdebstrap's root filesystem made into an ext4 image by pulumi-qemu's own DiskImage
 * (directory source, owners "preserve"), with the kernel and initrd to boot it directly.
 * Needs root (mmdebstrap --mode=root), mmdebstrap, and Debian's mirror (PQ_DEBIAN_MIRROR).
 *
 *   sudo node bin/scripts/build-debian-image.js [--cache DIR] [--json]
 *
 * The cache defaults to ${PQ_DEBIAN_CACHE:-${XDG_CACHE_HOME:-~/.cache}/pulumi-qemu-tests}; a
 * second run reuses it until Debian publishes new package versions (a point release).
 */
import { ensureDebianGuest } from "../tests/guest/debianGuest";

async function main(): Promise<void> {
    const args = process.argv.slice(2);
    const at = args.indexOf("--cache");
    const cacheRoot = at >= 0 ? args[at + 1] : undefined;
    if (at >= 0 && !cacheRoot) throw new Error("--cache needs a directory");
    const t0 = Date.now();
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
    console.log("\nFor examples/debian-web:");
    console.log(`  pulumi config set baseImage ${guest.image}`);
    console.log(`  pulumi config set baseInputHash ${guest.inputHash}`);
    console.log(`  pulumi config set kernel ${guest.kernel}`);
    console.log(`  pulumi config set initrd ${guest.initrd}`);
}

main().catch((err: Error) => {
    console.error(`build-debian-image: ${err.message}`);
    process.exit(1);
});
