import * as diskImage from "../../provider/resources/diskImage";
import * as guestCommand from "../../provider/resources/guestCommand";
import * as network from "../../provider/resources/network";
import * as runScript from "../../provider/resources/runScript";
import { StateError } from "../../provider/resources/stateGuard";
import * as vm from "../../provider/resources/virtualMachine";

/**
 * Lifecycle calls given empty or partial state — what a damaged state file or `pulumi import`
 * (Read with an id alone) hands the provider — fail with an error that says what is missing and
 * what to do, never with a TypeError from deep inside.
 */

const damaged: [string, unknown][] = [
    ["empty", {}],
    ["partial", { path: "/nowhere/x.qcow2", vmDir: "/nowhere", pid: "12" }],
    ["undefined", undefined],
    ["null", null],
];

const imageNews = { source: { kind: "blank", size: "1M", format: "raw" }, stateDir: "/nonexistent/state" };
const scriptNews = { vm: { kernel: "/boot/vmlinuz" } };
const vmNews = { vm: { kernel: "/boot/vmlinuz" } };
const commandNews = { vm: "vm-nowhere", stateDir: "/nonexistent/state", create: "true" };

const calls: [string, (props: any) => Promise<unknown>][] = [
    ["DiskImage read", (p) => diskImage.read("id", p)],
    ["DiskImage diff", (p) => diskImage.diff("id", p, imageNews)],
    ["DiskImage delete", (p) => diskImage.remove("id", p)],
    ["RunScript read", (p) => runScript.read("id", p)],
    ["RunScript diff", (p) => runScript.diff("id", p, scriptNews)],
    ["RunScript update", (p) => runScript.update("id", p, scriptNews)],
    ["RunScript delete", (p) => runScript.remove("id", p)],
    ["Network read", (p) => network.read("id", p)],
    ["Network delete", (p) => network.remove("id", p)],
    ["VirtualMachine read", (p) => vm.read("id", p)],
    ["VirtualMachine diff", (p) => vm.diff("id", p, vmNews)],
    ["VirtualMachine update", (p) => vm.update("id", p, vmNews)],
    ["VirtualMachine delete", (p) => vm.remove("id", p)],
    ["GuestCommand read", (p) => guestCommand.read("id", p)],
    ["GuestCommand update", (p) => guestCommand.update("id", p, commandNews)],
    ["GuestCommand delete", (p) => guestCommand.remove("id", p)],
];

describe.each(calls)("%s", (name, call) => {
    test.each(damaged)("with %s state: a clear error, nothing touched", async (_kind, props) => {
        let caught: unknown;
        try {
            await call(props);
        } catch (err) {
            caught = err;
        }
        expect(caught).toBeInstanceOf(StateError);
        const message = (caught as Error).message;
        const [resource, operation] = name.split(" ");
        if (operation === "read" && _kind !== "partial") {
            // Read with no state is an import: refused as one, saying what can be adopted.
            const byPath = {
                DiskImage: "the image file's absolute path",
                RunScript: "the launcher's absolute path",
                VirtualMachine: "its id, like vm-AbC123",
            }[resource];
            expect(message).toMatch(
                byPath
                    ? new RegExp(`^import of ${resource} "id": the id of a ${resource} is ${byPath}`)
                    : new RegExp(`^import of a ${resource}: pulumi-qemu cannot adopt an existing ${resource}`),
            );
            expect(message).toMatch(/Nothing was touched/);
            return;
        }
        expect(message).toMatch(new RegExp(`^${operation} of this ${resource}: its state (is empty|lacks )`));
        expect(message).toMatch(
            /Nothing was touched. Remove the resource from the stack's state \(`pulumi state delete URN`\)/,
        );
    });
});

test("a GuestCommand given its VM by id needs what the id resolved to (vmTarget) in its state", async () => {
    const props = { vm: "vm-abc123", create: "true", exitCode: 0, vmIdentity: "x", stdout: "", stderr: "" };
    for (const call of [
        () => guestCommand.read("id", props),
        () => guestCommand.remove("id", props),
        () => guestCommand.update("id", props, commandNews),
    ]) {
        const err = await call().catch((e) => e);
        expect(err).toBeInstanceOf(StateError);
        expect((err as Error).message).toMatch(/of this GuestCommand: its state lacks vmTarget,/);
    }
});
