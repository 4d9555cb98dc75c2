import execa from "execa";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { mkdir, mkdtemp, readdir, rename, rm, symlink, writeFile } from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import { MAIN_ROOT } from "../engine/paths";

/**
 * The docs as a user reads them: from the packed package (`npm pack`, extracted), not from the
 * checkout. Every TypeScript block in README.md and docs/*.md is compiled against the packed
 * package as a user's project would import it; every shell block is run unless it says why not;
 * every relative link points at a file the package ships; and the README's Debian packages are
 * ones scripts/setup.sh installs (so CI has tested with them).
 *
 * Conventions for writers:
 * - A ```ts block is a whole file: it imports what it uses and declares what it needs. A block that
 *   is deliberately a piece of something starts with `// fragment: <why>` and is not compiled;
 *   at most MAX_FRAGMENTS of them in all the docs.
 * - A ```sh block is run by bash (set -euo pipefail, in an empty directory, 60 s) unless its first
 *   line is `# not run: <why>` — needs the pulumi CLI, the internet, root, or takes too long.
 * Needs a build (`npm run build`), like the package test.
 */

const MAX_FRAGMENTS = 3;
const FRAGMENT = /^\/\/ fragment: \S/;
const NOT_RUN = /^# not run: \S/;
interface Block {
    /** "README.md:42": the file in the package and the line of the opening fence. */
    where: string;
    lang: string;
    text: string;
}

function blocksOf(rel: string, text: string): Block[] {
    const blocks: Block[] = [];
    const lines = text.split("\n");
    for (let i = 0; i < lines.length; i++) {
        const open = /^```(\w*)\s*$/.exec(lines[i]);
        if (!open) continue;
        const start = i;
        const body: string[] = [];
        for (i++; i < lines.length && !/^```\s*$/.test(lines[i]); i++) body.push(lines[i]);
        blocks.push({ where: `${rel}:${start + 1}`, lang: open[1], text: body.join("\n") + "\n" });
    }
    return blocks;
}

let dir: string;
let pkgRoot: string;
let markdown: { rel: string; text: string }[];
let shipped: Set<string>;

beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), "pulumi-qemu-docs-"));
    const r = await execa("npm", ["pack", "--json", "--ignore-scripts", "--pack-destination", dir], { cwd: MAIN_ROOT });
    const [{ filename, files }] = JSON.parse(r.stdout) as { filename: string; files: { path: string }[] }[];
    shipped = new Set(files.map((f) => f.path));
    // A user's project: the package under node_modules/pulumi-qemu, its dependencies beside it.
    const project = path.join(dir, "project");
    const modules = path.join(project, "node_modules");
    await mkdir(modules, { recursive: true });
    await execa("tar", ["-xzf", path.join(dir, filename), "-C", dir]);
    pkgRoot = path.join(modules, "pulumi-qemu");
    await rename(path.join(dir, "package"), pkgRoot);
    for (const name of await readdir(path.join(MAIN_ROOT, "node_modules"))) {
        if (name === "pulumi-qemu" || name.startsWith(".")) continue;
        await symlink(path.join(MAIN_ROOT, "node_modules", name), path.join(modules, name));
    }
    const docs = existsSync(path.join(pkgRoot, "docs"))
        ? readdirSync(path.join(pkgRoot, "docs")).filter((f) => f.endsWith(".md"))
        : [];
    markdown = ["README.md", ...docs.map((f) => `docs/${f}`)].map((rel) => ({
        rel,
        text: readFileSync(path.join(pkgRoot, rel), "utf8"),
    }));
}, 120_000);

afterAll(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
});

test("the package ships the README and every guide in docs/", () => {
    const inCheckout = readdirSync(path.join(MAIN_ROOT, "docs")).filter((f) => f.endsWith(".md"));
    expect(inCheckout.length).toBeGreaterThan(5);
    expect(markdown.map((m) => m.rel).sort()).toEqual(["README.md", ...inCheckout.map((f) => `docs/${f}`)].sort());
});

