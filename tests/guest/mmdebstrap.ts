import execa from "execa";
import { readdir } from "node:fs/promises";
import * as path from "node:path";

/**
 * One mmdebstrap run for the test guests (the Debian direct-boot guest and the cloud-like disk
 * image): a Debian root filesystem made from the mirror's packages, as root so that owners and
 * device nodes are real. Shared so both guests build the same way and report failures alike.
 */

export interface RootfsRecipe {
    suite: string;
    mirror: string;
    variant: string;
    packages: readonly string[];
    /** dpkg path-exclude patterns (documentation, manual pages, translations). */
    pathExcludes: readonly string[];
}

export interface RootfsHooks {
    /** Shell run by mmdebstrap after the essential packages, before the rest (`$1` is the tree). */
    essential?: string;
    /** Shell run once every package is installed (`$1` is the tree). */
    customize?: string;
}

/** Refuses early and clearly when not root: mmdebstrap's other modes cannot make a bootable tree here. */
export function requireRootForBuild(what: string): void {
    if (process.getuid?.() !== 0) {
        throw new Error(
            `building ${what} needs root (mmdebstrap's root mode keeps the owners and device nodes a system needs); run as root or point PQ_DEBIAN_CACHE at a cache built by root`,
        );
    }
}

/** Builds `rootfs` (absent or empty) and returns its kernel and initrd in /boot. */
export async function mmdebstrap(
    recipe: RootfsRecipe,
    hooks: RootfsHooks,
    rootfs: string,
    log: (line: string) => void,
): Promise<{ kernel: string; initrd: string }> {
    const args = [
        `--variant=${recipe.variant}`,
        "--mode=root",
        `--include=${recipe.packages.join(",")}`,
        ...recipe.pathExcludes.map((p) => `--dpkgopt=path-exclude=${p}`),
        "--dpkgopt=path-include=/usr/share/doc/*/copyright",
        ...(hooks.essential ? [`--essential-hook=${hooks.essential}`] : []),
        ...(hooks.customize ? [`--customize-hook=${hooks.customize}`] : []),
        recipe.suite,
        rootfs,
        recipe.mirror,
    ];
    const child = execa("mmdebstrap", args, { stdin: "ignore", all: true, timeout: 20 * 60_000, reject: false });
    let tail: string[] = [];
    child.all!.on("data", (chunk: Buffer) => {
        for (const line of chunk
            .toString()
            .split("\n")
            .filter((l) => l.trim())) {
            tail = [...tail.slice(-30), line];
            if (/^(I|E|W): /.test(line)) log(`mmdebstrap ${line}`);
        }
    });
    const res = await child;
    if (res.exitCode !== 0)
        throw new Error(
            `mmdebstrap failed (exit ${res.exitCode}${res.timedOut ? ", timed out" : ""}):\n${tail.join("\n")}`,
        );
    const boot = await readdir(path.join(rootfs, "boot"));
    const vmlinuz = boot.find((n) => n.startsWith("vmlinuz-"));
    const initrd = boot.find((n) => n.startsWith("initrd.img-"));
    if (!vmlinuz || !initrd)
        throw new Error(`the Debian tree has no kernel or initrd in /boot (found ${boot.join(", ")})`);
    return { kernel: path.join(rootfs, "boot", vmlinuz), initrd: path.join(rootfs, "boot", initrd) };
}

/** `dpkg-query -W` of a built tree: package and version, one a line. */
export async function packageList(rootfs: string): Promise<string> {
    const r = await execa("dpkg-query", [
        `--admindir=${path.join(rootfs, "var/lib/dpkg")}`,
        "-W",
        "-f",
        "${Package} ${Version}\\n",
    ]);
    return r.stdout + "\n";
}
