import { mkdir, readdir, readFile, symlink, writeFile, copyFile } from "node:fs/promises";
import * as path from "node:path";
import type { ProjectOptions } from "./miniEngine";
import { MAIN_ROOT } from "./paths";

/**
 * Makes a runnable copy of a TypeScript Pulumi program in `workDir`: each .ts transpiled to
 * CommonJS beside it, package.json's main pointed at the JS, and node_modules linking
 * `pulumi-qemu` to this checkout and `@pulumi/pulumi` to its copy. Both links resolve to the same
 * real files, so the program and pulumi-qemu share one @pulumi/pulumi, as npm would dedupe them.
 * (`cmd/run` only compiles TypeScript through ts-node, which is not installed here.)
 */
export async function prepareProgram(sourceDir: string, workDir: string): Promise<string> {
    const ts = require("typescript") as typeof import("typescript");
    await mkdir(workDir, { recursive: true });
    for (const name of await readdir(sourceDir)) {
        const from = path.join(sourceDir, name);
        if (name.endsWith(".ts") && !name.endsWith(".d.ts")) {
            const out = ts.transpileModule(await readFile(from, "utf8"), {
                fileName: name,
                reportDiagnostics: true,
                compilerOptions: {
                    module: ts.ModuleKind.CommonJS,
                    target: ts.ScriptTarget.ES2022,
                    esModuleInterop: true,
                    sourceMap: false,
                },
            });
            const errors = (out.diagnostics ?? []).filter((d) => d.category === ts.DiagnosticCategory.Error);
            if (errors.length)
                throw new Error(
                    `${from}: ${errors.map((d) => ts.flattenDiagnosticMessageText(d.messageText, "\n")).join("; ")}`,
                );
            await writeFile(path.join(workDir, name.replace(/\.ts$/, ".js")), out.outputText);
        } else if (name === "package.json") {
            const pkg = JSON.parse(await readFile(from, "utf8"));
            pkg.main = typeof pkg.main === "string" ? pkg.main.replace(/\.ts$/, ".js") : "index.js";
            await writeFile(path.join(workDir, name), JSON.stringify(pkg, null, 2));
        } else if (name === "Pulumi.yaml" || name.endsWith(".json")) {
            await copyFile(from, path.join(workDir, name));
        }
    }
    await linkPackages(workDir);
    return workDir;
}

/** A one-file Node.js Pulumi program in `dir` (made here), project `project`, with its packages linked. */
export async function writeProgram(dir: string, project: string, indexJs: string): Promise<void> {
    await mkdir(dir);
    await writeFile(path.join(dir, "Pulumi.yaml"), `name: ${project}\nruntime: nodejs\n`);
    await writeFile(path.join(dir, "package.json"), JSON.stringify({ name: project, main: "index.js" }));
    await writeFile(path.join(dir, "index.js"), indexJs);
    await linkPackages(dir);
}

/** node_modules with pulumi-qemu and @pulumi/pulumi, so serialized providers' requires resolve from `dir`. */
export async function linkPackages(dir: string): Promise<void> {
    await mkdir(path.join(dir, "node_modules", "@pulumi"), { recursive: true });
    await symlink(MAIN_ROOT, path.join(dir, "node_modules", "pulumi-qemu"), "dir");
    await symlink(
        path.join(MAIN_ROOT, "node_modules", "@pulumi", "pulumi"),
        path.join(dir, "node_modules", "@pulumi", "pulumi"),
        "dir",
    );
}

/**
 * examples/fleet made ready in `work` as a user's project: the program, a shared folder with
 * hello.txt (the VMs' 9p share), state under `work`, the provider's state in `work/qs`.
 */
export async function fleetProject(
    work: string,
    stack: string,
): Promise<{ opts: ProjectOptions; shared: string; stateDir: string }> {
    const shared = path.join(work, "shared");
    await mkdir(shared);
    await writeFile(path.join(shared, "hello.txt"), "hello\n");
    const dir = await prepareProgram(path.join(MAIN_ROOT, "examples", "fleet"), path.join(work, "program"));
    const stateDir = path.join(work, "qs");
    const opts = {
        dir,
        project: "qemu-fleet",
        stack,
        statePath: path.join(work, "state.json"),
        env: { PULUMI_QEMU_STATE_DIR: stateDir },
    };
    return { opts, shared, stateDir };
}
