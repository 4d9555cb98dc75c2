import { execFileSync } from "node:child_process";
import { overlaySteps, renderLauncher, shellQuote } from "../../provider/core/launcher";

/** Runs a launcher whose "QEMU" is printf, so sh's word splitting of our quoting can be read back. */
function roundTrip(args: string[]): string[] {
    const script = renderLauncher(["printf", "%s\\0", ...args]);
    const out = execFileSync("/bin/sh", ["-c", script, "launcher"], { encoding: "buffer" });
    const words = out.toString("utf8").split("\0");
    words.pop();
    return words;
}

/** A deterministic generator so a failure can be reproduced from its seed. */
function* strings(seed: number, count: number): Generator<string> {
    const alphabet = [
        "a",
        "Z",
        "0",
        " ",
        "\t",
        "'",
        '"',
        "$",
        "`",
        "\\",
        "!",
        "*",
        "?",
        "[",
        "]",
        "{",
        "}",
        "~",
        "#",
        "&",
        ";",
        "|",
        "<",
        ">",
        "(",
        ")",
        ",",
        "=",
        "%",
        "é",
        "→",
        "$(id)",
        "${HOME}",
        "'\\''",
    ];
    let x = seed;
    const next = () => (x = (x * 1103515245 + 12345) & 0x7fffffff);
    for (let i = 0; i < count; i++) {
        const len = next() % 12;
        let s = "";
        for (let j = 0; j < len; j++) s += alphabet[next() % alphabet.length];
        yield s;
    }
}

describe("renderLauncher", () => {
    test("every generated string comes out of a real /bin/sh exactly as it went in", () => {
        const args = [...strings(42, 400), "", "-", "--", "-m", "a\nb"];
        expect(roundTrip(args)).toEqual(args);
    });

    test("passes the launcher's own arguments on to QEMU", () => {
        const script = renderLauncher(["printf", "%s|"]);
        const out = execFileSync("/bin/sh", ["-c", script, "launcher", "-S", "two words"]).toString();
        expect(out).toBe("-S|two words|");
    });

    test("is a #!/bin/sh script that execs", () => {
        const text = renderLauncher(["qemu-system-x86_64", "-m", "256"]);
        expect(text.startsWith("#!/bin/sh\n")).toBe(true);
        expect(text).toMatch(/^exec qemu-system-x86_64 \\\n {4}-m \\\n {4}256 "\$@"$/m);
    });

    test("refuses NUL and an empty argv", () => {
        expect(() => shellQuote("a\0b")).toThrow(/NUL/);
        expect(() => renderLauncher([])).toThrow(/QEMU binary/);
    });

    test("creates each overlay only when it is missing", () => {
        const steps = overlaySteps({
            qemuImg: "qemu-img",
            volatile: false,
            disks: [
                { path: "/img/base raw", format: "raw", overlay: "/state/o'v.qcow2" },
                { path: "/img/data.qcow2", format: "qcow2" },
            ],
        });
        expect(steps).toEqual([
            { base: "/img/base raw", baseFormat: "raw", overlay: "/state/o'v.qcow2", qemuImg: "qemu-img" },
        ]);
        const text = renderLauncher(["true"], { overlays: steps });
        expect(text).toContain(`[ -e '/state/o'\\''v.qcow2' ] || qemu-img \\\n    create`);
        expect(
            overlaySteps({
                qemuImg: "qemu-img",
                volatile: true,
                disks: [{ path: "/a", format: "raw", overlay: "/b" }],
            }),
        ).toEqual([]);
    });
});