test("every TypeScript block in README.md and docs/*.md compiles against the packed package", async () => {
    const blocks = markdown
        .flatMap((m) => blocksOf(m.rel, m.text))
        .filter((b) => b.lang === "ts" || b.lang === "typescript");
    const fragments = blocks.filter((b) => FRAGMENT.test(b.text));
    expect(fragments.length).toBeLessThanOrEqual(MAX_FRAGMENTS);
    const compiled = blocks.filter((b) => !FRAGMENT.test(b.text));
    expect(compiled.length).toBeGreaterThan(8);
    const project = path.dirname(path.dirname(pkgRoot));
    const src = path.join(project, "src");
    await mkdir(src);
    const fileOf = new Map<string, Block>();
    for (const b of compiled) {
        const file = `${b.where.replace(/[^A-Za-z0-9]+/g, "_")}.ts`;
        fileOf.set(file, b);
        // Each block is its own module, as each is its own program's file.
        await writeFile(
            path.join(src, file),
            b.text.includes("export ") || b.text.includes("import ") ? b.text : `${b.text}\nexport {};\n`,
        );
    }
    const tsconfig = {
        compilerOptions: {
            target: "ES2022",
            module: "nodenext",
            moduleResolution: "nodenext",
            strict: true,
            noEmit: true,
            skipLibCheck: true,
            types: ["node", "jest"],
            esModuleInterop: true,
        },
        include: ["src/*.ts"],
    };
    await writeFile(path.join(project, "tsconfig.json"), JSON.stringify(tsconfig));
    const tsc = path.join(MAIN_ROOT, "node_modules", "typescript", "bin", "tsc");
    const r = await execa(process.execPath, [tsc, "-p", project, "--pretty", "false"], { cwd: project, reject: false });
    // Errors named by the doc and line they come from: src/README_md_42.ts(3,5) → README.md:42 +3.
    const errors = (r.stdout + r.stderr)
        .split("\n")
        .filter((l) => l.trim())
        .map((l) =>
            l.replace(
                /^src\/([^(]+)\((\d+),(\d+)\)/,
                (_m, f: string, line: string) => `${fileOf.get(f)?.where ?? f} (line ${line} of the block)`,
            ),
        );
    expect(errors).toEqual([]);
    expect(r.exitCode).toBe(0);
}, 120_000);

test("every shell block runs, or says why it cannot run here", async () => {
    const blocks = markdown
        .flatMap((m) => blocksOf(m.rel, m.text))
        .filter((b) => b.lang === "sh" || b.lang === "bash" || b.lang === "shell");
    const failures: string[] = [];
    let ran = 0;
    for (const b of blocks) {
        if (NOT_RUN.test(b.text)) continue;
        const cwd = await mkdtemp(path.join(dir, "sh-"));
        const r = await execa("bash", ["-euo", "pipefail", "-c", b.text], {
            cwd,
            reject: false,
            timeout: 60_000,
            env: { PATH: process.env.PATH ?? "/usr/bin:/bin", HOME: cwd },
        });
        ran++;
        if (r.exitCode !== 0)
            failures.push(
                `${b.where}: exit ${r.exitCode}${r.timedOut ? " (timed out)" : ""}: ${(r.stderr || r.stdout).slice(-400)}`,
            );
    }
    expect(failures).toEqual([]);
    expect(ran).toBeGreaterThan(0);
}, 300_000);

test("every relative link in the shipped docs points at a file the package ships", () => {
    const broken: string[] = [];
    for (const m of markdown) {
        for (const match of m.text.matchAll(/\]\(([^)\s]+)\)/g)) {
            const target = match[1].split("#")[0];
            if (!target || /^[a-z]+:/.test(target)) continue;
            const resolved = path.posix
                .normalize(path.posix.join(path.posix.dirname(m.rel), target))
                .replace(/\/$/, "");
            if (shipped.has(resolved)) continue;
            broken.push(`${m.rel}: ${match[1]}`);
        }
    }
    expect(broken).toEqual([]);
});

test("the README's Debian packages are ones scripts/setup.sh installs for CI", () => {
    const readme = markdown.find((m) => m.rel === "README.md")!.text;
    const install = /apt-get install -y --no-install-recommends ([^\n]+)/.exec(readme);
    expect(install).not.toBeNull();
    const setup = readFileSync(path.join(MAIN_ROOT, "scripts", "setup.sh"), "utf8");
    const ciPackages = new Set(
        [...setup.matchAll(/APT_PACKAGES\+?=\(([^)]*)\)/g)].flatMap((m) => m[1].trim().split(/\s+/)),
    );
    const named = install![1].trim().split(/\s+/);
    expect(named.filter((p) => !ciPackages.has(p))).toEqual([]);
    // The table of features names the same packages as the install line, but for what goes on
    // another machine (the far host's node, the guest's agent).
    const section = readme.slice(readme.indexOf("## What you need"), readme.indexOf("## Install"));
    const rows = section
        .split("\n")
        .filter((l) => l.startsWith("| ") && !l.startsWith("| feature") && !l.startsWith("|---"));
    const inTable = new Set(
        rows.flatMap((r) => [...(r.split("|")[2] ?? "").matchAll(/`([^`]+)`/g)].flatMap((m) => m[1].split(/\s+/))),
    );
    expect(rows.length).toBeGreaterThan(5);
    const elsewhere = new Set(["nodejs", "qemu-guest-agent"]);
    expect([...inTable].filter((p) => !elsewhere.has(p)).sort()).toEqual([...named].sort());
});

test("the README's fleet of cloud images is examples/cloud-fleet/index.ts, verbatim", () => {
    // CI runs the example (tests/protocol/cloudFleetExample.test.ts): this keeps the README's copy the tested one.
    const readme = markdown.find((m) => m.rel === "README.md")!.text;
    const section = readme.slice(readme.indexOf("## A fleet of cloud images"));
    const block = blocksOf("README.md", section).find((b) => b.lang === "ts");
    const example = readFileSync(path.join(MAIN_ROOT, "examples", "cloud-fleet", "index.ts"), "utf8");
    expect(block?.text).toBe(example);
});
