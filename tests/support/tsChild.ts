import execa from "execa";
import { MAIN_ROOT } from "../engine/paths";

/**
 * Runs `body` (CommonJS JavaScript that may `require` the project's .ts modules by path) in a
 * child node process killed after `timeoutMs`. For code that may block the event loop for good —
 * a backtracking regex — which a test in the same process could never time out.
 */
export async function runInChild(
    body: string,
    timeoutMs: number,
): Promise<{ stdout: string; timedOut: boolean; stderr: string; exitCode?: number }> {
    const r = await execa(process.execPath, childArgs(body), {
        cwd: ROOT,
        reject: false,
        timeout: timeoutMs,
        killSignal: "SIGKILL",
    });
    return { stdout: r.stdout, stderr: r.stderr, timedOut: r.timedOut, exitCode: r.exitCode };
}

const ROOT = MAIN_ROOT;

/** Starts `body` in a child node process and hands it back running (the caller must end it). */
export function startInChild(body: string): execa.ExecaChildProcess {
    return execa(process.execPath, childArgs(body), { cwd: ROOT, reject: false });
}

function childArgs(body: string): string[] {
    const hook = `
const ts = require(${JSON.stringify(require.resolve("typescript"))});
const fs = require("fs");
require.extensions[".ts"] = (m, file) => m._compile(ts.transpileModule(fs.readFileSync(file, "utf8"), { compilerOptions: { module: ts.ModuleKind.CommonJS, target: ts.ScriptTarget.ES2022, esModuleInterop: true } }).outputText, file);
`;
    return ["-e", hook + body];
}
