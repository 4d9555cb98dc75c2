import * as path from "node:path";
import * as ts from "typescript";

/**
 * tests/compile/sdkInputs.ts compiles against the SDK: union-typed inputs take Outputs of their
 * union (the SDK's own outputs included), and its `@ts-expect-error` lines — inputs that must be
 * refused — are still errors (TypeScript reports an unused one). `tsc --noEmit` checks the same
 * file; this makes the test suite fail too. tests/compile/outputsAgree.ts rides along: every
 * declared output is a field its lifecycle writes.
 */

const ROOT = path.join(__dirname, "..", "..");

test("the SDK's input snippets compile, and the wrong ones are refused", () => {
    const config = ts.getParsedCommandLineOfConfigFile(
        path.join(ROOT, "tsconfig.json"),
        {},
        {
            ...ts.sys,
            onUnRecoverableConfigFileDiagnostic: (d) => {
                throw new Error(ts.flattenDiagnosticMessageText(d.messageText, "\n"));
            },
        },
    )!;
    const program = ts.createProgram(
        [path.join(ROOT, "tests", "compile", "sdkInputs.ts"), path.join(ROOT, "tests", "compile", "outputsAgree.ts")],
        {
            ...config.options,
            noEmit: true,
        },
    );
    const problems = ts.getPreEmitDiagnostics(program).map((d) => {
        const where = d.file
            ? `${path.relative(ROOT, d.file.fileName)}:${d.file.getLineAndCharacterOfPosition(d.start ?? 0).line + 1}`
            : "";
        return `${where} ${ts.flattenDiagnosticMessageText(d.messageText, " ")}`;
    });
    expect(problems).toEqual([]);
});
