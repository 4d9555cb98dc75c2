import { existsSync, readFileSync, writeFileSync } from "node:fs";
import * as path from "node:path";
import { generatedFiles } from "./files";

/**
 * `npm run generate`: writes the files derived from the zod specs (the SDK's types, the
 * configuration reference). `--check` writes nothing and fails, naming each stale file, when one
 * differs from what would be written (CI; tests/unit/generatedFiles.test.ts does the same).
 */

const root = packageRoot(__dirname) ?? packageRoot(process.cwd());
if (!root) throw new Error(`no pulumi-qemu package.json above ${__dirname} or ${process.cwd()}`);
const check = process.argv.includes("--check");
let stale = 0;
for (const [rel, text] of Object.entries(generatedFiles())) {
    const file = path.join(root, rel);
    let old: string | undefined;
    try {
        old = readFileSync(file, "utf8");
    } catch {
        old = undefined;
    }
    if (old === text) continue;
    if (check) {
        console.error(`${rel} is stale: run npm run generate`);
        stale++;
    } else {
        writeFileSync(file, text);
        console.log(`wrote ${rel}`);
    }
}
process.exit(stale ? 1 : 0);

/** The checkout's root, whether this runs from scripts/ or compiled from bin/scripts/. */
function packageRoot(from: string): string | undefined {
    for (let dir = from; dir !== path.dirname(dir); dir = path.dirname(dir)) {
        const pkg = path.join(dir, "package.json");
        if (existsSync(pkg) && JSON.parse(readFileSync(pkg, "utf8")).name === "pulumi-qemu") return dir;
    }
    return undefined;
}
