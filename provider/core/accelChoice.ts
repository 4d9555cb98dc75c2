/**
 * Choosing between KVM and TCG from facts about the host. A /dev/kvm node is not enough: nested
 * hosts such as kvm_pvm expose one, QEMU starts on it, and guests then crawl or hang. So KVM is
 * chosen only when the user can open the device, the CPU advertises hardware virtualization,
 * and a probe boot finished in time. The host adapter gathers the facts; this decides.
 */

export type RequestedAccel = "auto" | "kvm" | "tcg";
export type ResolvedAccel = "kvm" | "tcg";

export interface AccelVerdict {
    accel: ResolvedAccel;
    reason: string;
}

export interface KvmFacts {
    /** Why /dev/kvm cannot be opened read-write by this user; undefined when it can. */
    deviceProblem?: string;
    /** The hardware virtualization flag /proc/cpuinfo shows, if any. */
    cpuFlag?: "vmx" | "svm";
    /** Loaded KVM modules (kvm_intel, kvm_amd, kvm_pvm, ...), to explain a verdict. */
    kvmModules?: readonly string[];
    /** Result of the probe boot under KVM, once it has run. */
    probe?: { booted: boolean; timeoutMs: number };
}

export type AccelDecision =
    { kind: "use"; verdict: AccelVerdict } | { kind: "refuse"; message: string } | { kind: "probe" };

/** The hardware virtualization flag in /proc/cpuinfo text, read from its "flags" lines only. */
export function cpuVirtualizationFlag(cpuinfo: string): "vmx" | "svm" | undefined {
    for (const line of cpuinfo.split("\n")) {
        const m = /^flags\s*:(.*)$/.exec(line);
        if (!m) continue;
        const flags = m[1].trim().split(/\s+/);
        if (flags.includes("vmx")) return "vmx";
        if (flags.includes("svm")) return "svm";
    }
    return undefined;
}

/** Why KVM cannot be used without even trying it, or undefined when a probe boot should decide. */
export function kvmObstacle(facts: KvmFacts): string | undefined {
    if (facts.deviceProblem) return facts.deviceProblem;
    if (!facts.cpuFlag) {
        const via = facts.kvmModules?.length ? `; /dev/kvm is provided by ${facts.kvmModules.join(", ")}` : "";
        return `the CPU flags in /proc/cpuinfo show neither vmx nor svm, so there is no hardware virtualization${via}`;
    }
    return undefined;
}

/** Whether KVM is usable here, from the facts known so far; asks for a probe when only one can tell. */
export function decideAutoAccel(facts: KvmFacts): { kind: "use"; verdict: AccelVerdict } | { kind: "probe" } {
    const obstacle = kvmObstacle(facts);
    if (obstacle) return { kind: "use", verdict: { accel: "tcg", reason: `KVM unusable: ${obstacle}` } };
    if (!facts.probe) return { kind: "probe" };
    if (!facts.probe.booted) {
        return {
            kind: "use",
            verdict: {
                accel: "tcg",
                reason: `KVM unusable: a probe boot under KVM did not finish within ${facts.probe.timeoutMs} ms although /dev/kvm opens and the CPU shows ${facts.cpuFlag}`,
            },
        };
    }
    return {
        kind: "use",
        verdict: {
            accel: "kvm",
            reason: `KVM works: /dev/kvm opens, the CPU shows ${facts.cpuFlag}, and a probe boot finished`,
        },
    };
}

/** What to run for the requested accelerator, given the verdict on KVM for this host. */
export function applyRequest(requested: RequestedAccel, kvmVerdict: AccelVerdict): AccelDecision {
    if (requested === "auto") return { kind: "use", verdict: kvmVerdict };
    if (requested === "tcg") return { kind: "use", verdict: { accel: "tcg", reason: "accel tcg was requested" } };
    if (kvmVerdict.accel === "kvm")
        return { kind: "use", verdict: { accel: "kvm", reason: "accel kvm was requested; " + kvmVerdict.reason } };
    return {
        kind: "refuse",
        message: `accel "kvm" was requested but ${kvmVerdict.reason}; use accel "tcg" (or "auto", which falls back to tcg)`,
    };
}
