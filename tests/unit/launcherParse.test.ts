import { renderLauncher } from "../../provider/core/launcher";
import { launcherArgv } from "../../provider/core/launcher";

/** A launcher's argv read back from its text is the argv it was written from, quoting and all. */

test.each([
    [["qemu-system-x86_64", "-accel", "tcg", "-m", "256"]],
    [
        [
            "/usr/bin/qemu",
            "-append",
            "console=ttyS0 root=/dev/vda quiet",
            "-name",
            "it's mine",
            "-drive",
            "file=/a b/c.qcow2,format=qcow2",
        ],
    ],
    [["qemu", "", "''", "a'b'c", "$HOME", "back\\slash"]],
])("round trip of %j", (argv) => {
    expect(launcherArgv(renderLauncher(argv))).toEqual(argv);
    expect(
        launcherArgv(
            renderLauncher(argv, {
                overlays: [{ base: "/b.raw", baseFormat: "raw", overlay: "/o 1.qcow2", qemuImg: "qemu-img" }],
            }),
        ),
    ).toEqual(argv);
});

test("text without our exec line reads as nothing", () => {
    expect(launcherArgv("#!/bin/sh\necho hi\n")).toBeUndefined();
    expect(launcherArgv("#!/bin/sh\nexec qemu 'unterminated\n")).toBeUndefined();
    expect(launcherArgv("#!/bin/sh\nexec qemu -m 256\n")).toBeUndefined();
});
