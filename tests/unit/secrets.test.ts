import { isSecret, makeSecret, protectOutputs, secretTexts, stripSecrets } from "../../provider/plugin/secrets";

describe("secrets through our plugin", () => {
    const inputs = {
        path: makeSecret("/srv/secret.sh"),
        vm: { name: makeSecret("hidden"), memoryMiB: 256, disks: [{ path: "/img/a" }] },
    };

    test("inputs are unwrapped for the lifecycle code", () => {
        expect(stripSecrets(inputs)).toEqual({
            path: "/srv/secret.sh",
            vm: { name: "hidden", memoryMiB: 256, disks: [{ path: "/img/a" }] },
        });
        expect([...secretTexts(inputs)].sort()).toEqual(["/srv/secret.sh", "hidden"]);
    });

    test("outputs mirroring an input are marked where the secret was; outputs holding its text as a whole", () => {
        const outs = protectOutputs(
            {
                path: "/srv/secret.sh",
                vm: { name: "hidden", memoryMiB: 256, disks: [{ path: "/img/a" }] },
                argv: ["qemu", "-name", "hidden"],
                argvHash: "ab12",
            },
            inputs,
        );
        expect(isSecret(outs.path)).toBe(true);
        const vm = outs.vm as Record<string, unknown>;
        expect(isSecret(vm.name)).toBe(true);
        expect(vm.memoryMiB).toBe(256);
        expect(vm.disks).toEqual([{ path: "/img/a" }]);
        expect(outs.argv).toEqual(makeSecret(["qemu", "-name", "hidden"]));
        expect(outs.argvHash).toBe("ab12");
    });

    test("no secret in, nothing marked", () => {
        const outs = { path: "/a", argv: ["x"] };
        expect(protectOutputs(outs, { path: "/a" })).toBe(outs);
    });
});
