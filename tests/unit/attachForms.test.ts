import * as pulumi from "@pulumi/pulumi";
import { VirtualMachine } from "../../sdk/resources";
import { attach } from "../../sdk/testing";

/**
 * What attach() takes (sdk/machineTarget.ts): the VM's outputs, one Automation API output, a
 * stack's outputs with a name, or the VirtualMachine resource inside a program (under Pulumi's
 * mocks here: no engine, the resource's outputs are what the mock returns).
 */

const outputs = {
    qmpSocket: "/tmp/pq-attach/qmp.sock",
    serialLog: "/tmp/pq-attach/serial.log",
    agent: "shell" as const,
    agentSocket: "/tmp/pq-attach/agent.sock",
    pid: 4242,
};

test("plain outputs, one { value, secret } output, and a stack's outputs with the output's name", () => {
    for (const m of [
        attach(outputs),
        attach({ value: outputs, secret: false }),
        attach({ web: { value: outputs, secret: false }, other: { value: 1, secret: false } }, "web"),
    ]) {
        expect(typeof m.execute).toBe("function");
        m.close();
    }
});

test("a missing output name or a value that is no VM's outputs is refused saying what to pass", () => {
    expect(() => attach({ web: { value: outputs, secret: false } }, "db")).toThrow(
        /the stack has no output "db" \(it has "web"\)/,
    );
    expect(() => attach({ value: 42 } as never)).toThrow(/pass a VirtualMachine's outputs/);
    expect(() => attach({ value: { serialLog: "/x" } })).toThrow(/qmpSocket is missing/);
});

describe("the VirtualMachine resource in a program", () => {
    const mocks = {
        newResource: (a: pulumi.runtime.MockResourceArgs) => ({
            id: `${a.name}-id`,
            state: { ...a.inputs, ...outputs },
        }),
        call: (a: pulumi.runtime.MockCallArgs) => a.inputs,
    };

    test("during up: a promise of the machine, from the resource's outputs", async () => {
        pulumi.runtime.setMocks(mocks, "proj", "stack", false);
        const vm = new VirtualMachine("web", { vm: { kernel: "/boot/vmlinuz", agent: "shell" } });
        const m = await attach(vm);
        expect(typeof m.succeed).toBe("function");
        m.close();
    });

    test("during a preview: refused, since the VM does not exist yet", async () => {
        pulumi.runtime.setMocks(mocks, "proj", "stack", true);
        const vm = new VirtualMachine("web2", { vm: { kernel: "/boot/vmlinuz" } });
        await expect(attach(vm)).rejects.toThrow(/only during `pulumi up`/);
    });
});
