import { existsSync, readFileSync } from "node:fs";
import * as path from "node:path";

/**
 * The checkout's root, found by its package.json: this code runs both from tests/engine under
 * ts-jest and compiled from bin/tests/engine, so a fixed number of `..` would be wrong once.
 */
export const MAIN_ROOT = findPackageRoot(__dirname);

function findPackageRoot(from: string): string {
    for (let dir = from; dir !== path.dirname(dir); dir = path.dirname(dir)) {
        const pkg = path.join(dir, "package.json");
        if (existsSync(pkg) && JSON.parse(readFileSync(pkg, "utf8")).name === "pulumi-qemu") return dir;
    }
    throw new Error(`cannot find pulumi-qemu's package.json above ${from}`);
}
