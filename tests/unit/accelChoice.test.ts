import { applyRequest, cpuVirtualizationFlag, decideAutoAccel, kvmObstacle } from "../../provider/core/accelChoice";

const cpuinfo = (flags: string) =>
    `processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) vmx-like model\nflags\t\t: ${flags}\nbugs\t\t: spectre_v1\n\n`;

describe("cpuVirtualizationFlag", () => {
    test("finds vmx and svm in the flags line", () => {
        expect(cpuVirtualizationFlag(cpuinfo("fpu vme de pse vmx sse2"))).toBe("vmx");
        expect(cpuVirtualizationFlag(cpuinfo("fpu svm sse2"))).toBe("svm");
    });
    test("ignores the words outside flags lines and partial matches", () => {
        expect(cpuVirtualizationFlag(cpuinfo("fpu vme de pse sse2 vmxx hypervisor"))).toBeUndefined();
        expect(cpuVirtualizationFlag("")).toBeUndefined();
    });
});

describe("decideAutoAccel", () => {
    test("a device that cannot be opened decides tcg, before any probe", () => {
        const d = decideAutoAccel({ deviceProblem: "/dev/kvm does not exist", cpuFlag: "vmx" });
        expect(d).toEqual({ kind: "use", verdict: { accel: "tcg", reason: "KVM unusable: /dev/kvm does not exist" } });
    });
    test("missing CPU flags decide tcg and name the module that provides /dev/kvm", () => {
        const d = decideAutoAccel({ kvmModules: ["kvm_pvm"] });
        expect(d.kind).toBe("use");
        if (d.kind !== "use") return;
        expect(d.verdict.accel).toBe("tcg");
        expect(d.verdict.reason).toMatch(/neither vmx nor svm/);
        expect(d.verdict.reason).toMatch(/kvm_pvm/);
    });
    test("device and flags present ask for a probe", () => {
        expect(decideAutoAccel({ cpuFlag: "svm" })).toEqual({ kind: "probe" });
    });
    test("the probe decides", () => {
        const ok = decideAutoAccel({ cpuFlag: "vmx", probe: { booted: true, timeoutMs: 2000 } });
        expect(ok).toMatchObject({ kind: "use", verdict: { accel: "kvm" } });
        const bad = decideAutoAccel({ cpuFlag: "vmx", probe: { booted: false, timeoutMs: 2000 } });
        expect(bad).toMatchObject({ kind: "use", verdict: { accel: "tcg" } });
        if (bad.kind === "use") expect(bad.verdict.reason).toMatch(/probe boot .* 2000 ms/);
    });
    test("kvmObstacle is silent only when a probe should run", () => {
        expect(kvmObstacle({ cpuFlag: "vmx" })).toBeUndefined();
        expect(kvmObstacle({})).toMatch(/vmx/);
    });
});

describe("applyRequest", () => {
    const works = { accel: "kvm" as const, reason: "KVM works" };
    const broken = {
        accel: "tcg" as const,
        reason: "KVM unusable: the CPU flags in /proc/cpuinfo show neither vmx nor svm",
    };
    test("auto follows the verdict", () => {
        expect(applyRequest("auto", works)).toEqual({ kind: "use", verdict: works });
        expect(applyRequest("auto", broken)).toEqual({ kind: "use", verdict: broken });
    });
    test("tcg is always granted", () => {
        expect(applyRequest("tcg", works)).toMatchObject({ kind: "use", verdict: { accel: "tcg" } });
    });
    test("kvm is granted where it works and refused with the reason and the alternatives where not", () => {
        expect(applyRequest("kvm", works)).toMatchObject({ kind: "use", verdict: { accel: "kvm" } });
        const r = applyRequest("kvm", broken);
        expect(r.kind).toBe("refuse");
        if (r.kind !== "refuse") return;
        expect(r.message).toMatch(/neither vmx nor svm/);
        expect(r.message).toMatch(/"tcg"/);
        expect(r.message).toMatch(/"auto"/);
    });
});
