import * as pulumi from "@pulumi/pulumi";
import { Host } from "../../sdk/host";
import { DiskImage, VirtualMachine } from "../../sdk/resources";

/**
 * A Host places the dynamic resources below it as a provider object would (sdk/host.ts): its
 * children and its children's children (inside a component of the user's) get its host as their
 * `host` input; a resource's own `host` wins; resources elsewhere stay on this machine. And the
 * customTimeouts of a resource reach its provider (sdk/resources.ts → the shim). Under Pulumi's
 * mocks: what the engine would be sent is what the mock sees.
 */

const sent = new Map<string, Record<string, unknown>>();

beforeAll(() => {
    pulumi.runtime.setMocks(
        {
            newResource: (a) => {
                sent.set(a.name, a.inputs);
                return { id: `${a.name}-id`, state: a.inputs };
            },
            call: (a) => a.inputs,
        },
        "proj",
        "stack",
        false,
    );
});

const settle = () => new Promise((r) => setTimeout(r, 200));
const blank = { source: { kind: "blank" as const, size: "1G", format: "qcow2" as const } };

test("children of a Host, at any depth, get its host; an own host wins; others none", async () => {
    const lab = new Host("lab", { url: "ssh://lab@lab-2.example.com:22", identityFile: "/home/me/.ssh/lab2" });
    new DiskImage("child", blank, { parent: lab });
    const group = new pulumi.ComponentResource("my:index:Group", "group", {}, { parent: lab });
    new VirtualMachine("grandchild", { vm: { kernel: "/boot/vmlinuz" } }, { parent: group });
    new DiskImage("own", { ...blank, host: "ssh://lab@lab-3.example.com" }, { parent: lab });
    new DiskImage("here", blank);
    await settle();
    const placement = { url: "ssh://lab@lab-2.example.com:22", identityFile: "/home/me/.ssh/lab2" };
    expect(sent.get("child")!.host).toEqual(placement);
    expect(sent.get("grandchild")!.host).toEqual(placement);
    expect(sent.get("own")!.host).toBe("ssh://lab@lab-3.example.com");
    expect(sent.get("here")!.host).toBeUndefined();
});

test("a Host without a url is refused naming it", () => {
    expect(() => new Host("bad", { url: "" })).toThrow(/Host "bad": url must be an ssh:\/\/ URL/);
});

test("customTimeouts reach the provider in seconds; a malformed one is refused naming the field", async () => {
    new DiskImage("timed", blank, { customTimeouts: { create: "2m", delete: "90s" } });
    await settle();
    expect(sent.get("timed")!.__timeouts).toEqual({ create: 120, delete: 90 });
    expect(() => new DiskImage("badly-timed", blank, { customTimeouts: { update: "soon" } })).toThrow(
        /customTimeouts\.update must be a duration/,
    );
});
